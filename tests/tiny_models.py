"""Tiny models, one per family: HF transformers ones saved with `save_pretrained` (the independent reference),
and ours with random weights."""

from __future__ import annotations

import jax
import numpy as np
import transformers
from flax import nnx

from rmas_jax.models.transformer import CausalLM
from rmas_jax.weights.hf_config import arch_from_hf

VOCAB = 128


def tiny_configs():
  """name -> (config class name, kwargs). Small, but every family switch is on and every window is hit."""
  common = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
  )
  return {
    "llama3": (
      "LlamaConfig",
      dict(
        common,
        rope_theta=500_000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        rope_scaling=dict(
          rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16
        ),
      ),
    ),
    "llama_tied_bias": (
      "LlamaConfig",
      dict(common, rope_theta=10_000.0, tie_word_embeddings=True, attention_bias=True, mlp_bias=True),
    ),
    "qwen2": ("Qwen2Config", dict(common, rope_theta=1_000_000.0, tie_word_embeddings=False)),
    "qwen3": ("Qwen3Config", dict(common, head_dim=24, rope_theta=1_000_000.0, tie_word_embeddings=True)),
    "mistral": ("MistralConfig", dict(common, rope_theta=10_000.0, sliding_window=5, tie_word_embeddings=False)),
    "gemma3": (
      "Gemma3TextConfig",
      dict(
        common,
        head_dim=16,
        sliding_window=5,
        query_pre_attn_scalar=24,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={
          "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
          "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
        },
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
      ),
    ),
  }


def make_hf_model(name: str, directory: str, seed: int = 0):
  """Builds the tiny model `name` with perturbed weights (norms and biases too), saves it, returns it."""
  import torch
  import transformers

  cls_name, kwargs = tiny_configs()[name]
  config = getattr(transformers, cls_name)(**kwargs)
  config._attn_implementation = "eager"
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
  with torch.no_grad():
    for pname, p in model.named_parameters():
      if "norm" in pname:
        p.copy_(0.5 + 0.5 * torch.rand_like(p))
      elif pname.endswith("bias"):
        p.copy_(0.1 * torch.randn_like(p))
      else:
        p.copy_(0.08 * torch.randn_like(p))
  model.save_pretrained(directory)
  return model


def left_padded_batch(seed: int = 0, lengths=(11, 7, 4)) -> tuple[np.ndarray, np.ndarray]:
  """Random ids `[B, T]` left-padded to the longest length, and their mask."""
  rng = np.random.default_rng(seed)
  t = max(lengths)
  ids = np.zeros((len(lengths), t), np.int64)
  mask = np.zeros((len(lengths), t), np.int64)
  for i, n in enumerate(lengths):
    ids[i, t - n :] = rng.integers(3, VOCAB, n)
    mask[i, t - n :] = 1
  return ids, mask


def hf_forward(model, ids: np.ndarray, mask: np.ndarray):
  """HF logits and last hidden state, with positions counted over real tokens only."""
  import torch

  with torch.no_grad():
    m = torch.tensor(mask)
    pos = (m.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=torch.tensor(ids), attention_mask=m, position_ids=pos, output_hidden_states=True)
  return out.logits.float().numpy(), out.hidden_states[-1].float().numpy()


def random_model(name: str, scan_layers: bool = True) -> CausalLM:
  """Our model with the tiny config `name` and random weights (the same for both layer layouts)."""
  cls_name, kwargs = tiny_configs()[name]
  cfg = arch_from_hf(getattr(transformers, cls_name)(**kwargs).to_dict())
  model = CausalLM(cfg, scan_layers=True, rngs=nnx.Rngs(0))
  # Perturb every weight (norms included) so no switch hides behind an all-ones or all-zeros init.
  graphdef, state = nnx.split(model)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  leaves = [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)]
  model = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
  return model if scan_layers else unstack_layers(model)


def unstack_layers(model: CausalLM) -> CausalLM:
  """The same weights in the per-layer layout."""
  other = CausalLM(model.cfg, scan_layers=False, rngs=nnx.Rngs(0))
  stacked = nnx.to_pure_dict(nnx.state(model))
  layers = stacked.pop("layers")
  stacked["layers"] = {i: jax.tree.map(lambda w, i=i: w[i], layers) for i in range(model.cfg.num_layers)}
  state = nnx.state(other)
  nnx.replace_by_pure_dict(state, stacked)
  nnx.update(other, state)
  return other


def jitted(model: CausalLM):
  """`model(...)` with the same keyword signature, compiled once per input structure (tests run faster)."""
  import functools

  graphdef, state = nnx.split(model)

  @functools.partial(jax.jit, static_argnames=("return_logits",))
  def call(state, input_ids=None, inputs_embeds=None, attention_mask=None, cache=None, return_logits=True):
    return nnx.merge(graphdef, state)(
      input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=cache, return_logits=return_logits
    )

  return lambda input_ids=None, **kw: call(state, input_ids, **kw)


def tiny_agent(name: str, hidden: int, seed: int = 0) -> CausalLM:
  """A tiny random backbone of family config `name` resized to `hidden` (heterogeneous systems need mixed widths)."""
  import dataclasses

  cls_name, kwargs = tiny_configs()[name]
  cfg = dataclasses.replace(arch_from_hf(getattr(transformers, cls_name)(**kwargs).to_dict()), hidden_size=hidden)
  return CausalLM(cfg, scan_layers=False, rngs=nnx.Rngs(seed))
