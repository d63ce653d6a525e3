"""Jacobian norms of a map `R: R^{d_in} -> R^{d_out}` at a point, from Jacobian-vector products alone.

`spectral_norm` runs power iteration on `JᵀJ`: each iteration is one forward-mode product `J v` (`jax.linearize`,
i.e. `jax.jvp` with the linearisation kept) and one reverse-mode product `Jᵀ u` (`jax.vjp`). The dense Jacobian is
never formed, so it works at vocabulary scale (a 262k × 640 LM head inside the map costs two mat-vecs per
iteration). `rms_gain` is the gain of a random direction, `‖J‖_F / √d_in`, which says how much of a gradient gets
through on average rather than along the best direction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp


def _unit(v: jax.Array) -> jax.Array:
  return v / jnp.maximum(jnp.linalg.norm(v), 1e-30)


def spectral_norm(fn: Callable[[jax.Array], jax.Array], x: jax.Array, key: jax.Array, iters: int = 30) -> dict:
  """The largest singular value of `∂fn/∂x` at `x` by power iteration.

  Args:
    fn: a map of one vector `[d_in] -> [d_out]`.
    x: the point `[d_in]`.
    key: the random start vector's key.
    iters: power iterations (each one JVP and one VJP).

  Returns:
    `sigma` (the estimate, `‖J v‖` for the final unit `v`; never above the true norm) and `change` (its relative
    change over the last iteration; small once converged).
  """
  x = x.astype(jnp.float32)
  _, jvp = jax.linearize(fn, x)
  _, vjp = jax.vjp(fn, x)

  def step(v, _):
    jv = jvp(v)
    (jtjv,) = vjp(jv)
    return _unit(jtjv), jnp.linalg.norm(jv)

  v0 = _unit(jax.random.normal(key, x.shape, jnp.float32))
  v, sigmas = jax.lax.scan(step, v0, None, length=iters)
  sigma = jnp.linalg.norm(jvp(v))
  previous = sigmas[-1]
  return dict(sigma=sigma, change=jnp.abs(sigma - previous) / jnp.maximum(sigma, 1e-30))


def rms_gain(fn: Callable[[jax.Array], jax.Array], x: jax.Array, key: jax.Array, probes: int = 8) -> jax.Array:
  """`sqrt(mean ‖J v‖²)` over random unit directions `v`: an unbiased estimate of `‖J‖_F² / d_in` under the root."""
  x = x.astype(jnp.float32)
  _, jvp = jax.linearize(fn, x)
  vs = jax.vmap(_unit)(jax.random.normal(key, (probes, *x.shape), jnp.float32))
  return jnp.sqrt(jnp.mean(jax.vmap(lambda v: jnp.sum(jnp.square(jvp(v))))(vs)))


def batched_norms(fn: Callable, params, xs: jax.Array, key: jax.Array, iters: int = 30, probes: int = 8) -> dict:
  """`spectral_norm` and `rms_gain` of `x -> fn(params, x)` at each row of `xs` `[n, d_in]`; arrays `[n]`.

  `params` (e.g. the module's `nnx.State`) is an argument of the compiled function, not a constant folded into it,
  so a large embedding table is not copied into the program."""
  keys = jax.random.split(key, (xs.shape[0], 2))

  @jax.jit
  def run(params, xs, keys):
    def one(x, k):
      f = lambda x: fn(params, x)  # noqa: E731
      return dict(spectral_norm(f, x, k[0], iters), rms=rms_gain(f, x, k[1], probes))

    return jax.vmap(one)(xs, keys)

  return run(params, xs, keys)


@functools.partial(jax.jit, static_argnums=2)
def _matrix_power_iteration(a: jax.Array, v: jax.Array, iters: int) -> jax.Array:
  v = jax.lax.fori_loop(0, iters, lambda _, v: _unit(a.T @ (a @ v)), v)
  return jnp.linalg.norm(a @ v)


def matrix_norm(a: jax.Array, key: jax.Array, iters: int = 50) -> float:
  """`‖A‖₂` of a matrix `[n, d]` by power iteration on `AᵀA` (a 262k-row embedding table stays a mat-vec)."""
  v = _unit(jax.random.normal(key, (a.shape[1],), jnp.float32))
  return float(_matrix_power_iteration(a.astype(jnp.float32), v, iters))
