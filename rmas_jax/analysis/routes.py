"""The text routes of Theorem 4.1 and Proposition 3.1, shaped like an inner link (`[..., D] -> [..., D]`) so they can
stand where `R_in` stands in a latent rollout or a system.

- `SoftTokenLink`: `R_text(h) = softmax(W_lm h / τ) · E`, the differentiable relaxation of writing a token and
  reading it back: the expected input embedding under the agent's own next-token distribution at temperature τ.
- `HardTokenLink`: `E[argmax(W_lm h)]`, greedy text. Its derivative is zero almost everywhere (argmax is piecewise
  constant), so no gradient crosses it.

Both read the agent's frozen weights only; they hold no `LinkParam`, so a system built with them trains its outer
links alone.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from rmas_jax.models.transformer import CausalLM
from rmas_jax.patterns.system import Agent, System


def head_logits(backbone: CausalLM, h: jax.Array) -> jax.Array:
  """LM-head logits `[..., V]` in fp32 of final-norm states `[..., D]` (soft-capped where the family caps)."""
  lead = h.shape[:-1]
  flat = h.reshape(-1, 1, h.shape[-1])  # `logits` reads [B, T, D]
  return backbone.logits(flat).reshape(*lead, -1)


def token_entropy(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Entropy in nats of `softmax(logits / temperature)` over the last axis."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


class SoftTokenLink(nnx.Module):
  """`h -> softmax(W_lm h / τ) · E` with the agent's own LM head `W_lm` and input embeddings `E` (scaled where the
  family scales them), in fp32.

  Args:
    backbone: the agent (shared, never copied or trained).
    temperature: τ > 0; small τ makes the distribution confident and the route's Jacobian small.
  """

  def __init__(self, backbone: CausalLM, temperature: float = 1.0):
    if temperature <= 0:
      raise ValueError(f"temperature must be > 0, got {temperature}")
    self.backbone = backbone
    self.temperature = temperature

  def __call__(self, h: jax.Array) -> jax.Array:
    p = jax.nn.softmax(head_logits(self.backbone, h) / self.temperature, axis=-1)  # [..., V]
    return p @ self.backbone.input_embedding_matrix().astype(jnp.float32)  # [..., D]


class HardTokenLink(nnx.Module):
  """`h -> E[argmax(W_lm h)]`: the greedy token read back as its embedding (what text generation feeds)."""

  def __init__(self, backbone: CausalLM):
    self.backbone = backbone

  def __call__(self, h: jax.Array) -> jax.Array:
    ids = jnp.argmax(head_logits(self.backbone, h), axis=-1)  # [...]
    return self.backbone.embed(ids).astype(jnp.float32)


def text_style_system(system: System, temperature: float) -> System:
  """The same agents, pattern and outer links, with every inner link replaced by `SoftTokenLink(τ)`: a text-style
  recursion whose messages are soft tokens, differentiable end to end. Shares the backbones and outer links."""
  agents = {role: Agent(a.backbone, SoftTokenLink(a.backbone, temperature)) for role, a in system.agents.items()}
  return System(system.pattern, agents, dict(system.outer.items()))


@dataclasses.dataclass(frozen=True)
class TextRouteBound:
  """`‖∂R_text/∂h‖₂ ≤ ‖E‖₂ ‖W_lm‖₂ (1 − Σ p²) / τ ≤ ‖E‖₂ ‖W_lm‖₂ H(p) / τ`.

  The Jacobian is `Eᵀ (diag p − p pᵀ) W_lm / τ`; the middle factor is positive semi-definite with trace `1 − Σ p²`,
  which bounds its largest eigenvalue, and `1 − Σ p² = Σ p (1 − p) ≤ Σ p (−log p) = H(p)` (nats). This is the O(ε)
  of Theorem 4.1 with its constant written out (a final-logit soft-cap only shrinks it further).
  """

  embed_norm: float  # ‖E‖₂
  head_norm: float  # ‖W_lm‖₂

  def __call__(self, p: jax.Array, temperature: float) -> jax.Array:
    return self.embed_norm * self.head_norm * (1.0 - jnp.sum(p * p, axis=-1)) / temperature
