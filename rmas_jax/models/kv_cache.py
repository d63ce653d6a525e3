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
