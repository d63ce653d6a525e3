"""A RecursiveMAS system: frozen agents, their inner links, one outer link per edge, and the round loop.

Per round, each role in order assembles its prompt (received latents in their slots), thinks for m latent
steps, and sends `outer(inner(h))` along its edges; feedback edges carry latents into the next round. In the
last round the decoder role receives its latents and writes text instead of thinking. Round 1 (whose prompts
have no feedback slots) and the last round run apart; the rounds between them share one structure and run
under `jax.lax.scan`, carrying only the feedback latents.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from rmas_jax.latent.rollout import latent_rollout
from rmas_jax.links.recursive_link import RecursiveLink, inner_link, outer_link
from rmas_jax.models.transformer import CausalLM
from rmas_jax.patterns.graph import Pattern
from rmas_jax.prompts.slots import PromptLayout, assemble_embeddings

Latents = dict[str, jax.Array]  # edge link name -> [B, m, d_dst]


def link_key(src: str, dst: str) -> str:
  return f"{src}_to_{dst}"


class Agent(nnx.Module):
  """One frozen backbone and its inner link."""

  def __init__(self, backbone: CausalLM, inner: RecursiveLink):
    self.backbone = backbone
    self.inner = inner


class System(nnx.Module):
  """Agents by role and outer links by edge (`src_to_dst`)."""

  def __init__(self, pattern: Pattern, agents: Mapping[str, Agent], outer: Mapping[str, RecursiveLink]):
    missing = set(pattern.roles) - set(agents)
    if missing:
      raise ValueError(f"pattern {pattern.name} needs agents for roles {sorted(missing)}")
    self.pattern = pattern
    self.agents = nnx.Dict(dict(agents))
    self.outer = nnx.Dict(dict(outer))


def build_system(pattern: Pattern, backbones: Mapping[str, CausalLM], *, form: str = "official",
                 design: str = "res+2-layer", seed: int = 0) -> System:  # fmt: skip
  """Fresh links around loaded backbones: an inner link per agent and an outer link per edge."""
  rngs = nnx.Rngs(seed)
  width = {role: backbones[role].cfg.hidden_size for role in pattern.roles}
  agents = {r: Agent(backbones[r], inner_link(width[r], form=form, design=design, rngs=rngs)) for r in pattern.roles}
  outer = {
    link_key(e.src, e.dst): outer_link(width[e.src], width[e.dst], form=form, design=design, rngs=rngs)
    for e in pattern.edges
  }
  return System(pattern, agents, outer)


def slot_order(pattern: Pattern, role: str, first_round: bool) -> tuple[str, ...]:
  """The slot names of `role`'s prompt in a round, in the order `think` stacks their latents."""
  edges = pattern.incoming(role, feedback=False) + (() if first_round else pattern.incoming(role, feedback=True))
  return tuple(e.slot for e in edges)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecoderInput:
  """The decoder's prompt with its latents in place: what the final text generation starts from."""

  embeds: jax.Array  # [B, T, D]
  mask: jax.Array  # [B, T]


def _think(agent: Agent, embeds: jax.Array, mask: jax.Array, steps: int, remat: bool) -> jax.Array:
  """`R_in` of the agent's m latent states. With `remat`, the backward pass recomputes the whole rollout (prefill
  included) from its input vectors, so a round's stored activations are one agent's, not all of them."""

  graphdef, state = nnx.split(agent)

  def rollout(state, embeds, mask):
    agent = nnx.merge(graphdef, state)
    b, t = mask.shape
    cache = agent.backbone.init_cache(b, t + steps - 1)
    hidden = latent_rollout(agent.backbone, agent.inner, embeds, mask, cache, steps, remat=remat).hidden
    return agent.inner(hidden)

  return (jax.checkpoint(rollout) if remat else rollout)(state, embeds, mask)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class GoldResponse:
  """A role's gold response tokens, right-padded: what the official training feeds each agent after its prompt."""

  ids: jax.Array  # [B, L] int32
  mask: jax.Array  # [B, L] bool


