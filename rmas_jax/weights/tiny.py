"""Tiny random agents for fast tests and smoke runs: `tiny:<family>:<hidden>[:<seed>]` names a 2-layer model of a
family's architecture (norms, biases, rope, windows as that family has them) with random weights and a byte-level
tokenizer with a ChatML chat template, all built in memory, nothing downloaded."""

from __future__ import annotations

import functools

from flax import nnx

from rmas_jax.models.arch import ArchConfig, RopeSpec
from rmas_jax.models.qwen3_5 import Qwen3_5Config
from rmas_jax.models.transformer import CausalLM
from rmas_jax.sharding.placement import init_on_mesh
from rmas_jax.weights.build import new_model
from rmas_jax.weights.errors import ModelLoadError

PREFIX = "tiny:"
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
VOCAB = 320  # 256 bytes + the specials, rounded up
CHATML = (
  "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def is_tiny(spec: str) -> bool:
  return spec.startswith(PREFIX)


def tiny_qwen3_5(hidden: int) -> Qwen3_5Config:
  """A 2-layer Qwen3.5: one DeltaNet layer, then one gated attention layer."""
  return Qwen3_5Config(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_layers=2, num_heads=4,
                       num_kv_heads=2, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
                       linear_key_head_dim=16, linear_value_head_dim=16, layer_types=("linear_attention",
                       "full_attention"), max_position_embeddings=4096)  # fmt: skip


def tiny_arch(family: str, hidden: int) -> ArchConfig | Qwen3_5Config:
  """A 2-layer config of `family` at width `hidden` (a multiple of 16)."""
  if family == "qwen3_5":
    return tiny_qwen3_5(hidden)
  heads = 4
  base = dict(family=family, vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_layers=2,
              num_heads=heads, num_kv_heads=2, head_dim=hidden // heads, max_position_embeddings=4096)  # fmt: skip
  extra = {
    "llama": dict(rope_global=RopeSpec(theta=500_000.0), tie_embeddings=True),
    "qwen2": dict(qkv_bias=True, rope_global=RopeSpec(theta=1_000_000.0)),
    "qwen3": dict(qk_norm=True, rope_global=RopeSpec(theta=1_000_000.0), tie_embeddings=True),
    "mistral": dict(sliding_window=64, layer_types=("sliding_attention",) * 2),
    "gemma3": dict(norm_offset=True, sandwich_norms=True, activation="gelu_tanh", embed_scale=True, qk_norm=True,
                   tie_embeddings=True, sliding_window=32, layer_types=("sliding_attention", "full_attention"),
                   rope_local=RopeSpec(theta=10_000.0), rope_global=RopeSpec(theta=1_000_000.0)),  # fmt: skip
  }
  if family not in extra:
    raise ModelLoadError(f"tiny model family {family!r}: expected one of {sorted([*extra, 'qwen3_5'])}")
  return ArchConfig(**base, **extra[family])


def parse(spec: str) -> tuple[str, int, int]:
  """`tiny:<family>:<hidden>[:<seed>]` -> (family, hidden, seed)."""
  parts = spec[len(PREFIX) :].split(":")
  try:
    family, hidden, seed = parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else 0  # noqa: PLR2004
  except (IndexError, ValueError):
    raise ModelLoadError(f"{spec!r}: expected tiny:<family>:<hidden>[:<seed>], e.g. tiny:qwen2:64") from None
  if hidden < 16 or hidden % 16 or len(parts) > 3:  # noqa: PLR2004
    raise ModelLoadError(f"{spec!r}: hidden must be a positive multiple of 16 and at most a seed may follow")
  return family, hidden, seed


@functools.cache
def byte_tokenizer():
  """A byte-level tokenizer (every string round-trips) with ChatML specials and chat template."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
  core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  core.decoder = decoders.ByteLevel()
  tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=SPECIALS[0], eos_token=SPECIALS[2],
                                additional_special_tokens=[SPECIALS[1]])  # fmt: skip
  tok.chat_template = CHATML
  return tok


def load_tiny(spec: str, dtype="float32", scan_layers: bool = False) -> tuple[CausalLM, object]:
  """The random model and tokenizer a tiny spec names (the same weights for the same spec)."""
  family, hidden, seed = parse(spec)
  # Under a mesh the random weights are sent to their shards (same values), see `rmas_jax.sharding`.
  model = init_on_mesh(lambda: new_model(tiny_arch(family, hidden), dtype=dtype, scan_layers=scan_layers,
                                         rngs=nnx.Rngs(seed)))  # fmt: skip
  return model, byte_tokenizer()
