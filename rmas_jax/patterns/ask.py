"""Asking a system questions: role prompts rendered per agent, the round loop, then the decoder writes.

Host work (rendering, tokenising, laying out) and device work (the jit-compiled rounds, then decoding) are
timed apart, and decoded tokens are counted, so every answer accounts for itself.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rmas_jax.accounting import Stages, peak_memory
from rmas_jax.generation.sampler import Interrupt, SamplingConfig, TextCallback, Watcher, bucket, generate_text
from rmas_jax.models.kv_cache import repeat_rows
from rmas_jax.patterns.system import System, run_rounds, slot_order
from rmas_jax.patterns.traced import run_rounds_traced
from rmas_jax.prompts import roles
from rmas_jax.prompts.records import PromptRecord, prompt_record
from rmas_jax.prompts.slots import PromptLayout, SegmentedPrompt, render_chat, role_layouts, segment
from rmas_jax.tools.calls import ToolBox, find_call
from rmas_jax.weights.tokenizer import stop_token_ids

# style -> role -> (record, round, rounds, task) -> RolePrompt; the built-in prompts read only the record's question
PromptBook = Mapping[str, Callable[[PromptRecord, int, int, str], roles.RolePrompt]]
PROMPTS: dict[str, PromptBook] = {
  "sequential": {
    "planner": lambda q, r, n, task: roles.planner(q.question, r, n),
    "critic": lambda q, r, n, task: roles.critic(q.question),
    "solver": lambda q, r, n, task: roles.solver(q.question, task),
  },
  "mixture": {
    **{f"{d}_expert": (lambda q, r, n, task, d=d: roles.expert(d, q.question, r, n)) for d in roles.EXPERT_DOMAINS},
    "summarizer": lambda q, r, n, task: roles.summarizer(q.question, task),
  },
  "distillation": {
    "expert": lambda q, r, n, task: roles.distill_expert(q.question, r, n),
    "learner": lambda q, r, n, task: roles.learner(q.question, task),
  },
  "deliberation": {
    "reflector": lambda q, r, n, task: roles.reflector(q.question, r, n),
    "tool_caller": lambda q, r, n, task: roles.tool_caller(q.question, task),
  },
}


@dataclasses.dataclass
class Answer:
  """One question's answer.

  Attributes:
    question: the question.
    text: the first sample's text.
    samples: every sample's text (pass@k re-samples only the final decode).
    decoded_tokens: generated tokens of each sample (tool results excluded).
    tool_calls: tool calls of each sample.
    finish: why each sample ended (see `TextResult.finish`).
  """

  question: str
  text: str
  samples: list[str]
  decoded_tokens: list[int]
  tool_calls: list[int]
  finish: list[str]


@dataclasses.dataclass
class AskResult:
  """Answers of a batch and what the batch cost (the accounting JSON); with `ask(..., trace=True)` also every
  thinking turn's latents (`rmas_jax.patterns.traced.Turn`) and a `timeline` in the accounting."""

  answers: list[Answer]
  accounting: dict
  trace: list | None = None


def segmented_prompts(system: System, tokenizers: Mapping[str, object], questions: Sequence, *, rounds: int,
                      task: str, book: PromptBook | None = None) -> list[dict[str, list[SegmentedPrompt]]]:  # fmt: skip
  """`[round][role]` -> one segmented prompt per question, checked against the pattern's slots.

  `questions` are question strings, field mappings, `Example`s or `PromptRecord`s (`rmas_jax.prompts.records`):
  a declared prompt may name any field of its record. `book` defaults to the written prompts of a built-in
  pattern."""
  pattern = system.pattern
  book = book or PROMPTS.get(pattern.name)
  if book is None:
    raise ValueError(f"pattern {pattern.name!r} has no written prompts ({sorted(PROMPTS)} do); declare "
                     "config.prompts for it")  # fmt: skip
  records = [prompt_record(q) for q in questions]
  out = []
  for r in range(1, rounds + 1):
    per_role = {}
    for role in pattern.roles:
      expected = sorted(slot_order(pattern, role, r == 1))
      segs = []
      for q in records:
        p = book[role](q, r, rounds, task)
        seg = segment(tokenizers[role], render_chat(tokenizers[role], p.system, p.user))
        if sorted(seg.slots) != expected:
          raise ValueError(f"{pattern.name}/{role} round {r}: prompt slots {seg.slots}, pattern expects {expected}")
        segs.append(seg)
      per_role[role] = segs
    out.append(per_role)
  return out


