"""A RecursiveMAS system: frozen agents, their inner links, one outer link per edge, and the round loop.

Per round, each role in order assembles its prompt (received latents in their slots), thinks for m latent
steps, and sends `outer(inner(h))` along its edges; feedback edges carry latents into the next round. In the
last round the decoder role receives its latents and writes text instead of thinking. Round 1 (whose prompts
have no feedback slots) and the last round run apart; the rounds between them share one structure and run
under `jax.lax.scan`, carrying only the feedback latents.

A layout with a prefix block (`PromptLayout.prefix`) opens the same way in every round that declares it, and the
backbones are frozen, so `run_rounds` prefills each such block once per question (`prefill_prefix`) and every
round starts its rollout from a copy of that cache; the prefix caches enter the scan as constants, not carries.
The numbers are those of prefilling the whole prompt every round, to rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from rmas_jax.latent.rollout import latent_rollout
from rmas_jax.links.recursive_link import RecursiveLink, embedding_scale, inner_link, outer_link
from rmas_jax.models.kv_cache import KVCache, extend
from rmas_jax.models.transformer import CausalLM
from rmas_jax.patterns.graph import Pattern
from rmas_jax.prompts.slots import PromptLayout, assemble_embeddings

Latents = dict[str, jax.Array]  # edge link name -> [B, m, d_dst]
Prefixes = Mapping[str, KVCache]  # role -> the cache of its layouts' prefix block ([.., P slots]; a HybridCache too)


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


def mean_token_norm(backbone: CausalLM) -> float:
  """The mean norm of the backbone's token embeddings as it reads them (scaled where the family scales)."""
  return float(jnp.mean(jnp.linalg.norm(backbone.input_embedding_matrix().astype(jnp.float32), axis=-1)))


