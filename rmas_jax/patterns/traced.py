"""The round loop turn by turn, for looking inside: each agent's turn is its own compiled call, timed on the host,
and its latent thoughts and what it sends are kept.

`run_rounds` runs all rounds as one compiled program, which is what answering and training want, but it cannot
say how long each agent took, and it keeps no per-step latents. This path computes the same numbers (tested
against `run_rounds`) one `(round, role)` turn at a time, so `ask(..., trace=True)` can report a timeline per
round and agent and the inspector can read every latent step. It is opt-in: `ask` without it never comes here.
A role's prefix block (`PromptLayout.prefix`) is prefilled once, in the first turn that reads it (its time is that
turn's), and later turns start from its cache, as in `run_rounds`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rmas_jax.accounting import compile_seconds
from rmas_jax.models.kv_cache import KVCache
from rmas_jax.patterns.system import DecoderInput, System, _think, link_key, prefill_prefix
from rmas_jax.prompts.slots import PromptLayout, assemble_embeddings


@dataclasses.dataclass
class Turn:
  """One agent's latent thinking in one round.

  Attributes:
    round: 1-based round.
    role: the agent.
    thoughts: `[B, m, D]` `R_in(h)` at each latent step, in the agent's own input-embedding space (the first m-1
      were fed back to it; all m are sent on).
    sent: edge link name (`src->dst`) -> `[B, m, d_dst]` the outer link's output, in the receiver's space.
    wall_s: host wall time of the turn, compile time included.
    compile_s: the part of `wall_s` spent tracing and compiling (0 once the turn's program is cached).
  """

  round: int
  role: str
  thoughts: jax.Array
  sent: dict[str, jax.Array]
  wall_s: float
  compile_s: float

  def summary(self) -> dict:
    """The turn's timeline entry (JSON-ready)."""
    return {
      "round": self.round,
      "role": self.role,
      "kind": "think",
      "wall_s": self.wall_s,
      "compile_s": self.compile_s,
      "latent_steps": int(self.thoughts.shape[1]),
      "decoded_tokens": 0,
    }


@functools.lru_cache(maxsize=64)
def _turn_fn(graphdef, role: str, steps: int, writes: bool, drop_feedback: bool):
  # One compiled program per (system structure, role, steps, what the turn does), reused across rounds.
  def turn(state, lay: PromptLayout, received: tuple[jax.Array, ...], prefix: KVCache | None):
    system = nnx.merge(graphdef, state)
    agent = system.agents[role]
    latents = jnp.stack(received) if received else None  # [S, B, m, D], as `think_round` stacks them
    if writes:
      return DecoderInput(assemble_embeddings(agent.backbone.embed(lay.ids), lay, latents), lay.mask, prefix)
    run = lay.rest()  # after the prefix block, whose cache is `prefix` (everything when there is none)
    embeds = assemble_embeddings(agent.backbone.embed(run.ids), run, latents)
    thoughts = _think(agent, embeds, run.mask, steps, False, prefix)
    edges = [e for e in system.pattern.outgoing(role) if not (e.feedback and drop_feedback)]
    return thoughts, {e.link_name: system.outer[link_key(e.src, e.dst)](thoughts) for e in edges}

  return jax.jit(turn)


@functools.lru_cache(maxsize=64)
def _prefix_fn(graphdef, role: str):
  return jax.jit(lambda state, lay: prefill_prefix(nnx.merge(graphdef, state).agents[role].backbone, lay))


def _width(system: System, role: str) -> int:
  return system.agents[role].backbone.cfg.hidden_size


def run_rounds_traced(
  system: System,
  layouts: Sequence[Mapping[str, PromptLayout]],
  *,
  steps: int,
  on_turn: Callable[[dict], None] | None = None,
) -> tuple[DecoderInput, list[Turn]]:
  """All rounds, one compiled call per agent turn.

  Args:
    system: the system.
    layouts: each round's layouts by role (as `layouts_by_round` makes them).
    steps: latent steps per thinking agent.
    on_turn: called with each turn's timeline entry as soon as the turn is done.

  Returns:
    The decoder's input (equal to `run_rounds`'), and every thinking turn in order.
  """
  pattern = system.pattern
  graphdef, state = nnx.split(system)
  rounds = len(layouts)
  turns: list[Turn] = []
  feedback: dict[str, jax.Array] = {}
  prefixes: dict[str, KVCache] = {}  # role -> its prefix block's cache, once a turn has read it

  def prefix_of(role: str, lay: PromptLayout) -> KVCache | None:
    if not lay.prefix:
      return None
    if role not in prefixes or prefixes[role].length != lay.prefix:
      prefixes[role] = _prefix_fn(graphdef, role)(state, lay)
    return prefixes[role]

  decoder_input = None
  for r, lays in enumerate(layouts, start=1):
    final, sent, new_feedback = r == rounds, {}, {}
    for role in pattern.roles:
      writes = final and role == pattern.decoder
      if not writes and not pattern.thinks(role, final):
        continue
      received = tuple(sent[e.link_name] for e in pattern.incoming(role, feedback=False))
      # Feedback slots come last in a layout's slot order. Round 1's layout has none and never reads past its own
      # slots, so zeros stand in for the feedback latents: every round of a role then has one compiled program.
      lay = lays[role]
      received += tuple(
        feedback[e.link_name] if r > 1 else jnp.zeros((*lay.mask.shape[:1], steps, _width(system, role)))
        for e in pattern.incoming(role, feedback=True)
      )
      drop_feedback = final and any(e.feedback for e in pattern.outgoing(role))
      fn = _turn_fn(graphdef, role, steps, writes, drop_feedback)
      if writes:
        decoder_input = fn(state, lay, received, prefix_of(role, lay))
        continue
      compile_start, start = compile_seconds(), time.perf_counter()
      thoughts, out = jax.block_until_ready(fn(state, lay, received, prefix_of(role, lay)))
      turn = Turn(r, role, thoughts, out, time.perf_counter() - start, compile_seconds() - compile_start)
      turns.append(turn)
      for e in pattern.outgoing(role):
        if e.link_name in out:
          (new_feedback if e.feedback else sent)[e.link_name] = out[e.link_name]
      if on_turn is not None:
        on_turn(turn.summary())
    feedback = new_feedback
  return decoder_input, turns
