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
from rmas_jax.patterns.ask import PROMPTS, PromptBook, layouts_by_round, segmented_prompts
from rmas_jax.patterns.system import GoldResponse, System
from rmas_jax.prompts import roles
from rmas_jax.prompts.records import prompt_record
from rmas_jax.prompts.slots import PromptLayout, render_chat, slot
from rmas_jax.weights.tokenizer import stop_token_ids

_FINAL_LINE = re.compile(r"\n?####\s*(.+?)\s*$")
TARGETS = ("gold", "final")


def gold_response(example: Example, task: str = "math") -> tuple[str, str]:
  """What the decoder should write, as (worked solution when the data has one, final answer line)."""
  worked = example.meta.get("answer_cot") or ""
  worked = _FINAL_LINE.sub("", worked).strip()
  final = f"The answer is \\boxed{{{example.answer}}}." if task in ("math", "choice") else example.answer
  return worked, final


def response_ids(tokenizer, example: Example, task: str, limit: int, *, target: str = "gold") -> list[int] | None:
  """The decoder's whole gold response as ids with its end-of-turn id, or None when it does not fit `limit`.

  A response is never cut: a cut solution teaches the decoder to stop mid-sentence, so an example whose response
  does not fit is left out instead (`fitting_examples`). `target` "gold" is the worked solution (when the data has
  one) then the final answer line; "final" is the final answer line alone.
  """
  if target not in TARGETS:
    raise ValueError(f"config.train.target: {target!r}; expected one of {TARGETS}")
  worked, final = gold_response(example, task)
  text = f"{worked}\n{final}" if worked and target == "gold" else final
  ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [stop_token_ids(tokenizer, chat=True)[-1]]
  return ids if len(ids) <= limit else None


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
    return response_ids(tokenizer, example, task, 1 << 30)[:limit]  # teacher forcing keeps the first `limit`
  ids = tokenizer(own[1], add_special_tokens=False)["input_ids"]
  return (ids + [stop_token_ids(tokenizer, chat=True)[-1]])[:limit]


def outer_batch(system: System, tokenizers, examples: Sequence[Example], *, rounds: int, steps: int, task: str,
                target_tokens: int, min_prompt: int, book: PromptBook | None = None, teacher_forced: bool = False,
                target: str = "gold", whole: bool = True) -> OuterBatch:  # fmt: skip
  """Prompts of every round for `examples`, laid out like `ask` does, and their whole gold answers (`target_tokens`
  slots, right-padded; every answer must fit, see `fitting_examples`); with `teacher_forced`, every thinking role's
  gold response too. `whole=False` keeps the first `target_tokens` of longer answers instead: for measurements of
  a fixed shape (the analyses, benchmarks), never for training, which it would teach to stop mid-sentence."""
  prompts = segmented_prompts(system, tokenizers, examples, rounds=rounds, task=task, book=book)
  # One layout for every batch, so the run compiles one outer step: prefix blocks would follow the bucket of each
  # batch's shared opening (the question's length), and frozen backbones make them exact anyway.
  lays = layouts_by_round(system, prompts, steps, min_length=min_prompt, prefix_reuse=False)
  middle = jax.tree.map(lambda *x: jnp.stack(x), *lays[1:-1]) if rounds > 2 else None
  tok = tokenizers[system.pattern.decoder]
  if whole:
    answers = [response_ids(tok, e, task, target_tokens, target=target) for e in examples]
  else:
    answers = [response_ids(tok, e, task, 1 << 30, target=target)[:target_tokens] for e in examples]
  if any(a is None for a in answers):
    i = next(i for i, a in enumerate(answers) if a is None)
    raise ValueError(f"example {examples[i].id}: its gold answer does not fit train.target_tokens={target_tokens}")
  target_ids, target_mask = _right_padded(answers, target_tokens)
  gold = None
  if teacher_forced:
    gold = {}
    for role in system.pattern.roles:
      ids, mask = _right_padded([_gold_ids(tokenizers[role], e, role, task, target_tokens) for e in examples],
                                target_tokens)  # fmt: skip
      gold[role] = GoldResponse(jnp.asarray(ids), jnp.asarray(mask))
  return OuterBatch(lays[0], middle, lays[-1] if rounds > 1 else None, jnp.asarray(target_ids),
                    jnp.asarray(target_mask), gold)  # fmt: skip


