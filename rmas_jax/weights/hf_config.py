"""HF `config.json` (both the pre-v5 `rope_theta`/`rope_scaling` and the v5 `rope_parameters` shapes) to
`ArchConfig`."""

from __future__ import annotations

import json
import os
from typing import Any

from rmas_jax.models.arch import ArchConfig, RopeSpec
from rmas_jax.models.qwen3_5 import Qwen3_5Config
from rmas_jax.weights.errors import ModelLoadError
from rmas_jax.weights.qwen3_5 import MODEL_TYPES as QWEN3_5_TYPES
from rmas_jax.weights.qwen3_5 import qwen3_5_from_hf

# model_type -> our family name
MODEL_TYPES = {
  "llama": "llama",
  "qwen2": "qwen2",
  "qwen3": "qwen3",
  "mistral": "mistral",
  "gemma3_text": "gemma3",
  "gemma3": "gemma3",
}
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}


def read_config_json(path: str) -> dict[str, Any]:
  """Reads a `config.json`, naming the file in any error."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise ModelLoadError(f"{path}: not found; an HF checkpoint directory needs a config.json") from None
  except json.JSONDecodeError as e:
    raise ModelLoadError(f"{path}: not valid JSON ({e})") from None


def _rope_from(params: dict[str, Any] | None, theta: float | None, where: str) -> RopeSpec:
  params = dict(params or {})
  theta = params.pop("rope_theta", theta)
  if theta is None:
    raise ModelLoadError(f"{where}: no rope_theta in config")
  kind = params.get("rope_type", params.get("type", "default"))
  if kind == "default":
    return RopeSpec(theta=float(theta))
  if kind == "linear":
    return RopeSpec(theta=float(theta), rope_type="linear", factor=float(params["factor"]))
  if kind == "llama3":
    return RopeSpec(
      theta=float(theta),
      rope_type="llama3",
      factor=float(params["factor"]),
      low_freq_factor=float(params["low_freq_factor"]),
      high_freq_factor=float(params["high_freq_factor"]),
      original_max_position_embeddings=int(params["original_max_position_embeddings"]),
    )
  raise ModelLoadError(f"{where}: unsupported rope type {kind!r}; supported: default, linear, llama3")


def _gemma3_ropes(c: dict[str, Any], where: str) -> tuple[RopeSpec, RopeSpec]:
  params = c.get("rope_parameters")
  if isinstance(params, dict) and "full_attention" in params:  # v5 shape, one dict per layer type
    full = _rope_from(params["full_attention"], None, where)
    local = _rope_from(params.get("sliding_attention") or {"rope_theta": 10_000.0}, None, where)
    return full, local
  full = _rope_from(params or c.get("rope_scaling"), c.get("rope_theta", 1_000_000.0), where)
  local = RopeSpec(theta=float(c.get("rope_local_base_freq", 10_000.0)))
  return full, local


def _layer_types(c: dict[str, Any], n: int, family: str) -> tuple[str, ...]:
  if c.get("layer_types"):
    return tuple(c["layer_types"])
  if family == "gemma3":
    pattern = int(c.get("sliding_window_pattern", 6))
    return tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n))
  if family == "mistral" and c.get("sliding_window"):
    return ("sliding_attention",) * n
  return ("full_attention",) * n


def arch_from_hf(config: dict[str, Any], where: str = "config.json") -> ArchConfig | Qwen3_5Config:
  """Builds an `ArchConfig` (or, for the hybrid Qwen3.5 family, a `Qwen3_5Config`) from a parsed HF config.

  Args:
    config: the parsed `config.json`.
    where: the file it came from, for error messages.

  Raises:
    ModelLoadError: unsupported architecture or an option this decoder does not implement.
  """
  model_type = config.get("model_type")
  if model_type in QWEN3_5_TYPES:
    return qwen3_5_from_hf(config, where)
  if model_type not in MODEL_TYPES:
    supported = ", ".join(sorted((*MODEL_TYPES, *QWEN3_5_TYPES)))
    raise ModelLoadError(f"{where}: unsupported architecture model_type={model_type!r}; supported: {supported}")
  family = MODEL_TYPES[model_type]
  c = config.get("text_config", config) if model_type == "gemma3" else config
  act = c.get("hidden_activation") or c.get("hidden_act") or ("gelu_pytorch_tanh" if family == "gemma3" else "silu")
  if act not in _ACTIVATIONS:
    raise ModelLoadError(f"{where}: unsupported activation {act!r}")
  if family in ("qwen2", "qwen3") and c.get("use_sliding_window"):
    raise ModelLoadError(f"{where}: use_sliding_window=true is not supported for {model_type}")
  try:
    n_layers, n_heads = int(c["num_hidden_layers"]), int(c["num_attention_heads"])
    hidden = int(c["hidden_size"])
    head_dim = int(c.get("head_dim") or hidden // n_heads)
    if family == "gemma3":
      rope_global, rope_local = _gemma3_ropes(c, where)
    else:
      rope_global = _rope_from(c.get("rope_parameters") or c.get("rope_scaling"), c.get("rope_theta"), where)
      rope_local = None
    layer_types = _layer_types(c, n_layers, family)
    bias = bool(c.get("attention_bias", False))
    return ArchConfig(
      family=family,
      vocab_size=int(c["vocab_size"]),
      hidden_size=hidden,
      intermediate_size=int(c["intermediate_size"]),
      num_layers=n_layers,
      num_heads=n_heads,
      num_kv_heads=int(c.get("num_key_value_heads") or n_heads),
      head_dim=head_dim,
      rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
      norm_offset=family == "gemma3",
      qkv_bias=family == "qwen2" or bias,
      o_bias=family != "qwen2" and bias,
      mlp_bias=bool(c.get("mlp_bias", False)),
      qk_norm=family in ("qwen3", "gemma3"),
      sandwich_norms=family == "gemma3",
      activation=_ACTIVATIONS[act],
      embed_scale=family == "gemma3",
      query_scale=float(c.get("query_pre_attn_scalar", 256)) ** -0.5 if family == "gemma3" else None,
      tie_embeddings=bool(c.get("tie_word_embeddings", family == "gemma3")),
      rope_global=rope_global,
      rope_local=rope_local,
      sliding_window=int(c["sliding_window"]) if "sliding_attention" in layer_types else None,
      layer_types=layer_types,
      attn_logit_softcap=c.get("attn_logit_softcapping"),
      final_logit_softcap=c.get("final_logit_softcapping"),
      max_position_embeddings=int(c.get("max_position_embeddings", 8192)),
    )
  except KeyError as e:
    raise ModelLoadError(f"{where}: missing field {e.args[0]!r}") from None
  except (TypeError, ValueError) as e:
    raise ModelLoadError(f"{where}: {e}") from None


def arch_from_dir(directory: str) -> ArchConfig | Qwen3_5Config:
  """`ArchConfig` of an HF checkpoint directory."""
  path = os.path.join(directory, "config.json")
  return arch_from_hf(read_config_json(path), where=path)