def _teacher_forced(agent: Agent, embeds: jax.Array, mask: jax.Array, gold: GoldResponse, steps: int,
                    remat: bool) -> jax.Array:  # fmt: skip
  """`R_in` of the agent's hidden states over the first `steps` tokens of its gold response, from one forward pass of
  [prompt | gold response]: the official training's latents (teacher-forced, no rollout; the release keeps the first
  80, here `steps` so that slot widths match inference). Positions past a shorter response give zero vectors."""
  graphdef, state = nnx.split(agent)

  def forward(state, embeds, mask):
    agent = nnx.merge(graphdef, state)
    t = mask.shape[1]
    x = jnp.concatenate([embeds, agent.backbone.embed(gold.ids).astype(embeds.dtype)], axis=1)  # [B, T + L, D]
    m = jnp.concatenate([mask, gold.mask.astype(mask.dtype)], axis=1)
    hidden = agent.backbone(inputs_embeds=x, attention_mask=m, return_logits=False).hidden[:, t : t + steps]
    return agent.inner(hidden) * gold.mask[:, :steps, None]  # [B, steps, d]

  return (jax.checkpoint(forward) if remat else forward)(state, embeds, mask)


def think_round(system: System, layouts: Mapping[str, PromptLayout], feedback: Latents | None, *, steps: int,
                final: bool, remat: bool = False,
                gold: Mapping[str, GoldResponse] | None = None) -> tuple[Latents, DecoderInput | None]:  # fmt: skip
  """One round of the pattern.

  Args:
    system: the system.
    layouts: each role's prompt layout for this round (slots in `slot_order` order).
    feedback: the previous round's feedback latents, or None in round 1.
    steps: latent steps per thinking agent.
    final: the last round (the decoder writes instead of thinking; no feedback is produced).
    remat: recompute latent steps in the backward pass.
    gold: teacher forcing (the official training): each thinking role's gold response; its latents are its hidden
      states over that response instead of a latent rollout.

  Returns:
    The feedback latents for the next round, and in the last round the decoder's input.
  """
  pattern = system.pattern
  sent: Latents = {}
  new_feedback: Latents = {}
  decoder_input = None
  for role in pattern.roles:
    agent = system.agents[role]
    edges = pattern.incoming(role, feedback=False) + (() if feedback is None else pattern.incoming(role, feedback=True))
    received = [sent[e.link_name] if not e.feedback else feedback[e.link_name] for e in edges]
    lay = layouts[role]
    latents = jnp.stack(received) if received else None  # [S, B, m, D]
    embeds = assemble_embeddings(agent.backbone.embed(lay.ids), lay, latents)
    if final and role == pattern.decoder:
      decoder_input = DecoderInput(embeds, lay.mask)
      continue
    if not pattern.thinks(role, final):
      continue
    if gold is None:
      thoughts = _think(agent, embeds, lay.mask, steps, remat)  # [B, m, d] the vectors the agent fed itself
    else:
      thoughts = _teacher_forced(agent, embeds, lay.mask, gold[role], steps, remat)  # [B, m, d]
    for e in pattern.outgoing(role):
      if e.feedback and final:
        continue
      out = system.outer[link_key(e.src, e.dst)](thoughts)
      (new_feedback if e.feedback else sent)[e.link_name] = out
  return new_feedback, decoder_input


def run_rounds(
  system: System,
  first: Mapping[str, PromptLayout],
  middle: Mapping[str, PromptLayout] | None,
  last: Mapping[str, PromptLayout] | None,
  *,
  steps: int,
  remat: bool = False,
  gold: Mapping[str, GoldResponse] | None = None,
) -> DecoderInput:
  """All rounds: round 1, then `jax.lax.scan` over the middle rounds (layouts stacked on a leading axis), then
  the last round. With one round, `first` is also the last and `middle`/`last` are None. `gold` switches every
  round to teacher forcing (see `think_round`)."""
  kw = dict(steps=steps, remat=remat, gold=gold)
  if last is None:
    return think_round(system, first, None, final=True, **kw)[1]
  feedback, _ = think_round(system, first, None, final=False, **kw)
  if middle is not None:

    def one_round(fb, layouts):
      return think_round(system, layouts, fb, final=False, **kw)[0], None

    feedback, _ = jax.lax.scan(one_round, feedback, middle)
  return think_round(system, last, feedback, final=True, **kw)[1]
