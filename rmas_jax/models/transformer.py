"""The shared decoder-only transformer: Llama 3.x, Qwen2/2.5, Qwen3, Mistral and Gemma 3 text by flags.

Layers are stacked (`nnx.vmap` at construction) and run under `jax.lax.scan`, so compile time does not grow with
depth. Gemma 3's local/global pattern is scanned too: each layer receives its type as a scanned flag and picks
its rotary table and mask from the two precomputed ones.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rmas_jax.models.arch import ArchConfig
from rmas_jax.models.kv_cache import KVCache, slot_mask
from rmas_jax.models.layers import MLP, Attention, RMSNorm, rope_inv_freq, rope_tables


class DecoderLayer(nnx.Module):
  """Pre-norm residual block; with `sandwich_norms` (Gemma 3) the sub-layer outputs are normed too."""

  def __init__(self, cfg: ArchConfig, *, dtype, rngs: nnx.Rngs):
    norm = dict(eps=cfg.rms_norm_eps, offset=cfg.norm_offset, param_dtype=dtype)
    self.input_layernorm = RMSNorm(cfg.hidden_size, **norm)
    self.self_attn = Attention(cfg, dtype=dtype, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size, **norm)
    self.mlp = MLP(cfg, dtype=dtype, rngs=rngs)
    if cfg.sandwich_norms:
      self.pre_feedforward_layernorm = RMSNorm(cfg.hidden_size, **norm)
      self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, **norm)
    else:
      self.pre_feedforward_layernorm = self.post_feedforward_layernorm = None

  def __call__(self, x, cos, sin, mask, cache_k, cache_v, write_at):
    """One layer over new tokens `x [B, T, D]`; returns the output and the new keys/values `[B, T, K, hd]`."""
    h = self.input_layernorm(x)
    k_new, v_new = self.self_attn.project_kv(h, cos, sin)
    keys = jax.lax.dynamic_update_slice_in_dim(cache_k, k_new.astype(cache_k.dtype), write_at, axis=1)
    values = jax.lax.dynamic_update_slice_in_dim(cache_v, v_new.astype(cache_v.dtype), write_at, axis=1)
    h = self.self_attn(h, cos, sin, keys, values, mask)
    if self.pre_feedforward_layernorm is None:
      x = x + h
      x = x + self.mlp(self.post_attention_layernorm(x))
    else:
      x = x + self.post_attention_layernorm(h)
      x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
    return x, (k_new.astype(cache_k.dtype), v_new.astype(cache_v.dtype))


@dataclasses.dataclass
class DecoderOutput:
  """What one call of the model returns.

  Attributes:
    hidden: final-norm hidden states `[B, T, D]` (HF's `hidden_states[-1]`).
    logits: `[B, T, V]` in fp32, or None when not asked for.
    cache: the updated cache, or None when called without one.
  """

  hidden: jax.Array
  logits: jax.Array | None
  cache: KVCache | None


jax.tree_util.register_dataclass(DecoderOutput, data_fields=["hidden", "logits", "cache"], meta_fields=[])


class CausalLM(nnx.Module):
  """Embeddings, scanned decoder layers, final norm and (tied or separate) LM head."""

  def __init__(self, cfg: ArchConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.cfg = cfg
    self.dtype = dtype
    self.embed_tokens = nnx.Embed(
      cfg.vocab_size,
      cfg.hidden_size,
      dtype=dtype,
      param_dtype=dtype,
      embedding_init=nnx.initializers.normal(0.02),
      rngs=rngs,
    )

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make_layers(rngs):
      return DecoderLayer(cfg, dtype=dtype, rngs=rngs)

    self.layers = make_layers(rngs)
    self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, offset=cfg.norm_offset, param_dtype=dtype)
    if cfg.tie_embeddings:
      self.lm_head = None
    else:  # stored [V, D] like the embedding, so both heads are the same fast einsum
      self.lm_head = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (cfg.vocab_size, cfg.hidden_size), dtype))

  def embed(self, input_ids: jax.Array) -> jax.Array:
    """Input embeddings `[B, T, D]` of token ids, scaled by sqrt(D) where the family does so."""
    x = self.embed_tokens.embedding[...][input_ids].astype(self.dtype)
    if self.cfg.embed_scale:
      x = x * jnp.asarray(self.cfg.hidden_size**0.5, self.dtype)
    return x

  def input_embedding_matrix(self) -> jax.Array:
    """The token embedding table `[V, D]` as the model sees it (scaled where the family scales)."""
    emb = self.embed_tokens.embedding[...]
    return emb * jnp.asarray(self.cfg.hidden_size**0.5, emb.dtype) if self.cfg.embed_scale else emb

  def logits(self, hidden: jax.Array) -> jax.Array:
    """LM-head logits `[B, T, V]` in fp32 from final-norm hidden states."""
    head = self.embed_tokens.embedding[...] if self.lm_head is None else self.lm_head[...]
    out = jnp.einsum("btd,vd->btv", hidden.astype(head.dtype), head, preferred_element_type=jnp.float32)
    if self.cfg.final_logit_softcap is not None:
      cap = self.cfg.final_logit_softcap
      out = jnp.tanh(out / cap) * cap
    return out

  def __call__(
    self,
    input_ids: jax.Array | None = None,  # [B, T] int32
    *,
    inputs_embeds: jax.Array | None = None,  # [B, T, D]
    attention_mask: jax.Array | None = None,  # [B, T] bool/int, 0 for left padding
    cache: KVCache | None = None,
    return_logits: bool = True,
  ) -> DecoderOutput:
    """Runs new tokens through the model, optionally appending them to a KV cache.

    Args:
      input_ids: token ids; exactly one of `input_ids` and `inputs_embeds` must be given.
      inputs_embeds: input vectors fed in place of token embeddings (not scaled).
      attention_mask: 1 for real tokens, 0 for padding; defaults to all ones.
      cache: cache to extend; the new tokens take slots `cache.end .. cache.end + T - 1`.
      return_logits: also compute the LM head.

    Returns:
      A `DecoderOutput` with final-norm hidden states, optional logits and the updated cache.
    """
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("pass exactly one of input_ids and inputs_embeds")
    x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(self.dtype)
    b, t, _ = x.shape
    new_valid = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
    counted = jnp.cumsum(new_valid.astype(jnp.int32), axis=1)  # [B, T]

    if cache is None:
      start, base_pos = jnp.zeros((), jnp.int32), jnp.zeros((b,), jnp.int32)
      valid = new_valid
      kv_shape = (self.cfg.num_layers, b, t, self.cfg.num_kv_heads, self.cfg.head_dim)
      cache_k = cache_v = jnp.zeros(kv_shape, self.dtype)
    else:
      start, base_pos = cache.end, cache.next_pos
      valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, new_valid, start, axis=1)
      cache_k, cache_v = cache.k, cache.v
    positions = base_pos[:, None] + jnp.maximum(counted - 1, 0)  # [B, T]
    query_slots = start + jnp.arange(t, dtype=jnp.int32)

    cfg = self.cfg
    cos_g, sin_g = rope_tables(positions, rope_inv_freq(cfg.rope_global, cfg.head_dim))
    cos_l, sin_l = rope_tables(positions, rope_inv_freq(cfg.rope_local or cfg.rope_global, cfg.head_dim))
    is_sliding = np.array([kind == "sliding_attention" for kind in cfg.layer_types])
    mask_full = slot_mask(query_slots, valid, None)
    mask_slide = slot_mask(query_slots, valid, self.cfg.sliding_window)

    graphdef, layer_state = nnx.split(self.layers)

    def body(h, xs):
      state, sliding, k_layer, v_layer = xs
      layer = nnx.merge(graphdef, state)
      cos = jnp.where(sliding, cos_l, cos_g)
      sin = jnp.where(sliding, sin_l, sin_g)
      mask = jnp.where(sliding, mask_slide, mask_full)
      return layer(h, cos, sin, mask, k_layer, v_layer, start)

    x, (k_new, v_new) = jax.lax.scan(body, x, (layer_state, jnp.asarray(is_sliding), cache_k, cache_v))
    hidden = self.norm(x)
    logits = self.logits(hidden) if return_logits else None

    new_cache = None
    if cache is not None:
      new_cache = KVCache(
        k=jax.lax.dynamic_update_slice_in_dim(cache.k, k_new, start, axis=2),
        v=jax.lax.dynamic_update_slice_in_dim(cache.v, v_new, start, axis=2),
        valid=valid,
        end=start + t,
        next_pos=base_pos + counted[:, -1],
      )
    return DecoderOutput(hidden=hidden, logits=logits, cache=new_cache)
