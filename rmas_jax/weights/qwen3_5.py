"""Qwen3.5 checkpoints: HF `config.json` to `Qwen3_5Config`, and HF tensors into a `Qwen3_5CausalLM`.

Qwen's hub repositories hold the multimodal model (`model_type: qwen3_5`, the text tower under `text_config`, its
tensors under `model.language_model.`, a vision tower and a multi-token-prediction head we skip); a text-only
export has `model_type: qwen3_5_text` and `model.` tensors. Both load here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from rmas_jax.models.arch import RopeSpec
from rmas_jax.models.qwen3_5 import Qwen3_5CausalLM, Qwen3_5Config
from rmas_jax.sharding.placement import to_devices
from rmas_jax.weights.errors import ModelLoadError
from rmas_jax.weights.key_maps import load_tree

MODEL_TYPES = ("qwen3_5", "qwen3_5_text")


def qwen3_5_from_hf(config: dict[str, Any], where: str = "config.json") -> Qwen3_5Config:
  """`Qwen3_5Config` of a parsed HF config (the multimodal wrapper or the text config itself).

  Raises:
    ModelLoadError: a field is missing or an option this module does not implement is set.
  """
  wrapped = config.get("model_type") == "qwen3_5" and bool(config.get("text_config"))
  c = config["text_config"] if wrapped else config
  # The multimodal model ties its head by the wrapper's flag (HF reads the top-level config there).
  tie = config.get("tie_word_embeddings", False) if wrapped else c.get("tie_word_embeddings", False)
  act = c.get("hidden_act", "silu")
  if act not in ("silu", "swish"):
    raise ModelLoadError(f"{where}: unsupported hidden_act {act!r} for qwen3_5 (expected silu)")
  if c.get("num_experts"):
    raise ModelLoadError(f"{where}: mixture-of-experts Qwen3.5 (num_experts={c['num_experts']}) is not supported")
  if c.get("attn_output_gate") is False:
    raise ModelLoadError(f"{where}: attn_output_gate=false is not supported for qwen3_5")
  rope = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
  kind = rope.get("rope_type", rope.get("type", "default"))
  if kind != "default":
    raise ModelLoadError(f"{where}: unsupported rope type {kind!r} for qwen3_5 (expected default)")
  try:
    n = int(c["num_hidden_layers"])
    interval = int(c.get("full_attention_interval", 4))
    types = c.get("layer_types") or ["full_attention" if (i + 1) % interval == 0 else "linear_attention"
                                     for i in range(n)]  # fmt: skip
    return Qwen3_5Config(
      vocab_size=int(c["vocab_size"]),
      hidden_size=int(c["hidden_size"]),
      intermediate_size=int(c["intermediate_size"]),
      num_layers=n,
      num_heads=int(c["num_attention_heads"]),
      num_kv_heads=int(c.get("num_key_value_heads") or c["num_attention_heads"]),
      head_dim=int(c.get("head_dim") or 256),
      linear_num_key_heads=int(c.get("linear_num_key_heads", 16)),
      linear_num_value_heads=int(c.get("linear_num_value_heads", 32)),
      linear_key_head_dim=int(c.get("linear_key_head_dim", 128)),
      linear_value_head_dim=int(c.get("linear_value_head_dim", 128)),
      linear_conv_kernel_dim=int(c.get("linear_conv_kernel_dim", 4)),
      layer_types=tuple(types),
      rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
      rope=RopeSpec(theta=float(rope.get("rope_theta", c.get("rope_theta", 10_000.0)))),
      partial_rotary_factor=float(rope.get("partial_rotary_factor", c.get("partial_rotary_factor", 0.25))),
      attention_bias=bool(c.get("attention_bias", False)),
      tie_embeddings=bool(tie),
      max_position_embeddings=int(c.get("max_position_embeddings", 262_144)),
    )
  except KeyError as e:
    raise ModelLoadError(f"{where}: missing field {e.args[0]!r}") from None
  except (TypeError, ValueError) as e:
    raise ModelLoadError(f"{where}: {e}") from None


def cycles_from_layers(layers: dict, cfg: Qwen3_5Config) -> dict:
  """Per-layer weights `{i: tree}` to the scanned layout `{"layers": {j: tree stacked over cycles}}`."""
  p, n = cfg.period, cfg.num_layers // cfg.period
  return {"layers": {j: jax.tree.map(lambda *xs: np.stack(xs), *[layers[c * p + j] for c in range(n)])
                     for j in range(p)}}  # fmt: skip


def layers_from_cycles(cycles: dict, cfg: Qwen3_5Config) -> dict:
  """The inverse of `cycles_from_layers`."""
  p, n = cfg.period, cfg.num_layers // cfg.period
  return {c * p + j: jax.tree.map(lambda x, c=c: x[c], cycles["layers"][j]) for c in range(n) for j in range(p)}


def abstract_qwen3_5(cfg: Qwen3_5Config, dtype, scan_layers: bool) -> Qwen3_5CausalLM:
  """The model with shape-only parameters (no memory allocated)."""
  return nnx.eval_shape(lambda: Qwen3_5CausalLM(cfg, dtype=dtype, scan_layers=scan_layers, rngs=nnx.Rngs(0)))


def build_qwen3_5(
  cfg: Qwen3_5Config,
  get: Callable[[str], np.ndarray],
  keys: list[str],
  *,
  dtype,
  scan_layers: bool,
  where: str,
  progress: bool = False,
) -> Qwen3_5CausalLM:
  """Loads HF-named tensors into a `Qwen3_5CausalLM`; tensors are read per layer, then stacked by cycle if scanned.

  Raises:
    ModelLoadError: a tensor is missing, has the wrong shape, or is not used.
  """
  per_layer = nnx.to_pure_dict(nnx.state(abstract_qwen3_5(cfg, dtype, scan_layers=False)))
  loaded = load_tree(per_layer, get, keys, cfg.num_layers, np.dtype(dtype), where, progress)
  if scan_layers:
    loaded["cycles"] = cycles_from_layers(loaded.pop("layers"), cfg)
  graphdef, state = nnx.split(abstract_qwen3_5(cfg, dtype, scan_layers))
  nnx.replace_by_pure_dict(state, to_devices(loaded))  # sharded under a mesh, see `rmas_jax.sharding`
  return nnx.merge(graphdef, state)
