"""Functional key/value cache: a pytree passed into and returned from the model, never stored in modules.

Slots are written left to right. A batch of prompts is left-padded; a padded slot is never attended, and each
example keeps its own rotary position counter, so an example's numbers do not depend on its batch-mates. Each
slot remembers its position, and sliding windows count positions, not slots: a slot that was masked or forgotten
(padding fed mid-sequence, tokens the sampler rewound) leaves a gap in the slots but not in the window.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rmas_jax.models.arch import ArchConfig
from rmas_jax.sharding.rules import CACHE_KV, CACHE_ROWS, CACHE_SLOTS, constrain


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
  """Keys and values of every layer plus the bookkeeping that makes padding exact.

  Attributes:
    k: keys `[L, B, K, S, hd]` (already rotated); heads before slots so one head's keys are contiguous.
    v: values `[L, B, K, S, hd]`.
    valid: `[B, S]` True where a slot holds a real token.
    pos: `[B, S]` int32 rotary position of each slot's token (meaningless where not valid).
    end: int32 scalar, the next slot to write (shared by the batch).
    next_pos: `[B]` int32, the rotary position the next real token of each example takes.
  """

  k: jax.Array
  v: jax.Array
  valid: jax.Array
  pos: jax.Array
  end: jax.Array
  next_pos: jax.Array

  @classmethod
  def init(cls, cfg: ArchConfig, batch: int, length: int, dtype=jnp.float32) -> KVCache:
    """An empty cache of `length` slots (under a mesh: split by batch and KV heads, see `rmas_jax.sharding`)."""
    shape = (cfg.num_layers, batch, cfg.num_kv_heads, length, cfg.head_dim)
    return cls(
      k=constrain(jnp.zeros(shape, dtype), CACHE_KV),
      v=constrain(jnp.zeros(shape, dtype), CACHE_KV),
      valid=constrain(jnp.zeros((batch, length), bool), CACHE_SLOTS),
      pos=constrain(jnp.zeros((batch, length), jnp.int32), CACHE_SLOTS),
      end=jnp.zeros((), jnp.int32),
      next_pos=constrain(jnp.zeros((batch,), jnp.int32), CACHE_ROWS),
    )

  @property
  def length(self) -> int:
    return self.k.shape[3]


def slot_mask(
  query_slots: jax.Array,  # [T] int32
  key_slots: jax.Array,  # [S] int32
  valid: jax.Array,  # [B, S] bool
  window: int | None,
  query_pos: jax.Array | None = None,  # [B, T] int32
  key_pos: jax.Array | None = None,  # [B, S] int32
) -> jax.Array:
  """`[B, T, S]` causal mask over slots, restricted to valid keys and, if given, to keys fewer than `window`
  positions behind the query."""
  allowed = (key_slots[None, :] <= query_slots[:, None])[None] & valid[:, None, :]  # [B, T, S]
  if window is not None:
    allowed &= query_pos[:, :, None] - key_pos[:, None, :] < window
  return allowed


def extend(cache, length: int):
  """`cache` (a `KVCache` or a Qwen3.5 `HybridCache`) with empty slots appended up to `length` slots.

  What was written keeps its slots, positions and counters, so a prefix prefilled once can start any number of
  continuations: each extends a copy (caches are values) and writes from `cache.end` on. The new slots are
  invalid; a recurrent state (the hybrid cache's `conv`/`state`) has no slots and is kept as it is.
  """
  extra = length - cache.length
  if extra < 0:
    raise ValueError(f"cannot shrink a cache of {cache.length} slots to {length}")
  if extra == 0:
    return cache
  slots = lambda x, axis: jnp.pad(x, [(0, extra if a == axis else 0) for a in range(x.ndim)])  # noqa: E731
  return dataclasses.replace(
    cache,
    k=constrain(slots(cache.k, 3), CACHE_KV),  # [L, B, K, S, hd]
    v=constrain(slots(cache.v, 3), CACHE_KV),
    valid=constrain(slots(cache.valid, 1), CACHE_SLOTS),  # padded with False: never attended
    pos=constrain(slots(cache.pos, 1), CACHE_SLOTS),
  )


# The batch axis of each cache field (`end` is shared by the batch and has none).
_ROW_AXIS = dict(k=1, v=1, conv=1, state=1, valid=0, pos=0, next_pos=0)


def repeat_rows(cache, repeats: int):
  """Each example's row `repeats` times, next to each other (`jnp.repeat` on the batch axis of every field), for
  several samples drawn from one prefilled prompt."""
  fields = {f.name: getattr(cache, f.name) for f in dataclasses.fields(cache) if f.name in _ROW_AXIS}
  return dataclasses.replace(cache, **{n: jnp.repeat(x, repeats, axis=_ROW_AXIS[n]) for n, x in fields.items()})
