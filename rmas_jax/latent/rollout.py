"""Latent thoughts of one agent (paper eq. 1, §3.2 step 1), with a KV cache.

The prompt is prefilled once; then each latent step feeds `R_in(h)` of the previous last-layer state back as
the next input vector, appending one slot to the cache. Cost is linear in the number of steps, where the public
release re-runs the whole sequence at every step (quadratic); the numbers are the same (tested against that
re-run). The loop is a `jax.lax.scan` of static length, so it compiles once and is differentiable end to end.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rmas_jax.links.recursive_link import RecursiveLink
from rmas_jax.models.kv_cache import KVCache
from rmas_jax.models.transformer import CausalLM


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Rollout:
  """What an agent's latent thinking produces.

  Attributes:
    hidden: `[B, m, D]` the raw last-layer states `h_t .. h_{t+m-1}` (the release's `hs`); the vectors the agent
      fed itself are `R_in` of the first m-1 of them, and what it sends on is `R_out(R_in(hidden))`.
    cache: the cache after the prompt and the m-1 fed-back vectors.
  """

  hidden: jax.Array
  cache: KVCache


def latent_rollout(
  model: CausalLM,
  inner: RecursiveLink,
  inputs_embeds: jax.Array,  # [B, T, D] the prompt (token embeddings with any received latents in place)
  attention_mask: jax.Array,  # [B, T] left padding
  cache: KVCache,
  steps: int,
  *,
  remat: bool = False,
) -> Rollout:
  """Runs `steps` latent steps of one agent.

  Args:
    model: the agent's frozen backbone.
    inner: the agent's inner link.
    inputs_embeds: prompt input vectors; the last slot must be a real token (left padding).
    attention_mask: 1 for real slots.
    cache: an empty (or prefix-filled) cache with room for `T + steps - 1` more slots.
    steps: m, the number of latent thoughts (>= 1).
    remat: recompute each step's activations in the backward pass instead of storing them.
  """
  if steps < 1:
    raise ValueError(f"latent steps must be >= 1, got {steps}")
  out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=cache, return_logits=False)
  first = out.hidden[:, -1]  # [B, D]

  def step(carry, _):
    h, cache = carry
    fed = inner(h).astype(model.dtype)[:, None, :]  # [B, 1, D]
    nxt = model(inputs_embeds=fed, cache=cache, return_logits=False)
    return (nxt.hidden[:, 0], nxt.cache), nxt.hidden[:, 0]

  body = jax.checkpoint(step) if remat else step
  (_, cache), rest = jax.lax.scan(body, (first, out.cache), None, length=steps - 1)  # rest: [m-1, B, D]
  hidden = jnp.concatenate([first[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)
  return Rollout(hidden=hidden, cache=cache)


def latent_rollout_uncached(
  model: CausalLM, inner: RecursiveLink, inputs_embeds: jax.Array, attention_mask: jax.Array, steps: int
) -> jax.Array:
  """The release's way, kept as the reference: every step re-runs the whole, growing sequence. `[B, m, D]`."""
  embeds, mask, states = inputs_embeds, attention_mask, []
  for _ in range(steps):
    h = model(inputs_embeds=embeds, attention_mask=mask, return_logits=False).hidden[:, -1]
    states.append(h)
    embeds = jnp.concatenate([embeds, inner(h).astype(embeds.dtype)[:, None]], axis=1)
    mask = jnp.concatenate([mask, jnp.ones_like(mask[:, :1])], axis=1)
  return jnp.stack(states, axis=1)