def layouts_by_round(system: System, prompts, steps: int, min_length: int = 16, *,
                     prefix_reuse: bool = True) -> list[dict[str, PromptLayout]]:  # fmt: skip
  """Layouts per round and role; a role keeps one length across rounds so the middle rounds stack. Lengths are
  powers of two of at least `min_length` (training fixes it so batches share one compiled step). With
  `prefix_reuse`, a role's opening shared across rounds gets a prefix block, prefilled once (`role_layouts`)."""
  pattern, last = system.pattern, len(prompts) - 1
  by_role = {
    role: role_layouts([rp[role] for rp in prompts], [slot_order(pattern, role, r == 0) for r in range(last + 1)],
                       steps, uses=[pattern.thinks(role, r == last) or (r == last and role == pattern.decoder)
                                    for r in range(last + 1)], min_length=min_length, prefix_reuse=prefix_reuse)
    for role in pattern.roles
  }  # fmt: skip
  return [{role: by_role[role][r] for role in pattern.roles} for r in range(last + 1)]


@functools.lru_cache(maxsize=8)
def _rounds_fn(graphdef, steps: int):
  # One compiled program per system structure and step count, reused across calls.
  return jax.jit(lambda state, first, middle, last: run_rounds(nnx.merge(graphdef, state), first, middle, last,
                                                               steps=steps))  # fmt: skip


def latent_steps_by_round(pattern, rounds: int, steps: int) -> dict[str, dict[str, int]]:
  """`round r` -> role -> latent steps that role runs in that round."""
  return {
    f"round {r}": {role: steps for role in pattern.roles if pattern.thinks(role, final_round=r == rounds)}
    for r in range(1, rounds + 1)
  }


