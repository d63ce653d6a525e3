"""Many questions through `ask`, a fixed number at a time, so a long list costs a few compiled programs, not one
per batch.

Within a batch, prompts of different lengths are left-padded to their length bucket (`layouts_by_round`), so two
batches whose prompts fall in the same buckets run the same compiled rounds and decode loop. Across batches the
batch size is kept fixed: the last, shorter batch is filled up to a power of two (at most `batch_size`) with
copies of its last question, whose answers are dropped; an example's numbers do not depend on its batch-mates,
so the filler changes nothing but the time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from rmas_jax.generation.sampler import bucket
from rmas_jax.patterns.ask import AskResult, ask


def read_questions(path: str) -> list[str | dict]:
  """Questions from a file: JSON lines with a `question` field (or a bare JSON string), or one question per line
  of plain text. A JSON record is kept whole, so declared prompts can name its other fields (`{context}`). Blank
  lines are skipped; an empty question or a record without one is an error naming its line."""
  if not os.path.isfile(path):
    raise ValueError(f"--questions-file {path}: no such file")
  questions = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, start=1):
      if not line.strip():
        continue
      q = record = line.rstrip("\n")
      if path.endswith((".jsonl", ".json")):
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
        q = record.get("question") if isinstance(record, dict) else record
      if not isinstance(q, str) or not q.strip():
        raise ValueError(f'{path}:{n}: no question (a JSON line needs a non-empty "question" string)')
      questions.append(record if isinstance(record, dict) else q)
  if not questions:
    raise ValueError(f"{path}: no questions in it")
  return questions


def batch_sizes(count: int, batch_size: int) -> list[tuple[int, int]]:
  """`(questions, rows)` per batch: full batches of `batch_size`, then the rest padded to a power of two rows (so
  a list of any length needs at most log2(batch_size) + 1 batch shapes)."""
  if batch_size < 1:
    raise ValueError(f"batch size must be >= 1, got {batch_size}")
  full, rest = divmod(count, batch_size)
  return [(batch_size, batch_size)] * full + ([(rest, min(batch_size, bucket(rest, minimum=1)))] if rest else [])


def questions_of(args) -> list[str | dict]:
  """The questions of `python -m rmas_jax ask`: `--question`, or every one of `--questions-file`."""
  if bool(args.question) == bool(args.questions_file):
    raise ValueError("ask needs --question or --questions-file (one of the two)")
  if args.batch_size < 1:
    raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
  if args.question is not None and not args.question.strip():
    raise ValueError("--question is empty")
  questions = [args.question] if args.question else read_questions(args.questions_file)
  if args.inspect and len(questions) > 1:
    raise ValueError("--inspect reads one question's latents; ask it with --question")
  return questions


def answer_lines(answers) -> str:
  """Several answers, one JSON line each (`question`, `answer`, and `samples` when there are several)."""
  lines = []
  for a in answers:
    record = dict(question=a.question, answer=a.text)
    if len(a.samples) > 1:
      record["samples"] = a.samples
    lines.append(json.dumps(record, ensure_ascii=False))
  return "\n".join(lines)


def merge_accounting(parts: Sequence[dict], answers: Sequence, batch_size: int) -> dict:
  """One accounting for several `ask` batches: times and tool calls summed (filler rows' work included: it was
  done), decoded tokens those of the real questions' answers, peaks the highest."""
  first = parts[0]
  out = {k: v for k, v in first.items() if k not in ("wall_s", "decoded_tokens", "timeline")}
  out.update(questions=len(answers), batches=len(parts), batch_size=batch_size,
             rows=sum(p["questions"] for p in parts))  # fmt: skip
  out["wall_s"] = {k: sum(p["wall_s"].get(k, 0.0) for p in parts) for k in first["wall_s"]}
  out["compile_s"] = sum(p["compile_s"] for p in parts)
  ((last_round, by_role),) = first["decoded_tokens"].items()  # only the decoder writes, in the last round
  (decoder,) = by_role
  out["decoded_tokens"] = {last_round: {decoder: sum(sum(a.decoded_tokens) for a in answers)}}
  for key in ("tool_calls", "tool_result_tokens"):
    out[key] = sum(p[key] for p in parts)
  for key in ("host_peak_bytes", "device_peak_bytes"):
    values = [p.get(key) for p in parts if p.get(key) is not None]
    out[key] = max(values) if values else None
  return out


def ask_batched(system, tokenizers, questions: Sequence[str], *, batch_size: int, **kw) -> AskResult:
  """`ask` over `questions` in batches of `batch_size` (keyword arguments as `ask` takes them).

  Returns one result: every question's answer in order, and the batches' accounting merged (`rows` counts the
  filler rows too). Questions that make one batch without filler are `ask`'s result as it is (tracing included:
  `trace` needs that)."""
  sizes = batch_sizes(len(questions), batch_size)
  if len(sizes) == 1 and sizes[0][0] == sizes[0][1]:
    return ask(system, tokenizers, list(questions), **kw)
  if kw.get("trace") or kw.get("on_turn") is not None:
    raise ValueError("tracing turns (--inspect) takes the questions in one batch")
  answers, parts, start = [], [], 0
  for real, rows in sizes:
    batch = list(questions[start : start + real])
    start += real
    result = ask(system, tokenizers, batch + [batch[-1]] * (rows - real), **kw)
    answers += result.answers[:real]
    parts.append(result.accounting)
  return AskResult(answers, merge_accounting(parts, answers, batch_size))
