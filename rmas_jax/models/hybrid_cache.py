"""Decode state of a hybrid model (Qwen3.5): a key/value cache for the full-attention layers plus the convolution
and recurrent states of the Gated DeltaNet layers.

It carries the same bookkeeping fields as `KVCache` (`valid`, `pos`, `end`, `next_pos`, `length`), so the sampler's
loops run on it unchanged. The recurrent part cannot forget a token by masking its slot: whatever drops generated
tokens and continues (`decode_state.rewind` followed by more decoding) must rebuild it; `rewindable` says so.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class HybridCache:
  """Attention keys/values, DeltaNet states and slot bookkeeping.

  Attributes:
    k: keys of the attention layers `[La, B, K, S, hd]` (already rotated).
    v: values `[La, B, K, S, hd]`.
    conv: convolution states of the DeltaNet layers `[Ld, B, taps - 1, C]`: each row's last real inputs.
    state: recurrent states `[Ld, B, Hv, dk, dv]`, always fp32.
    valid: `[B, S]` True where a slot holds a real token.
    pos: `[B, S]` int32 rotary position of each slot's token.
    end: int32 scalar, the next slot to write.
    next_pos: `[B]` int32, the rotary position the next real token of each example takes.
  """

  k: jax.Array
  v: jax.Array
  conv: jax.Array
  state: jax.Array
  valid: jax.Array
  pos: jax.Array
  end: jax.Array
  next_pos: jax.Array

  rewindable: ClassVar[bool] = False  # masking a slot does not take a token back out of `state`

  @classmethod
  def init(cls, cfg, batch: int, length: int, dtype=jnp.float32) -> HybridCache:
    """An empty cache of `length` attention slots for a `Qwen3_5Config`."""
    kv = (cfg.num_attention_layers, batch, cfg.num_kv_heads, length, cfg.head_dim)
    conv = (cfg.num_linear_layers, batch, cfg.linear_conv_kernel_dim - 1, cfg.linear_conv_dim)
    state = (cfg.num_linear_layers, batch, cfg.linear_num_value_heads, cfg.linear_key_head_dim,
             cfg.linear_value_head_dim)  # fmt: skip
    return cls(
      k=jnp.zeros(kv, dtype),
      v=jnp.zeros(kv, dtype),
      conv=jnp.zeros(conv, dtype),
      state=jnp.zeros(state, jnp.float32),
      valid=jnp.zeros((batch, length), bool),
      pos=jnp.zeros((batch, length), jnp.int32),
      end=jnp.zeros((), jnp.int32),
      next_pos=jnp.zeros((batch,), jnp.int32),
    )

  @property
  def length(self) -> int:
    return self.valid.shape[1]