def inner_prompt(question: str, task: str) -> roles.RolePrompt:
  """A generic inner-loop turn: an agent answering the question on its own (used where no role prompt applies)."""
  return roles.RolePrompt(roles.SYSTEM, f"Problem:\n{question}\n\n{roles.final_instruction(task)}")


def gold_text(example: Example, role: str, decoder: str, task: str, target: str = "gold") -> str:
  """What `role` should write for `example`: its own `gold_<role>` text when the data has one, else the decoder's
  gold response (the release's fallback)."""
  own = role_gold(example, role, task)
  if own is not None:
    return own[1]
  worked, final = gold_response(example, task)
  return f"{worked}\n{final}" if worked and target == "gold" else final


def inner_turn(system: System, book: PromptBook | None, role: str, example: Example, *, rounds: int, task: str,
               target: str = "gold") -> roles.RolePrompt:  # fmt: skip
  """`role`'s own round-1 prompt for the inner loop, as the release trains it: each slot holds, as text, the gold
  text of the role that sends into it."""
  pattern = system.pattern
  book = book or PROMPTS.get(pattern.name)
  if book is None:
    raise ValueError(f"pattern {pattern.name!r} has no written prompts; declare config.prompts for it")
  turn = book[role](prompt_record(example), 1, rounds, task)
  user = turn.user
  for e in pattern.incoming(role, feedback=False):
    user = user.replace(slot(e.slot), gold_text(example, e.src, pattern.decoder, task, target))
  return roles.RolePrompt(turn.system, user)


def inner_sequence(tokenizer, turn: roles.RolePrompt, response: str, length: int) -> tuple[list[int], list[int]] | None:
  """`(ids, marks)` of the rendered turn then the whole response and an end-of-turn id (marks 1 on the response),
  or None when they do not fit `length`: neither the prompt's chat header nor the response is ever cut."""
  prompt = tokenizer(render_chat(tokenizer, turn.system, turn.user), add_special_tokens=False)["input_ids"]
  answer = tokenizer(response, add_special_tokens=False)["input_ids"] + [stop_token_ids(tokenizer, chat=True)[-1]]
  if len(prompt) + len(answer) > length:
    return None
  return prompt + answer, [0] * len(prompt) + [1] * len(answer)


def stack_inner(sequences: Sequence[tuple[list[int], list[int]]], length: int):
  """`(ids, mask, response)` `[B, length]`, left-padded, from `inner_sequence` outputs."""
  ids, mask = left_pad([s for s, _ in sequences], length)
  response, _ = left_pad([m for _, m in sequences], length)
  return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(response.astype(bool))


def inner_batch(tokenizer, examples: Sequence[Example], *, task: str, length: int, whole: bool = True):
  """`(ids, mask, response)` `[B, length]` of the generic turn (`inner_prompt`) and each example's whole gold
  response; an example that does not fit `length` is an error (filter with `inner_sequence` first). With
  `whole=False` (measurements of a fixed shape only, see `outer_batch`) a long one keeps at most half the slots of
  its response and the end of its prompt."""
  seqs = []
  for e in examples:
    worked, final = gold_response(e, task)
    response = f"{worked}\n{final}" if worked else final
    seq = inner_sequence(tokenizer, inner_prompt(e.question, task), response, length if whole else 1 << 30)
    if seq is None:
      raise ValueError(f"example {e.id}: prompt and gold response do not fit train.inner_tokens={length}")
    if not whole and len(seq[0]) > length:
      ids, marks = seq
      start = marks.index(1)
      answer = ids[start:][: max(1, length // 2)]
      prompt = ids[:start][-(length - len(answer)) :]
      seq = (prompt + answer, [0] * len(prompt) + [1] * len(answer))
    seqs.append(seq)
  return stack_inner(seqs, length)
