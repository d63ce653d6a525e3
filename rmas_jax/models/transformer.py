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
from rmas_jax.sharding.rules import ACTIVATION, constrain


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

  def __call__(self, x, cos, sin, mask, cache_k, cache_v):
    """One layer over new tokens `x [B, T, D]` with this layer's cache `[B, K, S, hd]` (or None).

    Returns the output and the new keys/values `[B, K, T, hd]`.
    """
    h = self.input_layernorm(x)
    k_new, v_new = self.self_attn.project_kv(h, cos, sin)  # [B, K, T, hd]
    if cache_k is not None:
      k_new, v_new = k_new.astype(cache_k.dtype), v_new.astype(cache_v.dtype)
    h = self.self_attn(h, cos, sin, k_new, v_new, mask, cache_k, cache_v)
    if self.pre_feedforward_layernorm is None:
      x = x + h
      x = x + self.mlp(self.post_attention_layernorm(x))
    else:
      x = x + self.post_attention_layernorm(h)
      x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
    # Under a mesh the residual stream stays split by batch between layers (a no-op without one).
    return constrain(x, ACTIVATION), (k_new, v_new)


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
  """Embeddings, decoder layers, final norm and (tied or separate) LM head.

  With `scan_layers` the layers' weights are stacked `[L, ...]` and run by `jax.lax.scan`: one compiled layer
  body, the layout for accelerators and for training through many steps. Without it they are separate arrays
  run by a Python loop: XLA's CPU backend copies a scanned layer's weight slice before each matmul, which makes
  weight-bound one-token steps 2-3x slower (see benchmarks/), so CPU inference defaults to this form.
  """

  def __init__(self, cfg: ArchConfig, *, dtype=jnp.float32, scan_layers: bool = True, rngs: nnx.Rngs):
    self.cfg = cfg
    self.dtype = dtype
    self.scan_layers = scan_layers
    self.embed_tokens = nnx.Embed(
      cfg.vocab_size,
      cfg.hidden_size,
      dtype=dtype,
      param_dtype=dtype,
      embedding_init=nnx.initializers.normal(0.02),
      rngs=rngs,
    )

    if scan_layers:

      @nnx.split_rngs(splits=cfg.num_layers)
      @nnx.vmap(in_axes=(0,), out_axes=0)
      def make_layers(rngs):
        return DecoderLayer(cfg, dtype=dtype, rngs=rngs)

      self.layers = make_layers(rngs)
    else:
      self.layers = nnx.List([DecoderLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_layers)])
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

  def init_cache(self, batch: int, length: int) -> KVCache:
    """An empty KV cache of `length` slots (every family's model has this method; Qwen3.5's adds recurrent
    state)."""
    return KVCache.init(self.cfg, batch, length, self.dtype)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """LM-head logits `[B, T, V]` in fp32 from final-norm hidden states."""
    head = self.embed_tokens.embedding[...] if self.lm_head is None else self.lm_head[...]
    out = jnp.einsum("btd,vd->btv", hidden.astype(head.dtype), head, preferred_element_type=jnp.float32)
    if self.cfg.final_logit_softcap is not None:
      cap = self.cfg.final_logit_softcap
      out = jnp.tanh(out / cap) * cap
    return out

  @staticmethod
  def _layer_inputs(tables: dict, sliding) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rotary tables and mask of one layer; `sliding` is a Python bool when unrolled, a traced one when scanned."""
    if isinstance(sliding, bool):
      names = ("cos_l", "sin_l", "mask_slide") if sliding else ("cos_g", "sin_g", "mask_full")
      return tuple(tables[n] for n in names)
    pick = lambda local, full: jnp.where(sliding, tables[local], tables[full])  # noqa: E731
    return pick("cos_l", "cos_g"), pick("sin_l", "sin_g"), pick("mask_slide", "mask_full")

  def _scanned_layers(self, x, tables, is_sliding, cache, start):
    graphdef, layer_state = nnx.split(self.layers)
    caches = (None, None) if cache is None else (cache.k, cache.v)

    def body(h, xs):
      state, sliding, k_layer, v_layer = xs
      cos, sin, mask = self._layer_inputs(tables, sliding)
      return nnx.merge(graphdef, state)(h, cos, sin, mask, k_layer, v_layer)

    x, (k_new, v_new) = jax.lax.scan(body, x, (layer_state, jnp.asarray(is_sliding), *caches))
    if cache is None:
      return x, None, None
    update = lambda full, new: jax.lax.dynamic_update_slice_in_dim(full, new, start, axis=3)  # noqa: E731
    return x, update(cache.k, k_new), update(cache.v, v_new)

  def _unrolled_layers(self, x, tables, is_sliding, cache, start):
    new_k, new_v = [], []
    for i, layer in enumerate(self.layers):
      cos, sin, mask = self._layer_inputs(tables, bool(is_sliding[i]))
      k_layer, v_layer = (None, None) if cache is None else (cache.k[i], cache.v[i])
      x, (k_new, v_new) = layer(x, cos, sin, mask, k_layer, v_layer)
      new_k.append(k_new)
      new_v.append(v_new)
    if cache is None:
      return x, None, None
    # One write after every layer has read its slice: a write per layer, interleaved with the reads, makes XLA
    # copy the whole cache at each layer (measured: 23 -> 44 ms per SmolLM2 step at 512 slots).
    update = lambda full, new: jax.lax.dynamic_update_slice_in_dim(full, jnp.stack(new), start, axis=3)  # noqa: E731
    return x, update(cache.k, new_k), update(cache.v, new_v)

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
    x = constrain(x, ACTIVATION)  # data parallel from the first layer on, however the inputs arrived
    b, t, _ = x.shape
    new_valid = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
    counted = jnp.cumsum(new_valid.astype(jnp.int32), axis=1)  # [B, T]

    if cache is None:
      start, base_pos = jnp.zeros((), jnp.int32), jnp.zeros((b,), jnp.int32)
      valid = new_valid
    else:
      start, base_pos = cache.end, cache.next_pos
      valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, new_valid, start, axis=1)
    positions = base_pos[:, None] + jnp.maximum(counted - 1, 0)  # [B, T]
    slot_pos = None if cache is None else jax.lax.dynamic_update_slice_in_dim(cache.pos, positions, start, axis=1)
    query_slots = start + jnp.arange(t, dtype=jnp.int32)

    cfg = self.cfg
    cos_g, sin_g = rope_tables(positions, rope_inv_freq(cfg.rope_global, cfg.head_dim))
    cos_l, sin_l = rope_tables(positions, rope_inv_freq(cfg.rope_local or cfg.rope_global, cfg.head_dim))
    is_sliding = np.array([kind == "sliding_attention" for kind in cfg.layer_types])
    # Keys are the cached slots (if any) followed by this call's tokens, in the order the attention scores them.
    if cache is None:
      key_slots, key_valid, key_pos = query_slots, new_valid, positions
    else:
      key_slots = jnp.concatenate([jnp.arange(cache.length, dtype=jnp.int32), query_slots])
      key_valid = jnp.concatenate([cache.valid, new_valid], axis=1)
      key_pos = jnp.concatenate([cache.pos, positions], axis=1)
    mask_full = slot_mask(query_slots, key_slots, key_valid, None)
    mask_slide = slot_mask(query_slots, key_slots, key_valid, self.cfg.sliding_window, positions, key_pos)

    tables = dict(cos_l=cos_l, sin_l=sin_l, cos_g=cos_g, sin_g=sin_g, mask_slide=mask_slide, mask_full=mask_full)
    run = self._scanned_layers if self.scan_layers else self._unrolled_layers
    x, k_all, v_all = run(x, tables, is_sliding, cache, start)
    hidden = self.norm(x)
    logits = self.logits(hidden) if return_logits else None

    new_cache = None
    if cache is not None:
      new_cache = KVCache(
        k=k_all, v=v_all, valid=valid, pos=slot_pos, end=start + t, next_pos=base_pos + counted[:, -1]
      )
    return DecoderOutput(hidden=hidden, logits=logits, cache=new_cache)
