"""Asking a system questions: role prompts rendered per agent, the round loop, then the decoder writes.

Host work (rendering, tokenising, laying out) and device work (the jit-compiled rounds, then decoding) are
timed apart, and decoded tokens are counted, so every answer accounts for itself.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rmas_jax.generation.sampler import SamplingConfig, bucket, generate_from_embeddings
from rmas_jax.patterns.system import System, run_rounds, slot_order
from rmas_jax.prompts import roles
from rmas_jax.prompts.slots import PromptLayout, SegmentedPrompt, layout, render_chat, segment
from rmas_jax.weights.tokenizer import stop_token_ids

# style -> role -> (question, round, rounds, task) -> RolePrompt
PromptBook = Mapping[str, Callable[[str, int, int, str], roles.RolePrompt]]
PROMPTS: dict[str, PromptBook] = {
  "sequential": {
    "planner": lambda q, r, n, task: roles.planner(q, r, n),
    "critic": lambda q, r, n, task: roles.critic(q),
    "solver": lambda q, r, n, task: roles.solver(q, task),
  },
  "mixture": {
    **{f"{d}_expert": (lambda q, r, n, task, d=d: roles.expert(d, q, r, n)) for d in roles.EXPERT_DOMAINS},
    "summarizer": lambda q, r, n, task: roles.summarizer(q, task),
  },
  "distillation": {
    "expert": lambda q, r, n, task: roles.distill_expert(q, r, n),
    "learner": lambda q, r, n, task: roles.learner(q, task),
  },
}


@dataclasses.dataclass
class Answer:
  """One question's answer and what it cost (times are the batch's, shared by its questions)."""

  question: str
  text: str
  decoded_tokens: int
  latent_steps: int
  host_s: float
  rounds_s: float
  decode_s: float


def segmented_prompts(system: System, tokenizers: Mapping[str, object], questions: Sequence[str], *, rounds: int,
                      task: str) -> list[dict[str, list[SegmentedPrompt]]]:  # fmt: skip
  """`[round][role]` -> one segmented prompt per question, checked against the pattern's slots."""
  pattern = system.pattern
  book = PROMPTS.get(pattern.name)
  if book is None:
    raise ValueError(f"no role prompts written for the {pattern.name} pattern yet; known: {sorted(PROMPTS)}")
  out = []
  for r in range(1, rounds + 1):
    per_role = {}
    for role in pattern.roles:
      expected = sorted(slot_order(pattern, role, r == 1))
      segs = []
      for q in questions:
        p = book[role](q, r, rounds, task)
        seg = segment(tokenizers[role], render_chat(tokenizers[role], p.system, p.user))
        if sorted(seg.slots) != expected:
          raise ValueError(f"{pattern.name}/{role} round {r}: prompt slots {seg.slots}, pattern expects {expected}")
        segs.append(seg)
      per_role[role] = segs
    out.append(per_role)
  return out


def layouts_by_round(system: System, prompts, steps: int) -> list[dict[str, PromptLayout]]:
  """Layouts per round and role; a role keeps one length across rounds so the middle rounds stack."""
  pattern = system.pattern
  length = {role: bucket(max(p.length(steps) for rp in prompts for p in rp[role])) for role in pattern.roles}
  return [
    {role: layout(rp[role], slot_order(pattern, role, r == 0), steps, length[role]) for role in pattern.roles}
    for r, rp in enumerate(prompts)
  ]


@functools.lru_cache(maxsize=8)
def _rounds_fn(graphdef, steps: int):
  # One compiled program per system structure and step count, reused across calls.
  return jax.jit(lambda state, first, middle, last: run_rounds(nnx.merge(graphdef, state), first, middle, last,
                                                               steps=steps))  # fmt: skip


def ask(
  system: System,
  tokenizers: Mapping[str, object],
  questions: Sequence[str],
  *,
  rounds: int,
  steps: int,
  max_new_tokens: int,
  task: str = "math",
  sampling: SamplingConfig | None = None,
) -> list[Answer]:
  """Answers a batch of questions with the system.

  Args:
    system: agents, links and pattern.
    tokenizers: each role's tokenizer (with a chat template).
    questions: the batch.
    rounds: recursion rounds R (>= 1).
    steps: latent steps m per thinking agent (>= 1).
    max_new_tokens: the decoder's budget.
    task: which final instruction the decoder gets (`math`, `choice`, `code`, `reasoning`).
    sampling: the decoder's sampling settings (default greedy).
  """
  if rounds < 1 or steps < 1:
    raise ValueError(f"rounds and latent steps must be >= 1, got rounds={rounds}, steps={steps}")
  start = time.perf_counter()
  lays = layouts_by_round(system, segmented_prompts(system, tokenizers, questions, rounds=rounds, task=task), steps)
  middle = jax.tree.map(lambda *x: jnp.stack(x), *lays[1:-1]) if rounds > 2 else None
  host_s = time.perf_counter() - start

  start = time.perf_counter()
  graphdef, state = nnx.split(system)
  decoder_input = _rounds_fn(graphdef, steps)(state, lays[0], middle, lays[-1] if rounds > 1 else None)
  jax.block_until_ready(decoder_input)
  rounds_s = time.perf_counter() - start

  start = time.perf_counter()
  decoder, tok = system.agents[system.pattern.decoder].backbone, tokenizers[system.pattern.decoder]
  new = generate_from_embeddings(
    decoder,
    decoder_input.embeds,
    decoder_input.mask,
    max_new_tokens=max_new_tokens,
    stop_ids=stop_token_ids(tok, chat=True),
    sampling=sampling or SamplingConfig(),
  )
  decode_s = time.perf_counter() - start
  thinking = sum(system.pattern.thinks(r, final_round=(i == rounds - 1)) for i in range(rounds)
                 for r in system.pattern.roles) * steps  # fmt: skip
  return [
    Answer(q, tok.decode(ids, skip_special_tokens=True), len(ids), thinking, host_s, rounds_s, decode_s)
    for q, ids in zip(questions, new, strict=True)
  ]
