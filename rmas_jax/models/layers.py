"""Building blocks of the shared decoder: RMSNorm, rotary embeddings, gated MLP, grouped-query attention.

Sub-module and parameter names follow HF transformers (`q_proj`, `weight`) so the weight maps stay short, and
projection matrices keep HF's `Linear.weight` layout `[out, in]` (see `Linear`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rmas_jax.models.arch import ArchConfig, RopeSpec

_MASKED = float(np.finfo(np.float32).min)


class RMSNorm(nnx.Module):
  """Root-mean-square norm over the last axis, computed in fp32.

  With `offset`, the learned weight is applied as `1 + w` (Gemma's convention, weights initialised at zero).
  """

  def __init__(self, dim: int, *, eps: float, offset: bool, param_dtype=jnp.float32):
    self.eps = eps
    self.offset = offset
    init = jnp.zeros if offset else jnp.ones
    self.weight = nnx.Param(init((dim,), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    w = self.weight[...].astype(jnp.float32)
    return (y * (1.0 + w) if self.offset else y * w).astype(x.dtype)


def rope_inv_freq(spec: RopeSpec, head_dim: int) -> np.ndarray:
  """Inverse frequencies `[head_dim // 2]` of one rotary embedding, in fp32 like HF computes them."""
  exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
  inv = (np.float32(1.0) / (np.float32(spec.theta) ** exponents)).astype(np.float32)
  if spec.rope_type == "default":
    return inv
  if spec.rope_type == "linear":
    return (inv / np.float32(spec.factor)).astype(np.float32)
  if spec.rope_type == "llama3":
    old = spec.original_max_position_embeddings
    low_wavelen = old / spec.low_freq_factor
    high_wavelen = old / spec.high_freq_factor
    wavelen = 2 * np.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / spec.factor, inv)
    smooth = (old / wavelen - spec.low_freq_factor) / (spec.high_freq_factor - spec.low_freq_factor)
    smoothed = (1 - smooth) * scaled / spec.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)
  raise ValueError(f"unsupported rope_type {spec.rope_type!r}; expected default, linear or llama3")


def rope_tables(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """cos and sin tables `[B, T, head_dim]` for integer positions `[B, T]`, in fp32."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]  # [B, T, hd/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)  # [B, T, hd]
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotate-half RoPE on `x [B, T, N, hd]` with tables `[B, T, hd]`."""
  half = x.shape[-1] // 2
  xf = x.astype(jnp.float32)
  rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
  out = xf * cos[:, :, None, :] + rotated * sin[:, :, None, :]
  return out.astype(x.dtype)


class Linear(nnx.Module):
  """`x W^T + b` with `W` stored `[out, in]`, the layout of HF's `Linear.weight`.

  Why not `nnx.Linear` (`[in, out]`): XLA's CPU backend runs one-token steps faster on `[out, in]` matrices
  (`benchmarks/projection_layout.py`, Qwen2.5-0.5B's 24 MLPs: 54 against 94 ms at batch 1, 179 against 202 ms at
  batch 4, a 128-token prefill 4 % slower), and checkpoints load without a transpose."""

  def __init__(self, din: int, dout: int, *, bias: bool, dtype, rngs: nnx.Rngs):
    self.weight = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (dout, din), dtype))
    self.bias = nnx.Param(jnp.zeros((dout,), dtype)) if bias else None

  def __call__(self, x: jax.Array) -> jax.Array:  # [..., in] -> [..., out]
    w = self.weight[...]
    y = jnp.einsum("...i,oi->...o", x.astype(w.dtype), w)
    return y if self.bias is None else y + self.bias[...]


class MLP(nnx.Module):
  """Gated feed-forward: `down(act(gate(x)) * up(x))`, SwiGLU or GeGLU with tanh-GELU."""

  def __init__(self, cfg: ArchConfig, *, dtype, rngs: nnx.Rngs):
    d, f = cfg.hidden_size, cfg.intermediate_size
    self.activation = cfg.activation
    self.gate_proj = Linear(d, f, bias=cfg.mlp_bias, dtype=dtype, rngs=rngs)
    self.up_proj = Linear(d, f, bias=cfg.mlp_bias, dtype=dtype, rngs=rngs)
    self.down_proj = Linear(f, d, bias=cfg.mlp_bias, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    gate = self.gate_proj(x)
    act = jax.nn.silu(gate) if self.activation == "silu" else jax.nn.gelu(gate, approximate=True)
    return self.down_proj(act * self.up_proj(x))


class Attention(nnx.Module):
  """Grouped-query self-attention over a key/value buffer, with optional q/k norms and soft-capping."""

  def __init__(self, cfg: ArchConfig, *, dtype, rngs: nnx.Rngs):
    d, hd = cfg.hidden_size, cfg.head_dim
    self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
    self.scale = cfg.scale
    self.softcap = cfg.attn_logit_softcap
    self.q_proj = Linear(d, cfg.num_heads * hd, bias=cfg.qkv_bias, dtype=dtype, rngs=rngs)
    self.k_proj = Linear(d, cfg.num_kv_heads * hd, bias=cfg.qkv_bias, dtype=dtype, rngs=rngs)
    self.v_proj = Linear(d, cfg.num_kv_heads * hd, bias=cfg.qkv_bias, dtype=dtype, rngs=rngs)
    self.o_proj = Linear(cfg.num_heads * hd, d, bias=cfg.o_bias, dtype=dtype, rngs=rngs)
    if cfg.qk_norm:
      self.q_norm = RMSNorm(hd, eps=cfg.rms_norm_eps, offset=cfg.norm_offset, param_dtype=dtype)
      self.k_norm = RMSNorm(hd, eps=cfg.rms_norm_eps, offset=cfg.norm_offset, param_dtype=dtype)
    else:
      self.q_norm = self.k_norm = None

  def project_kv(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keys (rotated) and values `[B, K, T, hd]` of new tokens."""
    b, t, _ = x.shape
    k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    if self.k_norm is not None:
      k = self.k_norm(k)
    return apply_rope(k, cos, sin).transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

  def __call__(
    self,
    x: jax.Array,  # [B, T, D]
    cos: jax.Array,  # [B, T, hd]
    sin: jax.Array,  # [B, T, hd]
    k_new: jax.Array,  # [B, K, T, hd] keys of this call's tokens (from `project_kv`)
    v_new: jax.Array,  # [B, K, T, hd]
    mask: jax.Array,  # [B, T, S + T] (or [B, T, T] without cache): True where a query may attend
    cache_k: jax.Array | None = None,  # [B, K, S, hd] keys already in the cache
    cache_v: jax.Array | None = None,  # [B, K, S, hd]
  ) -> jax.Array:
    # Cached and new keys are scored separately and share one softmax, so the cache is read where it lies
    # instead of being copied to insert the new keys first.
    b, t, _ = x.shape
    kv, group = self.num_kv_heads, self.num_heads // self.num_kv_heads
    q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
    if self.q_norm is not None:
      q = self.q_norm(q)
    q = apply_rope(q, cos, sin).reshape(b, t, kv, group, self.head_dim)
    score = lambda keys: jnp.einsum("btkgh,bksh->bkgts", q, keys, preferred_element_type=jnp.float32)  # noqa: E731
    logits = score(k_new) if cache_k is None else jnp.concatenate([score(cache_k), score(k_new)], axis=-1)
    logits = logits * self.scale
    if self.softcap is not None:
      logits = jnp.tanh(logits / self.softcap) * self.softcap
    logits = jnp.where(mask[:, None, None, :, :], logits, _MASKED)
    probs = jax.nn.softmax(logits, axis=-1).astype(v_new.dtype)
    mix = lambda p, values: jnp.einsum("bkgts,bksh->btkgh", p, values)  # noqa: E731  [B, T, K, G, hd]
    if cache_v is None:
      out = mix(probs, v_new)
    else:
      s = cache_v.shape[2]
      out = mix(probs[..., :s], cache_v) + mix(probs[..., s:], v_new)
    return self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim))