def build_system(pattern: Pattern, backbones: Mapping[str, CausalLM], *, form: str = "official",
                 design: str = "res+2-layer", seed: int = 0, scale_to_embeddings: bool = False,
                 outer_init: str = "torch") -> System:  # fmt: skip
  """Fresh links around loaded backbones: an inner link per agent and an outer link per edge. With
  `scale_to_embeddings` (official form only), every link's output is scaled to its receiver's mean token-embedding
  norm (`embedding_scale`) instead of the norm sqrt(d) its final LayerNorm gives; `outer_init` as `outer_link`."""
  rngs = nnx.Rngs(seed)
  width = {role: backbones[role].cfg.hidden_size for role in pattern.roles}
  scale = {role: 1.0 for role in pattern.roles}
  if scale_to_embeddings:
    if form != "official":
      raise ValueError("config.links.scale_to_embeddings: needs form 'official' (its links end in a LayerNorm)")
    scale = {role: embedding_scale(width[role], mean_token_norm(backbones[role])) for role in pattern.roles}
  agents = {r: Agent(backbones[r], inner_link(width[r], form=form, design=design, rngs=rngs, output_scale=scale[r]))
            for r in pattern.roles}  # fmt: skip
  outer = {
    link_key(e.src, e.dst): outer_link(width[e.src], width[e.dst], form=form, design=design, rngs=rngs,
                                       output_scale=scale[e.dst], init=outer_init)  # fmt: skip
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
  """The decoder's prompt with its latents in place: what the final text generation starts from.

  Attributes:
    embeds: `[B, T, D]` the whole prompt's input vectors.
    mask: `[B, T]`.
    prefix: the cache of the prompt's prefix block (its first `prefix.length` slots) when its layout has one, so
      decoding can start from it instead of prefilling those slots again; None otherwise.
  """

  embeds: jax.Array
  mask: jax.Array
  prefix: KVCache | None = None


def prefill_prefix(backbone: CausalLM, lay: PromptLayout) -> KVCache:
  """The cache of `lay`'s prefix block: its P slots prefilled (tokens only), what each round starts from."""
  ids, mask = lay.head()  # [B, P]
  cache = backbone.init_cache(mask.shape[0], lay.prefix)
  return backbone(ids, attention_mask=mask, cache=cache, return_logits=False).cache


def _prefix_of(agent: Agent, lay: PromptLayout, prefixes: Prefixes | None, role: str) -> KVCache | None:
  """The prefix cache a round of `role` starts from: the shared one, or (a layout whose prefix block nobody
  prefilled, e.g. from `think_round` called alone) one prefilled now."""
  if not lay.prefix:
    return None
  cache = (prefixes or {}).get(role)
  return cache if cache is not None and cache.length == lay.prefix else prefill_prefix(agent.backbone, lay)


def prefix_caches(system: System, layouts: Mapping[str, PromptLayout]) -> dict[str, KVCache]:
  """Each role's prefix cache, from the layouts of one round that declares it (its block is the same in all)."""
  return {role: prefill_prefix(system.agents[role].backbone, lay) for role, lay in layouts.items() if lay.prefix}


def _think(agent: Agent, embeds: jax.Array, mask: jax.Array, steps: int, remat: bool,
           prefix: KVCache | None = None) -> jax.Array:  # fmt: skip
  """`R_in` of the agent's m latent states. With `remat`, the backward pass recomputes the whole rollout (prefill
  included) from its input vectors, so a round's stored activations are one agent's, not all of them.

  With `prefix`, `embeds`/`mask` are the slots after a prefix block whose cache `prefix` holds; the rollout
  continues from a copy of it."""

  graphdef, state = nnx.split(agent)

  def rollout(state, embeds, mask, prefix):
    agent = nnx.merge(graphdef, state)
    b, t = mask.shape
    if prefix is None:
      cache = agent.backbone.init_cache(b, t + steps - 1)
    else:
      cache = extend(prefix, prefix.length + t + steps - 1)
    hidden = latent_rollout(agent.backbone, agent.inner, embeds, mask, cache, steps, remat=remat).hidden
    return agent.inner(hidden)

  return (jax.checkpoint(rollout) if remat else rollout)(state, embeds, mask, prefix)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class GoldResponse:
  """A role's gold response tokens, right-padded: what the official training feeds each agent after its prompt."""

  ids: jax.Array  # [B, L] int32
  mask: jax.Array  # [B, L] bool


def _teacher_forced(agent: Agent, embeds: jax.Array, mask: jax.Array, gold: GoldResponse, steps: int,
                    remat: bool, prefix: KVCache | None = None) -> jax.Array:  # fmt: skip
  """`R_in` of the agent's hidden states over the first `steps` tokens of its gold response, from one forward pass of
  [prompt | gold response]: the official training's latents (teacher-forced, no rollout; the release keeps the first
  80, here `steps` so that slot widths match inference). Positions past a shorter response give zero vectors.
  With `prefix` (see `_think`), the pass runs after the prefix block's cache."""
  graphdef, state = nnx.split(agent)

  def forward(state, embeds, mask, prefix):
    agent = nnx.merge(graphdef, state)
    t = mask.shape[1]
    x = jnp.concatenate([embeds, agent.backbone.embed(gold.ids).astype(embeds.dtype)], axis=1)  # [B, T + L, D]
    m = jnp.concatenate([mask, gold.mask.astype(mask.dtype)], axis=1)
    cache = None if prefix is None else extend(prefix, prefix.length + m.shape[1])
    hidden = agent.backbone(inputs_embeds=x, attention_mask=m, cache=cache, return_logits=False).hidden
    return agent.inner(hidden[:, t : t + steps]) * gold.mask[:, :steps, None]  # [B, steps, d]

  return (jax.checkpoint(forward) if remat else forward)(state, embeds, mask, prefix)


def think_round(system: System, layouts: Mapping[str, PromptLayout], feedback: Latents | None, *, steps: int,
                final: bool, remat: bool = False, gold: Mapping[str, GoldResponse] | None = None,
                prefixes: Prefixes | None = None) -> tuple[Latents, DecoderInput | None]:  # fmt: skip
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
    prefixes: the caches of the layouts' prefix blocks (`prefix_caches`); a layout's block missing here is
      prefilled in this round.

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
    writes = final and role == pattern.decoder
    if not writes and not pattern.thinks(role, final):
      continue
    prefix = _prefix_of(agent, lay, prefixes, role)
    if writes:  # the whole prompt: training reads it all; decoding may start from the prefix cache
      decoder_input = DecoderInput(assemble_embeddings(agent.backbone.embed(lay.ids), lay, latents), lay.mask, prefix)
      continue
    run = lay.rest()  # the slots after the prefix block (all of them without one)
    embeds = assemble_embeddings(agent.backbone.embed(run.ids), run, latents)  # [B, T - P, D]
    if gold is None:
      thoughts = _think(agent, embeds, run.mask, steps, remat, prefix)  # [B, m, d] the vectors the agent fed itself
    else:
      thoughts = _teacher_forced(agent, embeds, run.mask, gold[role], steps, remat, prefix)  # [B, m, d]
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
  round to teacher forcing (see `think_round`).

  Prefix blocks are prefilled once, from the last round's layouts (every round that declares a role's block has
  the same one); the scan closes over their caches, so it carries only the feedback latents."""
  prefixes = prefix_caches(system, first if last is None else last)
  kw = dict(steps=steps, remat=remat, gold=gold, prefixes=prefixes)
  if last is None:
    return think_round(system, first, None, final=True, **kw)[1]
  feedback, _ = think_round(system, first, None, final=False, **kw)
  if middle is not None:

    def one_round(fb, layouts):
      return think_round(system, layouts, fb, final=False, **kw)[0], None

    feedback, _ = jax.lax.scan(one_round, feedback, middle)
  return think_round(system, last, feedback, final=True, **kw)[1]
