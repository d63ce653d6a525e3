"""Qwen3.5 text decoder: a hybrid of Gated DeltaNet layers and gated full-attention layers (usually three of the
first for each one of the second), with zero-centred RMSNorms (`1 + w`) and partial rotary embeddings.

It has the interface of `transformer.CausalLM` (`embed`, `logits`, `input_embedding_matrix`, `init_cache`, and a
call returning a `DecoderOutput`), so latent rollouts, training and the sampler use it as they use the others. Its
decode state is a `HybridCache`.

With `scan_layers` the layer cycle (the shortest period of `layer_types`) is one module whose weights are stacked
over cycles and run by `jax.lax.scan`; without it each layer has its own weights and a Python loop runs them.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rmas_jax.models.arch import RopeSpec
from rmas_jax.models.gated_deltanet import GatedDeltaNet
from rmas_jax.models.hybrid_cache import HybridCache
from rmas_jax.models.kv_cache import slot_mask
from rmas_jax.models.layers import _MASKED, MLP, Linear, RMSNorm, apply_rope, rope_inv_freq, rope_tables
from rmas_jax.models.transformer import DecoderOutput

LINEAR, FULL = "linear_attention", "full_attention"


@dataclasses.dataclass(frozen=True)
class Qwen3_5Config:
  """Dimensions of a Qwen3.5 text decoder (HF `Qwen3_5TextConfig`).

  Attributes:
    vocab_size, hidden_size, intermediate_size, num_layers: dimensions.
    num_heads, num_kv_heads, head_dim: the full-attention layers (queries carry a gate of the same size).
    linear_num_key_heads, linear_num_value_heads, linear_key_head_dim, linear_value_head_dim: DeltaNet heads.
    linear_conv_kernel_dim: taps of the DeltaNet's causal convolution.
    layer_types: per layer, `linear_attention` or `full_attention`.
    rms_norm_eps: epsilon of every RMSNorm.
    rope: rotary embedding of the attention layers (over `rotary_dim` of each head's dims).
    partial_rotary_factor: fraction of head_dim that is rotated.
    attention_bias: q/k/v/o projections carry biases.
    tie_embeddings: the LM head is the token embedding matrix.
    chunk_size: tokens per chunk of the chunked delta rule.
    delta_rule_form: `auto` (recurrent for one-token calls, chunked otherwise), `chunked` or `recurrent`.
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  linear_num_key_heads: int
  linear_num_value_heads: int
  linear_key_head_dim: int
  linear_value_head_dim: int
  linear_conv_kernel_dim: int = 4
  layer_types: tuple[str, ...] = ()
  rms_norm_eps: float = 1e-6
  rope: RopeSpec = RopeSpec(theta=10_000_000.0)
  partial_rotary_factor: float = 0.25
  attention_bias: bool = False
  tie_embeddings: bool = False
  max_position_embeddings: int = 262_144
  chunk_size: int = 64
  delta_rule_form: str = "auto"
  family: str = "qwen3_5"
  # Fixed for this family; named as in `ArchConfig` for code that reads them from any backbone's config.
  activation: str = "silu"
  mlp_bias: bool = False
  embed_scale: bool = False
  norm_offset: bool = True
  final_logit_softcap: float | None = None

  def __post_init__(self):
    if not self.layer_types:
      types = tuple(FULL if (i + 1) % 4 == 0 else LINEAR for i in range(self.num_layers))
      object.__setattr__(self, "layer_types", types)
    if len(self.layer_types) != self.num_layers:
      raise ValueError(f"layer_types has {len(self.layer_types)} entries, expected num_layers={self.num_layers}")
    bad = set(self.layer_types) - {LINEAR, FULL}
    if bad:
      raise ValueError(f"unsupported layer_types {sorted(bad)}; expected {LINEAR} or {FULL}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.linear_num_value_heads % self.linear_num_key_heads:
      raise ValueError(f"linear_num_value_heads={self.linear_num_value_heads} is not a multiple of "
                       f"linear_num_key_heads={self.linear_num_key_heads}")  # fmt: skip
    if self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.head_dim:
      raise ValueError(f"partial_rotary_factor={self.partial_rotary_factor} gives an odd or empty rotary dim")
    if self.delta_rule_form not in ("auto", "chunked", "recurrent"):
      raise ValueError(f"delta_rule_form={self.delta_rule_form!r}; expected auto, chunked or recurrent")

  @property
  def rotary_dim(self) -> int:
    return int(self.head_dim * self.partial_rotary_factor)

  @property
  def scale(self) -> float:
    return self.head_dim**-0.5

  @property
  def num_linear_layers(self) -> int:
    return self.layer_types.count(LINEAR)

  @property
  def num_attention_layers(self) -> int:
    return self.layer_types.count(FULL)

  @property
  def linear_conv_dim(self) -> int:
    """Channels of the DeltaNet convolution: queries, keys and values."""
    return (
      2 * self.linear_num_key_heads * self.linear_key_head_dim
      + self.linear_num_value_heads * self.linear_value_head_dim
    )

  @property
  def period(self) -> int:
    """The shortest period of `layer_types`: the layer cycle that `scan_layers` stacks."""
    n = self.num_layers
    for p in range(1, n + 1):
      if n % p == 0 and all(self.layer_types[i] == self.layer_types[i % p] for i in range(n)):
        return p
    return n

  @property
  def num_params(self) -> int:
    """Number of weights, from the dimensions alone."""
    d, f = self.hidden_size, self.intermediate_size
    q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
    attn = d * 2 * q + 2 * d * kv + q * d + 2 * self.head_dim
    attn += (2 * q + 2 * kv + d) * self.attention_bias
    value = self.linear_num_value_heads * self.linear_value_head_dim
    conv = self.linear_conv_dim
    linear = d * conv + d * value + 2 * d * self.linear_num_value_heads + conv * self.linear_conv_kernel_dim
    linear += 2 * self.linear_num_value_heads + self.linear_value_head_dim + value * d
    per_layer = 3 * d * f + 2 * d
    embed = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.num_layers * per_layer + self.num_attention_layers * attn + self.num_linear_layers * linear + embed + d


def _partial_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates the first `cos.shape[-1]` dims of each head of `x [B, T, N, hd]`; the rest pass through."""
  rot = cos.shape[-1]
  return jnp.concatenate([apply_rope(x[..., :rot], cos, sin), x[..., rot:]], axis=-1)


class GatedAttention(nnx.Module):
  """Grouped-query attention whose output is gated per channel by `sigmoid` of a second query projection; q/k
  RMS-normed over head_dim before a partial rotary embedding."""

  def __init__(self, cfg: Qwen3_5Config, *, dtype, rngs: nnx.Rngs):
    d, hd, bias = cfg.hidden_size, cfg.head_dim, cfg.attention_bias
    self.num_heads, self.num_kv_heads, self.head_dim, self.scale = cfg.num_heads, cfg.num_kv_heads, hd, cfg.scale
    self.q_proj = Linear(d, cfg.num_heads * hd * 2, bias=bias, dtype=dtype, rngs=rngs)  # per head: [query | gate]
    self.k_proj = Linear(d, cfg.num_kv_heads * hd, bias=bias, dtype=dtype, rngs=rngs)
    self.v_proj = Linear(d, cfg.num_kv_heads * hd, bias=bias, dtype=dtype, rngs=rngs)
    self.o_proj = Linear(cfg.num_heads * hd, d, bias=bias, dtype=dtype, rngs=rngs)
    self.q_norm = RMSNorm(hd, eps=cfg.rms_norm_eps, offset=True, param_dtype=dtype)
    self.k_norm = RMSNorm(hd, eps=cfg.rms_norm_eps, offset=True, param_dtype=dtype)

  def project_kv(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Keys (normed, rotated) and values `[B, K, T, hd]` of new tokens."""
    b, t, _ = x.shape
    k = self.k_norm(self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim))
    v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    return _partial_rope(k, cos, sin).transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

  def __call__(
    self,
    x: jax.Array,  # [B, T, D]
    cos: jax.Array,  # [B, T, rot]
    sin: jax.Array,  # [B, T, rot]
    k_new: jax.Array,  # [B, K, T, hd]
    v_new: jax.Array,  # [B, K, T, hd]
    mask: jax.Array,  # [B, T, S + T] or [B, T, T]
    cache_k: jax.Array | None = None,  # [B, K, S, hd]
    cache_v: jax.Array | None = None,  # [B, K, S, hd]
  ) -> jax.Array:
    b, t, _ = x.shape
    kv, group, hd = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim
    q, gate = jnp.split(self.q_proj(x).reshape(b, t, self.num_heads, 2 * hd), 2, axis=-1)  # [B, T, H, hd] each
    q = _partial_rope(self.q_norm(q), cos, sin).reshape(b, t, kv, group, hd)
    # As in the shared Attention: cached and new keys scored apart, one softmax over both.
    score = lambda keys: jnp.einsum("btkgh,bksh->bkgts", q, keys, preferred_element_type=jnp.float32)  # noqa: E731
    logits = score(k_new) if cache_k is None else jnp.concatenate([score(cache_k), score(k_new)], axis=-1)
    logits = jnp.where(mask[:, None, None, :, :], logits * self.scale, _MASKED)
    probs = jax.nn.softmax(logits, axis=-1).astype(v_new.dtype)
    mix = lambda p, values: jnp.einsum("bkgts,bksh->btkgh", p, values)  # noqa: E731
    if cache_v is None:
      out = mix(probs, v_new)
    else:
      s = cache_v.shape[2]
      out = mix(probs[..., :s], cache_v) + mix(probs[..., s:], v_new)
    gate = jax.nn.sigmoid(gate.reshape(b, t, self.num_heads * hd).astype(jnp.float32)).astype(out.dtype)
    return self.o_proj(out.reshape(b, t, self.num_heads * hd) * gate)


@dataclasses.dataclass
class _Inputs:
  """What every layer of one call shares: rotary tables and masks."""

  cos: jax.Array  # [B, T, rot]
  sin: jax.Array
  mask: jax.Array  # [B, T, S + T] attention mask over slots
  valid: jax.Array | None  # [B, T] real new tokens, None when all are


class Qwen3_5DecoderLayer(nnx.Module):
  """Pre-norm residual block: token mixer (DeltaNet or gated attention), then the SwiGLU MLP."""

  def __init__(self, cfg: Qwen3_5Config, kind: str, *, dtype, rngs: nnx.Rngs):
    self.kind = kind
    norm = dict(eps=cfg.rms_norm_eps, offset=True, param_dtype=dtype)
    self.input_layernorm = RMSNorm(cfg.hidden_size, **norm)
    if kind == LINEAR:
      self.linear_attn = GatedDeltaNet(cfg, dtype=dtype, rngs=rngs)
    else:
      self.self_attn = GatedAttention(cfg, dtype=dtype, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size, **norm)
    self.mlp = MLP(cfg, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, inputs: _Inputs, layer_cache: tuple | None) -> tuple[jax.Array, tuple]:
    """One layer over new tokens `x [B, T, D]`.

    `layer_cache` is this layer's (conv, recurrent) states for a DeltaNet layer or (keys, values) `[B, K, S, hd]`
    for an attention layer, or None. Returns the output and the new states (DeltaNet) or the new tokens'
    keys/values `[B, K, T, hd]` (attention).
    """
    h = self.input_layernorm(x)
    if self.kind == LINEAR:
      conv, state = (None, None) if layer_cache is None else layer_cache
      h, new = self.linear_attn(h, inputs.valid, conv, state)
    else:
      cache_k, cache_v = (None, None) if layer_cache is None else layer_cache
      k_new, v_new = self.self_attn.project_kv(h, inputs.cos, inputs.sin)
      if cache_k is not None:
        k_new, v_new = k_new.astype(cache_k.dtype), v_new.astype(cache_v.dtype)
      h = self.self_attn(h, inputs.cos, inputs.sin, k_new, v_new, inputs.mask, cache_k, cache_v)
      new = (k_new, v_new)
    x = x + h
    x = x + self.mlp(self.post_attention_layernorm(x))
    return x, new


class LayerCycle(nnx.Module):
  """One period of the layer pattern (e.g. three DeltaNet layers and one attention layer)."""

  def __init__(self, cfg: Qwen3_5Config, *, dtype, rngs: nnx.Rngs):
    kinds = cfg.layer_types[: cfg.period]
    self.layers = nnx.List([Qwen3_5DecoderLayer(cfg, kind, dtype=dtype, rngs=rngs) for kind in kinds])


class Qwen3_5CausalLM(nnx.Module):
  """Embeddings, hybrid decoder layers, final norm and (tied or separate) LM head."""

  def __init__(self, cfg: Qwen3_5Config, *, dtype=jnp.float32, scan_layers: bool = True, rngs: nnx.Rngs):
    self.cfg = cfg
    self.dtype = dtype
    self.scan_layers = scan_layers
    self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=dtype,
                                  embedding_init=nnx.initializers.normal(0.02), rngs=rngs)  # fmt: skip
    if scan_layers:

      @nnx.split_rngs(splits=cfg.num_layers // cfg.period)
      @nnx.vmap(in_axes=(0,), out_axes=0)
      def make_cycles(rngs):
        return LayerCycle(cfg, dtype=dtype, rngs=rngs)

      self.cycles = make_cycles(rngs)
    else:
      self.layers = nnx.List([Qwen3_5DecoderLayer(cfg, kind, dtype=dtype, rngs=rngs) for kind in cfg.layer_types])
    self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, offset=True, param_dtype=dtype)
    if cfg.tie_embeddings:
      self.lm_head = None
    else:  # stored [V, D] like the embedding
      self.lm_head = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (cfg.vocab_size, cfg.hidden_size), dtype))

  def embed(self, input_ids: jax.Array) -> jax.Array:
    """Input embeddings `[B, T, D]` of token ids."""
    return self.embed_tokens.embedding[...][input_ids].astype(self.dtype)

  def input_embedding_matrix(self) -> jax.Array:
    """The token embedding table `[V, D]`."""
    return self.embed_tokens.embedding[...]

  def logits(self, hidden: jax.Array) -> jax.Array:
    """LM-head logits `[B, T, V]` in fp32 from final-norm hidden states."""
    head = self.embed_tokens.embedding[...] if self.lm_head is None else self.lm_head[...]
    return jnp.einsum("btd,vd->btv", hidden.astype(head.dtype), head, preferred_element_type=jnp.float32)

  def init_cache(self, batch: int, length: int) -> HybridCache:
    """An empty decode state with `length` attention slots."""
    return HybridCache.init(self.cfg, batch, length, self.dtype)

  def _unrolled_layers(self, x, inputs, cache):
    kinds = self.cfg.layer_types
    lin_idx = np.cumsum([k == LINEAR for k in kinds]) - 1
    att_idx = np.cumsum([k == FULL for k in kinds]) - 1
    outs = {LINEAR: ([], []), FULL: ([], [])}  # (conv, recurrent) states / (keys, values) of new tokens
    for i, (kind, layer) in enumerate(zip(kinds, self.layers, strict=True)):
      if cache is None:
        layer_cache = None
      elif kind == LINEAR:
        layer_cache = (cache.conv[lin_idx[i]], cache.state[lin_idx[i]])
      else:
        layer_cache = (cache.k[att_idx[i]], cache.v[att_idx[i]])
      x, new = layer(x, inputs, layer_cache)
      for out, value in zip(outs[kind], new, strict=True):
        out.append(value)
    # One stacked write per array after every layer has read its slice (see CausalLM._unrolled_layers).
    stacked = [jnp.stack(values) if values else None for values in (*outs[LINEAR], *outs[FULL])]
    return x, *stacked

  def _scanned_layers(self, x, inputs, cache):
    cfg = self.cfg
    kinds = cfg.layer_types[: cfg.period]
    n = cfg.num_layers // cfg.period
    per = {LINEAR: kinds.count(LINEAR), FULL: kinds.count(FULL)}
    graphdef, cycle_state = nnx.split(self.cycles)
    if cache is None:
      caches = (None,) * 4
    else:  # [L, ...] -> [cycles, per cycle, ...]
      caches = tuple(a.reshape(n, per[kind], *a.shape[1:]) for a, kind in
                     ((cache.conv, LINEAR), (cache.state, LINEAR), (cache.k, FULL), (cache.v, FULL)))  # fmt: skip

    def body(h, xs):
      cycle, layer_caches = nnx.merge(graphdef, xs[0]), xs[1:]
      outs = {LINEAR: ([], []), FULL: ([], [])}
      for kind, layer in zip(kinds, cycle.layers, strict=True):
        j = len(outs[kind][0])  # this layer's index among the cycle's layers of its kind
        first = 0 if kind == LINEAR else 2
        layer_cache = None if cache is None else (layer_caches[first][j], layer_caches[first + 1][j])
        h, new = layer(h, inputs, layer_cache)
        for out, value in zip(outs[kind], new, strict=True):
          out.append(value)
      return h, tuple(jnp.stack(values) if values else None for values in (*outs[LINEAR], *outs[FULL]))

    x, outs = jax.lax.scan(body, x, (cycle_state, *caches))
    return x, *(None if a is None else a.reshape(-1, *a.shape[2:]) for a in outs)  # [cycles, per, ...] -> [L, ...]

  def __call__(
    self,
    input_ids: jax.Array | None = None,  # [B, T] int32
    *,
    inputs_embeds: jax.Array | None = None,  # [B, T, D]
    attention_mask: jax.Array | None = None,  # [B, T] 0 for padding
    cache: HybridCache | None = None,
    return_logits: bool = True,
  ) -> DecoderOutput:
    """Runs new tokens through the model, optionally continuing a decode state.

    Args:
      input_ids: token ids; exactly one of `input_ids` and `inputs_embeds` must be given.
      inputs_embeds: input vectors fed in place of token embeddings.
      attention_mask: 1 for real tokens, 0 for padding (anywhere: a padded token changes no state); default all 1.
      cache: a `HybridCache` to extend; the new tokens take attention slots `cache.end .. cache.end + T - 1`.
      return_logits: also compute the LM head.

    Returns:
      A `DecoderOutput` with final-norm hidden states, optional logits and the updated cache.
    """
    if (input_ids is None) == (inputs_embeds is None):
      raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if cache is not None and not isinstance(cache, HybridCache):
      raise TypeError(f"a Qwen3.5 model needs a HybridCache (model.init_cache(batch, length)), got {type(cache)}")
    x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(self.dtype)
    b, t, _ = x.shape
    new_valid = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
    counted = jnp.cumsum(new_valid.astype(jnp.int32), axis=1)  # [B, T]
    if cache is None:
      start, base_pos, valid = jnp.zeros((), jnp.int32), jnp.zeros((b,), jnp.int32), new_valid
    else:
      start, base_pos = cache.end, cache.next_pos
      valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, new_valid, start, axis=1)
    positions = base_pos[:, None] + jnp.maximum(counted - 1, 0)  # [B, T]
    query_slots = start + jnp.arange(t, dtype=jnp.int32)
    if cache is None:
      key_slots, key_valid = query_slots, new_valid
    else:
      key_slots = jnp.concatenate([jnp.arange(cache.length, dtype=jnp.int32), query_slots])
      key_valid = jnp.concatenate([cache.valid, new_valid], axis=1)
    cos, sin = rope_tables(positions, rope_inv_freq(self.cfg.rope, self.cfg.rotary_dim))
    inputs = _Inputs(cos=cos, sin=sin, mask=slot_mask(query_slots, key_slots, key_valid, None),
                     valid=None if attention_mask is None else new_valid)  # fmt: skip

    run = self._scanned_layers if self.scan_layers else self._unrolled_layers
    x, conv, state, k_new, v_new = run(x, inputs, cache)
    hidden = self.norm(x)
    logits = self.logits(hidden) if return_logits else None
    new_cache = None
    if cache is not None:
      # A model without layers of one kind keeps that kind's (empty) arrays.
      write = lambda full, new: full if new is None else jax.lax.dynamic_update_slice_in_dim(full, new, start, axis=3)  # noqa: E731
      new_cache = HybridCache(
        k=write(cache.k, k_new),
        v=write(cache.v, v_new),
        conv=cache.conv if conv is None else conv,
        state=cache.state if state is None else state,
        valid=valid,
        pos=jax.lax.dynamic_update_slice_in_dim(cache.pos, positions, start, axis=1),
        end=start + t,
        next_pos=base_pos + counted[:, -1],
      )
    return DecoderOutput(hidden=hidden, logits=logits, cache=new_cache)
