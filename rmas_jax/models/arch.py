"""Architecture description shared by every backbone family.

One frozen, hashable dataclass holds the dimensions and the per-family switches, so it can be a static
argument of `jax.jit` and the key of a compilation cache. The loaders in `rmas_jax.weights` build it from an
HF `config.json` or from GGUF metadata; modelling code never reads those formats itself.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

RopeType = Literal["default", "linear", "llama3"]
Family = Literal["llama", "qwen2", "qwen3", "mistral", "gemma3"]
FAMILIES: tuple[str, ...] = ("llama", "qwen2", "qwen3", "mistral", "gemma3")


@dataclasses.dataclass(frozen=True)
class RopeSpec:
  """Rotary embedding of one layer type.

  Attributes:
    theta: base wavelength.
    rope_type: `default`, `linear` (positions divided by `factor`) or `llama3` (Llama 3.1 band-wise scaling).
    factor: scaling factor of `linear` and `llama3`.
    low_freq_factor: `llama3` only.
    high_freq_factor: `llama3` only.
    original_max_position_embeddings: `llama3` only.
  """

  theta: float = 10_000.0
  rope_type: RopeType = "default"
  factor: float = 1.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ArchConfig:
  """Dimensions and family switches of one decoder-only transformer.

  Attributes:
    family: which HF family the weights come from; informative, behaviour is set by the flags below.
    vocab_size, hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads, head_dim: dimensions.
    rms_norm_eps: epsilon of every RMSNorm.
    norm_offset: RMSNorm multiplies by `1 + w` (Gemma) instead of `w`.
    qkv_bias: q/k/v projections carry a bias (Qwen2, Llama with `attention_bias`).
    o_bias: the output projection carries a bias (Llama with `attention_bias`).
    mlp_bias: the MLP projections carry biases (Llama with `mlp_bias`).
    qk_norm: RMSNorm over head_dim on queries and keys before RoPE (Qwen3, Gemma 3).
    sandwich_norms: Gemma 3's four norms per layer (post-attention and pre/post-feed-forward).
    activation: `silu` (SwiGLU) or `gelu_tanh` (GeGLU).
    embed_scale: multiply token embeddings by sqrt(hidden_size) (Gemma).
    query_scale: the factor applied to q·k; None means head_dim ** -0.5.
    tie_embeddings: the LM head is the token embedding matrix.
    rope_global: rotary embedding of full-attention layers.
    rope_local: rotary embedding of sliding-window layers (Gemma 3); None means `rope_global`.
    sliding_window: window length of sliding layers, in tokens including the current one; None for none.
    layer_types: per layer, `full_attention` or `sliding_attention`.
    attn_logit_softcap, final_logit_softcap: tanh soft-capping (Gemma 2 style); None for none.
  """

  family: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  norm_offset: bool = False
  qkv_bias: bool = False
  o_bias: bool = False
  mlp_bias: bool = False
  qk_norm: bool = False
  sandwich_norms: bool = False
  activation: Literal["silu", "gelu_tanh"] = "silu"
  embed_scale: bool = False
  query_scale: float | None = None
  tie_embeddings: bool = False
  rope_global: RopeSpec = RopeSpec()
  rope_local: RopeSpec | None = None
  sliding_window: int | None = None
  layer_types: tuple[str, ...] = ()
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  max_position_embeddings: int = 8192

  def __post_init__(self):
    if not self.layer_types:
      object.__setattr__(self, "layer_types", ("full_attention",) * self.num_layers)
    if len(self.layer_types) != self.num_layers:
      raise ValueError(f"layer_types has {len(self.layer_types)} entries, expected num_layers={self.num_layers}")
    bad = set(self.layer_types) - {"full_attention", "sliding_attention"}
    if bad:
      raise ValueError(f"unsupported layer_types {sorted(bad)}; expected full_attention or sliding_attention")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if "sliding_attention" in self.layer_types and not self.sliding_window:
      raise ValueError("sliding_attention layers need a sliding_window")

  @property
  def scale(self) -> float:
    """Factor applied to the query-key dot products."""
    return self.query_scale if self.query_scale is not None else self.head_dim**-0.5

  @property
  def num_params(self) -> int:
    """Number of weights, from the dimensions alone."""
    d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
    q, kv = self.num_heads * hd, self.num_kv_heads * hd
    attn = d * q + 2 * d * kv + q * d
    attn += (q + 2 * kv) * self.qkv_bias + d * self.o_bias + 2 * hd * self.qk_norm
    mlp = 3 * d * f + (2 * f + d) * self.mlp_bias
    norms = d * (4 if self.sandwich_norms else 2)
    embed = self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return self.num_layers * (attn + mlp + norms) + embed + d
