"""Gated DeltaNet, the linear-attention token mixer of Qwen3.5: a short depthwise causal convolution, then the
gated delta rule over a per-head recurrent state `S [dk, dv]`.

Per token, with `q`, `k` L2-normalised (q also scaled by dk^-1/2), decay `g <= 0` and write strength `beta`:

    S <- exp(g) * S
    S <- S + k (beta * (v - S^T k))^T          (the delta rule: overwrite what S recalls for k)
    o  = S^T q

Two forms compute it. The recurrent form runs that loop token by token (one decode or latent step is one
iteration). The chunked form cuts the sequence into chunks of C tokens and turns each chunk's C rank-1 updates into
matrix products and the inverse of one unit triangular matrix (the WY/UT representation), leaving only a scan over
chunks; it is the form for prompts and training. Both are exact; `benchmarks/qwen3_5_forms.py` measures how far
apart they land in floating point.

Padding is skipped, not zeroed: a masked token neither decays nor writes the state (g = 0, beta = 0) and never
enters the convolution window, so a padded slot anywhere in a sequence (left padding, an inactive row in a decode
step) leaves the state exactly as if the slot were absent.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rmas_jax.models.layers import Linear, RMSNorm


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """`x / sqrt(sum(x^2) + eps)` over the last axis (the FLA convention HF follows)."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def causal_conv(
  x: jax.Array,  # [B, T, C]
  weight: jax.Array,  # [K, C] tap K-1 multiplies the current token
  state: jax.Array,  # [B, K-1, C] the last K-1 real inputs before this call, oldest first
  valid: jax.Array | None,  # [B, T] bool, None when every token is real
) -> tuple[jax.Array, jax.Array]:
  """Depthwise causal convolution over real tokens only, continuing from `state`.

  Returns the pre-activation outputs `[B, T, C]` (meaningless at masked tokens) and the new state.
  """
  b, t, c = x.shape
  taps = weight.shape[0]
  if valid is None:
    ext = jnp.concatenate([state.astype(x.dtype), x], axis=1)  # [B, K-1+T, C]
    out = sum(ext[:, k : k + t] * weight[k] for k in range(taps))
    return out, ext[:, t:]
  # Compact each row's real tokens to the front, right after the carried state, so the window only ever sees real
  # inputs; then send each output back to its token's position.
  rank = jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1  # [B, T] index among the row's real tokens
  rows = jnp.arange(b)[:, None]
  compact = jnp.zeros_like(x).at[rows, jnp.where(valid, rank, t)].set(x, mode="drop")
  ext = jnp.concatenate([state.astype(x.dtype), compact], axis=1)  # [B, K-1+T, C]
  out_compact = sum(ext[:, k : k + t] * weight[k] for k in range(taps))
  out = jnp.take_along_axis(out_compact, jnp.maximum(rank, 0)[..., None], axis=1)
  count = jnp.sum(valid, axis=1, dtype=jnp.int32)  # [B]
  new_state = jnp.take_along_axis(ext, (count[:, None] + jnp.arange(taps - 1))[..., None], axis=1)
  return out, new_state


def recurrent_gated_delta_rule(
  q: jax.Array,  # [B, T, H, dk] normalised and scaled
  k: jax.Array,  # [B, T, H, dk] normalised
  v: jax.Array,  # [B, T, H, dv]
  g: jax.Array,  # [B, T, H] log decay, <= 0
  beta: jax.Array,  # [B, T, H] in [0, 1]
  state: jax.Array,  # [B, H, dk, dv]
) -> tuple[jax.Array, jax.Array]:
  """Token-by-token gated delta rule in fp32. Returns outputs `[B, T, H, dv]` and the final state."""

  def step(s, xs):
    q_t, k_t, v_t, g_t, b_t = xs  # [B, H, dk], [B, H, dk], [B, H, dv], [B, H], [B, H]
    s = s * jnp.exp(g_t)[..., None, None]
    recalled = jnp.einsum("bhk,bhkv->bhv", k_t, s)
    delta = b_t[..., None] * (v_t - recalled)  # [B, H, dv]
    s = s + k_t[..., :, None] * delta[..., None, :]
    return s, jnp.einsum("bhk,bhkv->bhv", q_t, s)

  f32 = lambda a: jnp.swapaxes(a.astype(jnp.float32), 0, 1)  # noqa: E731  time first
  state, out = jax.lax.scan(step, state.astype(jnp.float32), tuple(map(f32, (q, k, v, g, beta))))
  return jnp.swapaxes(out, 0, 1), state


def unit_lower_inverse(a: jax.Array) -> jax.Array:
  """`(I + A)^-1 [..., C, C]` for strictly lower-triangular `A`, by forward substitution over rows.

  Row i of X = (I + A)^-1 is `e_i - A[i] X`, which reads only the rows above it. One small loop body instead of
  `triangular_solve`, which XLA's CPU backend runs ~100x slower for batches of small systems and compiles slower.
  """
  c = a.shape[-1]
  eye = jnp.eye(c, dtype=a.dtype)

  def row(i, x):
    return jax.lax.dynamic_update_index_in_dim(x, eye[i] - jnp.einsum("...j,...jd->...d", a[..., i, :], x), i, axis=-2)

  return jax.lax.fori_loop(0, c, row, jnp.zeros_like(a))


