"""RecursiveLinks: the small trainable maps between latent spaces (paper §3.1).

The inner link of an agent maps its last-layer hidden state back to its own input-embedding space; the outer
link of an edge A→B maps A's (inner-linked) latents into B's input-embedding space. What A sends to B is
`outer_AB(inner_A(h))`.

Two forms:
  * `official`: as the public release builds them — LayerNorm-wrapped residual MLPs, exact (erf) GELU,
    LayerNorm eps 1e-5, outer hidden width 2·d_out, PyTorch-default uniform init.
  * `paper`: eq. 3 `R_in(h) = h + W2 σ(W1 h)` and eq. 4 `R_out(h) = W3 h + W2 σ(W1 h)` as printed.
and, for the Table 4 ablation, the designs `1-layer`, `res+1-layer`, `2-layer`, `res+2-layer` (the last is the
paper form).

Link weights are `LinkParam`s, a Variable type of their own, so a system's state splits cleanly into trainable
links and frozen backbones (`nnx.split(system, LinkParam, ...)`). They are always fp32.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

Form = Literal["official", "paper"]
Design = Literal["1-layer", "res+1-layer", "2-layer", "res+2-layer"]
FORMS: tuple[str, ...] = ("official", "paper")
DESIGNS: tuple[str, ...] = ("1-layer", "res+1-layer", "2-layer", "res+2-layer")
OUTER_INITS: tuple[str, ...] = ("torch", "identity")


class LinkParam(nnx.Param):
  """A trainable RecursiveLink weight (backbone weights are plain `nnx.Param`)."""


def _torch_uniform(key, shape, fan_in: int):
  # PyTorch's nn.Linear default (kaiming_uniform with a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases too.
  bound = 1.0 / math.sqrt(fan_in)
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


class LinkLinear(nnx.Module):
  """`x @ kernel + bias` with `[in, out]` kernel, PyTorch-default init, fp32 `LinkParam`s."""

  def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs):
    self.kernel = LinkParam(_torch_uniform(rngs.params(), (din, dout), din))
    self.bias = LinkParam(_torch_uniform(rngs.params(), (dout,), din))

  def __call__(self, x: jax.Array) -> jax.Array:
    return x @ self.kernel[...] + self.bias[...]


class LinkLayerNorm(nnx.Module):
  """LayerNorm with PyTorch's defaults (eps 1e-5, weight 1, bias 0), fp32 `LinkParam`s."""

  def __init__(self, dim: int, *, eps: float = 1e-5):
    self.eps = eps
    self.weight = LinkParam(jnp.ones((dim,), jnp.float32))
    self.bias = LinkParam(jnp.zeros((dim,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.weight[...] + self.bias[...]


def _gelu(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=False)


class RecursiveLink(nnx.Module):
  """One link from a `d_in` space to a `d_out` space (inner links have `d_in == d_out`).

  Args:
    d_in: width of what the link reads.
    d_out: width of what it writes.
    form: `official` or `paper`.
    design: for `paper` form, one of the Table 4 designs (default `res+2-layer`, the paper's).
    outer: an outer link (`R_out`, with its cross-space residual `W3`) rather than an inner one (`R_in`).
    rngs: parameter initialisation.
    output_scale: a fixed factor on the output (not trained). `official` links end in a LayerNorm, so their
      outputs have norm about sqrt(d_out) whatever the receiver's token embeddings are; `embedding_scale` gives the
      factor that brings that to the receiver's mean token-embedding norm. Being a constant after the last
      LayerNorm, it folds exactly into that LayerNorm's weight and bias (`folded_post_ln`) for the release's files.
  """

  def __init__(
    self,
    d_in: int,
    d_out: int,
    *,
    form: Form = "official",
    design: Design = "res+2-layer",
    outer: bool = False,
    rngs: nnx.Rngs,
    output_scale: float = 1.0,
  ):
    if form not in FORMS:
      raise ValueError(f"link form {form!r}: expected one of {FORMS}")
    if design not in DESIGNS:
      raise ValueError(f"link design {design!r}: expected one of {DESIGNS}")
    if not outer and d_in != d_out:
      raise ValueError(f"an inner link maps a space to itself; got d_in={d_in}, d_out={d_out}")
    if form == "official" and design != "res+2-layer":
      raise ValueError("the official form has one design; the Table 4 designs use form='paper'")
    if not output_scale > 0:
      raise ValueError(f"link output_scale {output_scale!r}: expected > 0")
    self.form, self.design, self.outer = form, design, outer
    self.output_scale = float(output_scale)
    two_layer = design.endswith("2-layer")
    hidden = 2 * d_out if (outer and form == "official") else d_out
    self.proj1 = LinkLinear(d_in, hidden if two_layer else d_out, rngs=rngs)
    self.proj2 = LinkLinear(hidden, d_out, rngs=rngs) if two_layer else None
    residual = design.startswith("res+")
    # The paper's outer residual is W3 h: a learned map across widths. Inner links add h itself.
    self.residual_proj = LinkLinear(d_in, d_out, rngs=rngs) if (outer and residual) else None
    self.residual = residual
    if form == "official":
      self.pre_ln, self.post_ln = LinkLayerNorm(d_in), LinkLayerNorm(d_out)
    else:
      self.pre_ln = self.post_ln = None

  def __call__(self, h: jax.Array) -> jax.Array:
    """Maps `[..., d_in]` to `[..., d_out]` in fp32."""
    h = h.astype(jnp.float32)
    x = self.pre_ln(h) if self.pre_ln is not None else h
    y = self.proj1(x)
    if self.proj2 is not None:
      y = self.proj2(_gelu(y))
    if self.residual:
      # official outer: the residual reads the un-normalised input, as the release does
      y = y + (self.residual_proj(h) if self.residual_proj is not None else h)
    y = self.post_ln(y) if self.post_ln is not None else y
    return y * self.output_scale if self.output_scale != 1.0 else y

  def folded_post_ln(self) -> tuple[jax.Array, jax.Array]:
    """The final LayerNorm's `(weight, bias)` with `output_scale` folded in: the same link with a scale of 1."""
    if self.post_ln is None:
      raise ValueError("only official-form links end in a LayerNorm to fold the output scale into")
    return self.post_ln.weight[...] * self.output_scale, self.post_ln.bias[...] * self.output_scale


def embedding_scale(d_out: int, mean_token_norm: float) -> float:
  """The `output_scale` that brings an `official` link's output (a LayerNorm of width `d_out`, norm about
  sqrt(d_out) while its weight is 1 and bias 0) to the receiver's mean token-embedding norm."""
  return float(mean_token_norm) / math.sqrt(d_out)


def inner_link(d: int, *, form: Form = "official", design: Design = "res+2-layer", rngs: nnx.Rngs,
               output_scale: float = 1.0) -> RecursiveLink:  # fmt: skip
  """An agent's inner link `R_in: R^d -> R^d`."""
  return RecursiveLink(d, d, form=form, design=design, outer=False, rngs=rngs, output_scale=output_scale)


def outer_link(d_in: int, d_out: int, *, form: Form = "official", design: Design = "res+2-layer", rngs: nnx.Rngs,
               output_scale: float = 1.0, init: str = "torch") -> RecursiveLink:  # fmt: skip
  """An edge's outer link `R_out: R^d_in -> R^d_out`; `init` is one of `OUTER_INITS` (see `start_as_identity`)."""
  if init not in OUTER_INITS:
    raise ValueError(f"outer link init {init!r}: expected one of {OUTER_INITS}")
  link = RecursiveLink(d_in, d_out, form=form, design=design, outer=True, rngs=rngs, output_scale=output_scale)
  if init == "identity":
    start_as_identity(link)
  return link


def start_as_identity(link: RecursiveLink) -> None:
  """Sets an outer link of equal widths to pass its input on: the residual map `W3` the identity with no bias, the
  MLP's last layer zero (its first keeps its random init, so the MLP starts learning at once, as LoRA's B = 0 does).
  The official form's final LayerNorm then gives `LayerNorm(h) * output_scale`. The release has no such init: its
  fresh outer links are random maps, which a receiver reads as noise until training has found the map."""
  d_in = link.proj1.kernel.shape[0]
  last = link.proj2 if link.proj2 is not None else link.proj1
  d_out = last.kernel.shape[1]
  if link.residual_proj is None or d_in != d_out:
    raise ValueError(f"links.outer_init='identity': needs a residual design and equal widths; this outer link is "
                     f"{link.design}, {d_in} -> {d_out}")  # fmt: skip
  link.residual_proj.kernel[...] = jnp.eye(d_in, dtype=jnp.float32)
  link.residual_proj.bias[...] = jnp.zeros((d_out,), jnp.float32)
  last.kernel[...] = jnp.zeros_like(last.kernel[...])
  last.bias[...] = jnp.zeros_like(last.bias[...])
