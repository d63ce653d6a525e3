"""Training examples as fixed-shape arrays: the outer loop's per-round prompt layouts and gold answers, and the inner
loop's prompt + gold response sequences. Fixed lengths mean one compiled training step for the whole run."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rmas_jax.evaluation.datasets import Example
from rmas_jax.generation.sampler import left_pad
from rmas_jax.patterns.ask import PromptBook, layouts_by_round, segmented_prompts
from rmas_jax.patterns.system import GoldResponse, System
from rmas_jax.prompts import roles
from rmas_jax.prompts.slots import PromptLayout, render_chat
from rmas_jax.weights.tokenizer import stop_token_ids

_FINAL_LINE = re.compile(r"\n?####\s*(.+?)\s*$")


def gold_response(example: Example, task: str = "math") -> tuple[str, str]:
  """What the decoder should write, as (worked solution when the data has one, final answer line)."""
  worked = example.meta.get("answer_cot") or ""
  worked = _FINAL_LINE.sub("", worked).strip()
  final = f"The answer is \\boxed{{{example.answer}}}." if task in ("math", "choice") else example.answer
  return worked, final


def response_ids(tokenizer, example: Example, task: str, limit: int) -> list[int]:
  """Gold response ids within `limit`: the worked solution, cut short if need be, then always the final answer
  line and an end-of-turn id (so a short budget still teaches where the answer goes)."""
  worked, final = gold_response(example, task)
  tail = tokenizer(("\n" if worked else "") + final, add_special_tokens=False)["input_ids"]
  tail = tail + [stop_token_ids(tokenizer, chat=True)[-1]]
  if len(tail) >= limit:
    return tail[-limit:]
  head = tokenizer(worked, add_special_tokens=False)["input_ids"] if worked else []
  return head[: limit - len(tail)] + tail


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class OuterBatch:
  """One outer-loop batch: layouts of round 1, the stacked middle rounds (or None) and the last round (or None
  with one round), and the gold answers `[B, L]` right-padded."""

  first: dict[str, PromptLayout]
  middle: dict[str, PromptLayout] | None
  last: dict[str, PromptLayout] | None
  target: jax.Array
  target_mask: jax.Array
  gold: dict[str, GoldResponse] | None = None


def role_gold(example: Example, role: str, task: str) -> tuple[str, str] | None:
  """A role's own gold text for teacher forcing, when the data has one (`meta["gold_<role>"]`, like the release's
  plan / refined_plan columns); None means the decoder's gold response stands in (the release's fallback)."""
  text = example.meta.get(f"gold_{role}")
  return ("", str(text)) if text else None


def _right_padded(rows: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
  ids = np.zeros((len(rows), length), np.int32)
  mask = np.zeros((len(rows), length), bool)
  for i, row in enumerate(rows):
    ids[i, : len(row)], mask[i, : len(row)] = row, True
  return ids, mask


def _gold_ids(tokenizer, example: Example, role: str, task: str, limit: int) -> list[int]:
  own = role_gold(example, role, task)
  if own is None:
    return response_ids(tokenizer, example, task, limit)
  ids = tokenizer(own[1], add_special_tokens=False)["input_ids"]
  return (ids + [stop_token_ids(tokenizer, chat=True)[-1]])[:limit]


def outer_batch(system: System, tokenizers, examples: Sequence[Example], *, rounds: int, steps: int, task: str,
                target_tokens: int, min_prompt: int, book: PromptBook | None = None,
                teacher_forced: bool = False) -> OuterBatch:  # fmt: skip
  """Prompts of every round for `examples`, laid out like `ask` does, and their gold answers; with
  `teacher_forced`, every thinking role's gold response too (`target_tokens` long, right-padded)."""
  questions = [e.question for e in examples]
  prompts = segmented_prompts(system, tokenizers, questions, rounds=rounds, task=task, book=book)
  lays = layouts_by_round(system, prompts, steps, min_length=min_prompt)
  middle = jax.tree.map(lambda *x: jnp.stack(x), *lays[1:-1]) if rounds > 2 else None
  tok = tokenizers[system.pattern.decoder]
  target, target_mask = _right_padded([response_ids(tok, e, task, target_tokens) for e in examples], target_tokens)
  gold = None
  if teacher_forced:
    gold = {}
    for role in system.pattern.roles:
      ids, mask = _right_padded([_gold_ids(tokenizers[role], e, role, task, target_tokens) for e in examples],
                                target_tokens)  # fmt: skip
      gold[role] = GoldResponse(jnp.asarray(ids), jnp.asarray(mask))
  return OuterBatch(lays[0], middle, lays[-1] if rounds > 1 else None, jnp.asarray(target), jnp.asarray(target_mask),
                    gold)  # fmt: skip


def inner_prompt(question: str, task: str) -> roles.RolePrompt:
  """The inner loop's turn: any agent answering the question on its own (the link learns the agent's own
  hidden-to-embedding map, so the role does not matter)."""
  return roles.RolePrompt(roles.SYSTEM, f"Problem:\n{question}\n\n{roles.final_instruction(task)}")


def inner_batch(tokenizer, examples: Sequence[Example], *, task: str, length: int):
  """`(ids, mask, response)` `[B, length]`, left-padded: the rendered prompt then the gold response (cut first)."""
  seqs, marks = [], []
  for e in examples:
    p = inner_prompt(e.question, task)
    prompt = tokenizer(render_chat(tokenizer, p.system, p.user), add_special_tokens=False)["input_ids"]
    answer = response_ids(tokenizer, e, task, max(1, length - len(prompt)))
    prompt = prompt[-(length - len(answer)) :]
    seqs.append(prompt + answer)
    marks.append([0] * len(prompt) + [1] * len(answer))
  ids, mask = left_pad(seqs, length)
  response, _ = left_pad(marks, length)
  return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(response.astype(bool))
