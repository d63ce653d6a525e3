"""GGUF files (llama.cpp's format): metadata to an HF-style config, tensors dequantised to HF names and layouts.

Per-family layout fixes, checked tensor by tensor against transformers' own GGUF loader:
  * `llama`: llama.cpp's converter permutes the rows of `attn_q`/`attn_k` per head; we undo it.
  * `gemma3`: every RMSNorm weight is stored as `1 + w`; HF keeps `w`, so we subtract one.
  * `qwen2`: stored as HF has it.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from rmas_jax.models.arch import ArchConfig
from rmas_jax.weights.errors import ModelLoadError
from rmas_jax.weights.hf_config import arch_from_hf

SUPPORTED = ("llama", "qwen2", "qwen3", "gemma3")
_BLOCK = {
  "attn_q": "self_attn.q_proj",
  "attn_k": "self_attn.k_proj",
  "attn_v": "self_attn.v_proj",
  "attn_output": "self_attn.o_proj",
  "attn_q_norm": "self_attn.q_norm",
  "attn_k_norm": "self_attn.k_norm",
  "ffn_gate": "mlp.gate_proj",
  "ffn_up": "mlp.up_proj",
  "ffn_down": "mlp.down_proj",
  "attn_norm": "input_layernorm",
}
_NORMS = {  # differ between the pre-norm families and Gemma 3's four norms
  "default": {"ffn_norm": "post_attention_layernorm"},
  "gemma3": {
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
  },
}
_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_TOP_RE = re.compile(r"^([a-z_]+)\.(weight|bias)$")


def open_reader(path: str):
  """A `gguf.GGUFReader`, with unreadable or truncated files reported by name."""
  from gguf import GGUFReader

  if not os.path.isfile(path):
    raise ModelLoadError(f"{path}: no such GGUF file")
  try:
    return GGUFReader(path)
  except Exception as e:  # the reader raises ValueError, struct errors, or numpy errors on bad bytes
    raise ModelLoadError(f"{path}: not a valid GGUF file, or truncated ({type(e).__name__}: {e})") from None


def metadata(reader) -> dict[str, Any]:
  """All key/value fields of the file except the GGUF header fields."""
  out = {}
  for key, field in reader.fields.items():
    if not key.startswith("GGUF."):
      out[key] = field.contents()
  return out


def hf_name(gguf_name: str, arch: str) -> str | None:
  """The HF tensor name of a GGUF tensor, or None when the decoder has no use for it."""
  norms = _NORMS["gemma3" if arch == "gemma3" else "default"]
  if m := _BLK_RE.match(gguf_name):
    layer, part, leaf = m.groups()
    module = _BLOCK.get(part) or norms.get(part)
    return f"model.layers.{layer}.{module}.{leaf}" if module else None
  if m := _TOP_RE.match(gguf_name):
    module = _TOP.get(m.group(1))
    return f"{module}.{m.group(2)}" if module else None
  return None


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  # llama.cpp interleaves the two rotary halves of each head; HF keeps them as [first half | second half].
  return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFCheckpoint:
  """A GGUF file seen as an HF checkpoint: `config` (HF-style dict), `arch`, `keys()` and `get(name)`."""

  def __init__(self, path: str):
    self.path = path
    self.reader = open_reader(path)
    self.meta = metadata(self.reader)
    arch = self.meta.get("general.architecture")
    if arch not in SUPPORTED:
      raise ModelLoadError(f"{path}: unsupported GGUF architecture {arch!r}; supported: {', '.join(SUPPORTED)}")
    self.arch_name = arch
    if any(t.name == "rope_freqs.weight" for t in self.reader.tensors):
      raise ModelLoadError(f"{path}: GGUF rope frequency factors are not supported; load the HF checkpoint")
    self._tensors = {}
    for t in self.reader.tensors:
      name = hf_name(t.name, arch)
      if name is None:
        raise ModelLoadError(f"{path}: tensor {t.name!r} has no counterpart in the {arch} decoder")
      self._tensors[name] = t
    self.config = self._hf_config()
    self.arch: ArchConfig = arch_from_hf(self.config, where=path)

  def _field(self, key: str, default=None):
    value = self.meta.get(f"{self.arch_name}.{key}", default)
    if value is None:
      raise ModelLoadError(f"{self.path}: missing GGUF metadata {self.arch_name}.{key}")
    return value

  def _hf_config(self) -> dict[str, Any]:
    arch = self.arch_name
    heads = int(self._field("attention.head_count"))
    hidden = int(self._field("embedding_length"))
    embed = self._tensors.get("model.embed_tokens.weight")
    if embed is None:
      raise ModelLoadError(f"{self.path}: no token_embd.weight tensor")
    config = {
      "model_type": {"gemma3": "gemma3_text"}.get(arch, arch),
      "vocab_size": int(embed.shape[-1]),
      "hidden_size": hidden,
      "intermediate_size": int(self._field("feed_forward_length")),
      "num_hidden_layers": int(self._field("block_count")),
      "num_attention_heads": heads,
      "num_key_value_heads": int(self._field("attention.head_count_kv", heads)),
      "head_dim": int(self._field("attention.key_length", hidden // heads)),
      "rms_norm_eps": float(self._field("attention.layer_norm_rms_epsilon")),
      "rope_theta": float(self._field("rope.freq_base", 10_000.0)),
      "max_position_embeddings": int(self._field("context_length", 8192)),
      "tie_word_embeddings": "lm_head.weight" not in self._tensors,
    }
    if arch == "gemma3":
      # Not stored in the file: Gemma 3's defaults (local base 10k, every 6th layer global, q scaled by head_dim).
      config.update(
        sliding_window=int(self._field("attention.sliding_window", 512)),
        sliding_window_pattern=6,
        rope_local_base_freq=10_000.0,
        query_pre_attn_scalar=config["head_dim"],
      )
    return config

  def keys(self) -> list[str]:
    return list(self._tensors)

  def get(self, name: str) -> np.ndarray:
    """One tensor by HF name, dequantised to fp32 in HF layout."""
    from gguf.quants import dequantize

    t = self._tensors[name]
    try:
      w = np.asarray(dequantize(t.data, t.tensor_type), np.float32)
    except Exception as e:
      raise ModelLoadError(f"{self.path}: cannot dequantise tensor {t.name!r} ({e})") from None
    if self.arch_name == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
      heads = self.arch.num_heads if "q_proj" in name else self.arch.num_kv_heads
      w = _unpermute(w, heads)
    if self.arch_name == "gemma3" and "norm" in name:
      w = w - np.float32(1.0)
    return w
