"""Turns an `ArchConfig` plus a source of HF-named tensors into a ready `CausalLM`."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rmas_jax.models.arch import ArchConfig
from rmas_jax.models.qwen3_5 import Qwen3_5CausalLM, Qwen3_5Config
from rmas_jax.models.transformer import CausalLM
from rmas_jax.sharding.placement import to_devices
from rmas_jax.weights.key_maps import load_tree
from rmas_jax.weights.qwen3_5 import build_qwen3_5

DTYPES = {"float32": jnp.float32, "fp32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16}


def resolve_dtype(dtype) -> jnp.dtype:
  """`float32`/`fp32`/`bfloat16`/`bf16` or a dtype to a jnp dtype."""
  if isinstance(dtype, str):
    if dtype not in DTYPES:
      raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[dtype]
  return jnp.dtype(dtype)


def default_scan_layers() -> bool:
  """Scanned, stacked layers on accelerators; separate per-layer weights on CPU, where one-token steps run 2-3x
  faster that way (XLA's CPU backend copies a scanned layer's weight slice before using it)."""
  return jax.default_backend() != "cpu"


def new_model(cfg: ArchConfig | Qwen3_5Config, *, dtype=jnp.float32, scan_layers: bool = True,
              rngs: nnx.Rngs) -> CausalLM | Qwen3_5CausalLM:  # fmt: skip
  """A randomly initialised model of the family `cfg` describes: the shared decoder or the hybrid Qwen3.5 one."""
  cls = Qwen3_5CausalLM if isinstance(cfg, Qwen3_5Config) else CausalLM
  return cls(cfg, dtype=resolve_dtype(dtype), scan_layers=scan_layers, rngs=rngs)


def abstract_model(cfg: ArchConfig | Qwen3_5Config, dtype=jnp.float32,
                   scan_layers: bool | None = None) -> CausalLM | Qwen3_5CausalLM:  # fmt: skip
  """The model with shape-only parameters: no memory is allocated (also for full-size shape checks)."""
  scan = default_scan_layers() if scan_layers is None else scan_layers
  return nnx.eval_shape(lambda: new_model(cfg, dtype=dtype, scan_layers=scan, rngs=nnx.Rngs(0)))


def build_model(
  cfg: ArchConfig | Qwen3_5Config,
  get: Callable[[str], np.ndarray],
  keys: list[str],
  *,
  dtype="float32",
  scan_layers: bool | None = None,
  where: str,
  progress: bool = False,
) -> CausalLM | Qwen3_5CausalLM:
  """Loads HF-named tensors into a `CausalLM` (or, for a `Qwen3_5Config`, a `Qwen3_5CausalLM`).

  Args:
    cfg: the architecture.
    get: reads one tensor by HF name.
    keys: all tensor names of the checkpoint.
    dtype: parameter and activation dtype (`float32` or `bfloat16`).
    scan_layers: stacked, scanned layers (True) or per-layer weights (False); None picks by backend.
    where: the checkpoint's location, for error messages.
    progress: show a progress bar while tensors are read.
  """
  dtype = resolve_dtype(dtype)
  if isinstance(cfg, Qwen3_5Config):
    scan = default_scan_layers() if scan_layers is None else scan_layers
    return build_qwen3_5(cfg, get, keys, dtype=dtype, scan_layers=scan, where=where, progress=progress)
  graphdef, state = nnx.split(abstract_model(cfg, dtype, scan_layers))
  pure = nnx.to_pure_dict(state)
  loaded = load_tree(pure, get, keys, cfg.num_layers, np.dtype(dtype), where, progress)
  loaded = to_devices(loaded)  # under a mesh (`rmas_jax.sharding.use_mesh`) each device gets only its shards
  nnx.replace_by_pure_dict(state, loaded)
  return nnx.merge(graphdef, state)