def chunked_gated_delta_rule(
  q: jax.Array,  # [B, T, H, dk] normalised and scaled
  k: jax.Array,  # [B, T, H, dk] normalised
  v: jax.Array,  # [B, T, H, dv]
  g: jax.Array,  # [B, T, H] log decay, <= 0
  beta: jax.Array,  # [B, T, H]
  state: jax.Array,  # [B, H, dk, dv]
  chunk: int = 64,
) -> tuple[jax.Array, jax.Array]:
  """The same rule as `recurrent_gated_delta_rule`, a chunk of `chunk` tokens at a time, in fp32.

  Within a chunk starting from state S0, with G_i the cumulative log decay up to token i and u_i the value actually
  written at i (`beta_i * (v_i - decayed S^T k_i)`), the state after token i is
  `exp(G_i) S0 + sum_{j<=i} exp(G_i - G_j) k_j u_j^T`. Substituting gives a unit lower-triangular system
  `(I + A) U = beta V - (beta exp(G) K) S0` with `A_ij = beta_i exp(G_i - G_j) k_i.k_j` (j < i), so
  `U = U0 - W S0` where U0 and W do not depend on S0 and are computed for every chunk at once. Only
  `O = exp(G) Q S0 + P U` and `S1 = exp(G_C) S0 + (exp(G_C - G) K)^T U` run in a scan over chunks.
  """
  b, t, h, dk = k.shape
  dv = v.shape[-1]
  pad = (-t) % chunk

  def heads_first(a):  # [B, T, H, ...] -> [B, H, T + pad, ...] in fp32
    # Padding tokens at the end have g = 0 and beta = 0: they leave the state alone.
    a = jnp.pad(a.astype(jnp.float32), [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
    return jnp.moveaxis(a, 2, 1)

  q, k, v, g, beta = map(heads_first, (q, k, v, g, beta))
  n = (t + pad) // chunk
  q, k, v = (a.reshape(b, h, n, chunk, a.shape[-1]) for a in (q, k, v))  # [B, H, N, C, d]
  g, beta = (a.reshape(b, h, n, chunk) for a in (g, beta))  # [B, H, N, C]

  cum = jnp.cumsum(g, axis=-1)  # [B, H, N, C] G_i
  causal = jnp.tril(jnp.ones((chunk, chunk), bool))  # j <= i
  strict = jnp.tril(jnp.ones((chunk, chunk), bool), -1)  # j < i
  # exp(G_i - G_j) only where j <= i: above the diagonal the difference is positive and could overflow.
  decay = jnp.exp(jnp.where(causal, cum[..., :, None] - cum[..., None, :], -jnp.inf))  # [B, H, N, C, C]
  kk = jnp.einsum("bhnik,bhnjk->bhnij", k, k)
  a_mat = jnp.where(strict, beta[..., :, None] * kk * decay, 0.0)
  inverse = unit_lower_inverse(a_mat)  # [B, H, N, C, C]
  u0 = jnp.einsum("bhnij,bhnjv->bhniv", inverse, beta[..., None] * v)  # [B, H, N, C, dv]
  w = jnp.einsum("bhnij,bhnjk->bhnik", inverse, (beta * jnp.exp(cum))[..., None] * k)  # [B, H, N, C, dk]
  p = jnp.where(causal, jnp.einsum("bhnik,bhnjk->bhnij", q, k) * decay, 0.0)  # [B, H, N, C, C]
  q_decayed = q * jnp.exp(cum)[..., None]
  k_to_end = k * jnp.exp(cum[..., -1:] - cum)[..., None]
  chunk_decay = jnp.exp(cum[..., -1])  # [B, H, N]

  def step(s, xs):
    u0_n, w_n, p_n, q_n, k_n, d_n = xs
    u = u0_n - jnp.einsum("bhck,bhkv->bhcv", w_n, s)
    out = jnp.einsum("bhck,bhkv->bhcv", q_n, s) + jnp.einsum("bhij,bhjv->bhiv", p_n, u)
    s = s * d_n[..., None, None] + jnp.einsum("bhck,bhcv->bhkv", k_n, u)
    return s, out

  chunks_first = lambda a: jnp.moveaxis(a, 2, 0)  # noqa: E731
  xs = tuple(map(chunks_first, (u0, w, p, q_decayed, k_to_end, chunk_decay)))
  state, out = jax.lax.scan(step, state.astype(jnp.float32), xs)  # out: [N, B, H, C, dv]
  out = jnp.moveaxis(out, 0, 2).reshape(b, h, n * chunk, dv)[:, :, :t]
  return jnp.swapaxes(out, 1, 2), state


class DepthwiseConv(nnx.Module):
  """Holds the convolution kernel in HF's `Conv1d` layout `[C, 1, K]` (no bias)."""

  def __init__(self, channels: int, taps: int, *, dtype, rngs: nnx.Rngs):
    self.weight = nnx.Param(nnx.initializers.normal(0.2)(rngs.params(), (channels, 1, taps), dtype))

  def taps(self) -> jax.Array:
    """The kernel as `[K, C]`."""
    return self.weight[...][:, 0, :].T


class GatedDeltaNet(nnx.Module):
  """Qwen3.5's linear-attention mixer with HF's sub-module names (`in_proj_qkv`, `conv1d`, `A_log`, ...).

  Key heads are shared by `num_v_heads // num_k_heads` consecutive value heads. The output is RMS-normed per value
  head, gated by `silu(z)` and projected back to the model width.
  """

  def __init__(self, cfg, *, dtype, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.num_k_heads, self.num_v_heads = cfg.linear_num_key_heads, cfg.linear_num_value_heads
    self.head_k_dim, self.head_v_dim = cfg.linear_key_head_dim, cfg.linear_value_head_dim
    self.key_dim = self.num_k_heads * self.head_k_dim
    self.value_dim = self.num_v_heads * self.head_v_dim
    self.conv_dim = 2 * self.key_dim + self.value_dim
    self.chunk = cfg.chunk_size
    self.form = cfg.delta_rule_form
    linear = lambda din, dout: Linear(din, dout, bias=False, dtype=dtype, rngs=rngs)  # noqa: E731
    self.in_proj_qkv = linear(d, self.conv_dim)
    self.in_proj_z = linear(d, self.value_dim)
    self.in_proj_b = linear(d, self.num_v_heads)
    self.in_proj_a = linear(d, self.num_v_heads)
    self.conv1d = DepthwiseConv(self.conv_dim, cfg.linear_conv_kernel_dim, dtype=dtype, rngs=rngs)
    self.dt_bias = nnx.Param(jnp.ones((self.num_v_heads,), dtype))
    self.A_log = nnx.Param(jnp.log(jnp.linspace(1.0, 16.0, self.num_v_heads)).astype(dtype))
    self.norm = RMSNorm(self.head_v_dim, eps=cfg.rms_norm_eps, offset=False, param_dtype=dtype)
    self.out_proj = linear(self.value_dim, d)

  def state_shapes(self, batch: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes of the convolution state and the recurrent state of one layer."""
    conv = (batch, self.conv1d.weight.shape[-1] - 1, self.conv_dim)
    return conv, (batch, self.num_v_heads, self.head_k_dim, self.head_v_dim)

  def __call__(
    self,
    x: jax.Array,  # [B, T, D] normed input
    valid: jax.Array | None,  # [B, T] bool; None: every token is real
    conv_state: jax.Array | None,  # [B, K-1, C]; None: a fresh sequence
    state: jax.Array | None,  # [B, Hv, dk, dv] fp32; None: a fresh sequence
  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Mixes new tokens into the layer's state. Returns the output `[B, T, D]` and the new (conv, recurrent) state."""
    b, t, _ = x.shape
    conv_shape, state_shape = self.state_shapes(b)
    conv_state = jnp.zeros(conv_shape, x.dtype) if conv_state is None else conv_state
    state = jnp.zeros(state_shape, jnp.float32) if state is None else state
    mixed, conv_state = causal_conv(self.in_proj_qkv(x), self.conv1d.taps().astype(x.dtype), conv_state, valid)
    mixed = jax.nn.silu(mixed)  # [B, T, C]
    q, k, v = jnp.split(mixed, [self.key_dim, 2 * self.key_dim], axis=-1)
    q = q.reshape(b, t, self.num_k_heads, self.head_k_dim).astype(jnp.float32)
    k = k.reshape(b, t, self.num_k_heads, self.head_k_dim).astype(jnp.float32)
    v = v.reshape(b, t, self.num_v_heads, self.head_v_dim).astype(jnp.float32)
    q = l2_normalize(q) * self.head_k_dim**-0.5
    k = l2_normalize(k)
    group = self.num_v_heads // self.num_k_heads
    q, k = jnp.repeat(q, group, axis=2), jnp.repeat(k, group, axis=2)  # [B, T, Hv, dk]
    beta = jax.nn.sigmoid(self.in_proj_b(x).astype(jnp.float32))  # [B, T, Hv]
    a = self.in_proj_a(x).astype(jnp.float32) + self.dt_bias[...].astype(jnp.float32)
    g = -jnp.exp(self.A_log[...].astype(jnp.float32)) * jax.nn.softplus(a)
    if valid is not None:  # a masked token neither decays nor writes the state
      g, beta = jnp.where(valid[..., None], g, 0.0), jnp.where(valid[..., None], beta, 0.0)
    recurrent = self.form == "recurrent" or (self.form == "auto" and t == 1)
    if recurrent:
      out, state = recurrent_gated_delta_rule(q, k, v, g, beta, state)
    else:
      out, state = chunked_gated_delta_rule(q, k, v, g, beta, state, chunk=min(self.chunk, t))
    z = self.in_proj_z(x).reshape(b, t, self.num_v_heads, self.head_v_dim).astype(jnp.float32)
    out = (self.norm(out) * jax.nn.silu(z)).astype(x.dtype)  # [B, T, Hv, dv] normed in fp32, then gated
    return self.out_proj(out.reshape(b, t, self.value_dim)), (conv_state, state)
