"""Functional key/value cache: a pytree passed into and returned from the model, never stored in modules.

Slots are written left to right. A batch of prompts is left-padded; a padded slot is never attended, and each
example keeps its own rotary position counter, so an example's numbers do not depend on its batch-mates.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rmas_jax.models.arch import ArchConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
  """Keys and values of every layer plus the bookkeeping that makes padding exact.

  Attributes:
    k: keys `[L, B, K, S, hd]` (already rotated); heads before slots so one head's keys are contiguous.
    v: values `[L, B, K, S, hd]`.
    valid: `[B, S]` True where a slot holds a real token.
    end: int32 scalar, the next slot to write (shared by the batch).
    next_pos: `[B]` int32, the rotary position the next real token of each example takes.
  """

  k: jax.Array
  v: jax.Array
  valid: jax.Array
  end: jax.Array
  next_pos: jax.Array

  @classmethod
  def init(cls, cfg: ArchConfig, batch: int, length: int, dtype=jnp.float32) -> KVCache:
    """An empty cache of `length` slots."""
    shape = (cfg.num_layers, batch, cfg.num_kv_heads, length, cfg.head_dim)
    return cls(
      k=jnp.zeros(shape, dtype),
      v=jnp.zeros(shape, dtype),
      valid=jnp.zeros((batch, length), bool),
      end=jnp.zeros((), jnp.int32),
      next_pos=jnp.zeros((batch,), jnp.int32),
    )

  @property
  def length(self) -> int:
    return self.k.shape[3]


def slot_mask(
  query_slots: jax.Array,  # [T] int32
  key_slots: jax.Array,  # [S] int32
  valid: jax.Array,  # [B, S] bool
  window: int | None,
) -> jax.Array:
  """`[B, T, S]` causal mask over slots, restricted to valid keys and, if given, to the last `window` slots."""
  allowed = key_slots[None, :] <= query_slots[:, None]  # [T, S]
  if window is not None:
    allowed &= query_slots[:, None] - key_slots[None, :] < window
  return allowed[None, :, :] & valid[:, None, :]