def _tool_watcher(boxes: Sequence[ToolBox]) -> Watcher:
  def watch(i: int, text: str, cursor: int) -> Interrupt | None:
    call = find_call(text, cursor)
    if call is None:
      return None
    result = boxes[i].run(call)
    return Interrupt(cut=call.end, insert=result, stop=boxes[i].exhausted)

  return watch


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
  prompts: PromptBook | None = None,
  stop_strings: Sequence[str] = (),
  tools: ToolBox | None = None,
  num_samples: int = 1,
  chunk: int = 16,
  max_tool_tokens: int = 256,
  trace: bool = False,
  on_text: TextCallback | None = None,
  on_turn: Callable[[dict], None] | None = None,
  prefix_reuse: bool = True,
) -> AskResult:
  """Answers a batch of questions with the system.

  Args:
    system: agents, links and pattern.
    tokenizers: each role's tokenizer (with a chat template).
    questions: the batch: question strings, or records whose fields declared prompts may name (`prompt_record`).
    rounds: recursion rounds R (>= 1).
    steps: latent steps m per thinking agent (>= 1).
    max_new_tokens: the decoder's budget per sample (shared across a tool loop's continuations).
    task: which final instruction the decoder gets (`math`, `choice`, `code`, `reasoning`).
    sampling: the decoder's sampling settings (default greedy).
    prompts: role prompt book (default: the written prompts of the pattern).
    stop_strings: text that ends the decoder's answer.
    tools: the decoder may call these while it writes (each sample gets a fresh call budget).
    num_samples: samples per question, drawn from the same final latents (pass@k); needs sampling.
    chunk: decode steps between looks at the text (stop strings, tools).
    max_tool_tokens: a tool result is cut to this many tokens.
    trace: run the rounds turn by turn (`patterns.traced`): the accounting gains a per-round, per-agent
      `timeline` and the result keeps each turn's latents. Off, the rounds run as one compiled program.
    on_text: streams the decoder's text: called after each decode chunk with (row, text so far).
    on_turn: called with each timeline entry as it is done (implies `trace`).
    prefix_reuse: prefill each role's opening shared across rounds once per question and start every round (and
      the decoder's text) from its cache (`config.inference.prefix_reuse`); False prefills every prompt whole.
  """
  if rounds < 1 or steps < 1 or num_samples < 1:
    raise ValueError(f"rounds, latent steps and samples must be >= 1, got {rounds}, {steps}, {num_samples}")
  sampling = sampling or SamplingConfig()
  if num_samples > 1 and sampling.greedy:
    raise ValueError("num_samples > 1 needs sampling (greedy decoding would repeat one answer)")
  stages = Stages()
  with stages.stage("prompts"):
    prompt_sets = segmented_prompts(system, tokenizers, questions, rounds=rounds, task=task, book=prompts)
    lays = layouts_by_round(system, prompt_sets, steps, prefix_reuse=prefix_reuse)
    middle = jax.tree.map(lambda *x: jnp.stack(x), *lays[1:-1]) if rounds > 2 else None

  turns = None
  with stages.stage("latent_rounds"):
    if trace or on_turn is not None:
      decoder_input, turns = run_rounds_traced(system, lays, steps=steps, on_turn=on_turn)
    else:
      graphdef, state = nnx.split(system)
      decoder_input = _rounds_fn(graphdef, steps)(state, lays[0], middle, lays[-1] if rounds > 1 else None)
    jax.block_until_ready(decoder_input)

  decoder_role = system.pattern.decoder
  decoder, tok = system.agents[decoder_role].backbone, tokenizers[decoder_role]
  embeds, mask, prefix = decoder_input.embeds, decoder_input.mask, decoder_input.prefix
  if num_samples > 1:  # every question's row k times, next to each other
    embeds, mask = jnp.repeat(embeds, num_samples, axis=0), jnp.repeat(mask, num_samples, axis=0)
    prefix = None if prefix is None else repeat_rows(prefix, num_samples)
  rows = mask.shape[0]
  boxes = [ToolBox(tools.tools, max_calls=tools.max_calls) for _ in range(rows)] if tools else None
  compile_before_decode = stages.compile_s
  with stages.stage("decode"):
    results = generate_text(
      decoder,
      tok,
      inputs_embeds=embeds,
      attention_mask=mask,
      max_new_tokens=max_new_tokens,
      stop_ids=stop_token_ids(tok, chat=True),
      stop_strings=stop_strings,
      watcher=_tool_watcher(boxes) if boxes else None,
      sampling=sampling,
      chunk=chunk if (stop_strings or tools or on_text) else max_new_tokens,
      max_insert_tokens=max_tool_tokens,
      insert_room=(tools.max_calls + 1) * (bucket(max_tool_tokens, minimum=8) + chunk) if tools else 0,
      on_text=on_text,
      prefix_cache=prefix,
    )

  answers = []
  for q_index, question in enumerate(questions):
    group = results[q_index * num_samples : (q_index + 1) * num_samples]
    answers.append(
      Answer(
        question=prompt_record(question).question,
        text=group[0].text,
        samples=[r.text for r in group],
        decoded_tokens=[len(r.ids) for r in group],
        tool_calls=[r.interrupts for r in group],
        finish=[r.finish for r in group],
      )
    )
  thinking = latent_steps_by_round(system.pattern, rounds, steps)
  accounting = {
    "pattern": system.pattern.name,
    "questions": len(questions),
    "rounds": rounds,
    "num_samples": num_samples,
    "latent_steps": thinking,
    "latent_steps_total": sum(sum(v.values()) for v in thinking.values()),
    # role -> slots of its prefix block (prefilled once for all the rounds that start from it) and of each layout
    "prefix_blocks": {role: {"prefix": lays[-1][role].prefix, "length": int(lays[-1][role].mask.shape[1])}
                      for role in system.pattern.roles if lays[-1][role].prefix},  # fmt: skip
    "decoded_tokens": {f"round {rounds}": {decoder_role: sum(len(r.ids) for r in results)}},
    "tool_calls": sum(r.interrupts for r in results),
    "tool_result_tokens": sum(r.inserted_tokens for r in results),
    "wall_s": stages.wall_s,
    "compile_s": stages.compile_s,
    **peak_memory(),
  }
  if turns is not None:
    write = {"round": rounds, "role": decoder_role, "kind": "write", "wall_s": stages.wall_s["decode"],
             "compile_s": stages.compile_s - compile_before_decode, "latent_steps": 0,
             "decoded_tokens": sum(len(r.ids) for r in results)}  # fmt: skip
    accounting["timeline"] = [t.summary() for t in turns] + [write]
    if on_turn is not None:
      on_turn(write)
  return AskResult(answers, accounting, turns)
