"""Questions per second of `ask` at batch 1, 4 and 16 (add 64 on a GPU), with every answer checked against the
batch-1 answer of the same question.

The same `--questions` questions (of different lengths: short and long variants of a few templates) are answered
at each batch size with `ask_batched`; every answer decodes exactly `--max-new-tokens` tokens
(`generation.ignore_eos`), so batch sizes do equal work. Before each batch size, an untimed warm-up (by default the
whole list once) compiles every batch shape. Reported per batch size: questions per second, the speed-up over batch
1, seconds in the latent rounds and in decoding, the warm-up's compile time and the timed run's (which should be
0), and how many answers equal the first batch size's text for text (batch independence; greedy).

Results go to `benchmarks/results/batch-scaling-<platform>.json` (replaced only with `--overwrite`; otherwise a
timestamped name) and a markdown table to stdout. `--smoke` runs `configs/tiny.py` at batch 1 and 2 with tiny
settings into a temporary file: it checks the wiring, not the speed.

Usage:
  python benchmarks/batch_scaling.py [--config configs/sequential.py] [--batch-sizes 1 4 16] [--questions 32]
  python benchmarks/batch_scaling.py --smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rmas_jax.config_lib import apply_overrides, load_config  # noqa: E402
from rmas_jax.patterns.batched import ask_batched, read_questions  # noqa: E402
from rmas_jax.patterns.from_config import load_system, sampling_of  # noqa: E402
from rmas_jax.results import write_benchmark  # noqa: E402

TEMPLATES = [
  "A shop sells {a} pencils on Monday and {b} on Tuesday. How many pencils does it sell?",
  "Mia has {a} stickers. She gives {b} to her brother and then buys twice as many as she gave away. How many "
  "stickers does she have now, and how many more than at the start?",
  "A train leaves at 9:00 and travels {a} km at {b} km per hour. When does it arrive?",
  "A farmer keeps {a} hens. Each hen lays {b} eggs a week, the family eats 10 eggs a week and sells the rest in "
  "boxes of 6. How many full boxes does the farmer sell in four weeks?",
]


def questions_of(n: int) -> list[str]:
  """`n` questions of several lengths (the templates in turn, numbers varied)."""
  return [TEMPLATES[i % len(TEMPLATES)].format(a=12 + 7 * i, b=3 + i % 5) for i in range(n)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/sequential.py")
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
  parser.add_argument("--questions", type=int, default=32, help="questions answered at each batch size")
  parser.add_argument("--questions-file", help="questions from a file (JSON lines with `question`, or plain lines)")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--steps", type=int, default=16)
  parser.add_argument("--max-new-tokens", type=int, default=64)
  parser.add_argument(
    "--warmup",
    choices=["all", "first"],
    default="all",
    help="untimed before each batch size: the whole list (every shape compiled) or its first batch",
  )
  parser.add_argument("--smoke", action="store_true", help="tiny models and settings: checks the wiring")
  parser.add_argument("--out", help="write the result here instead of benchmarks/results/")
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args()
  if args.smoke:
    args.config, args.batch_sizes, args.questions, args.rounds, args.steps = "configs/tiny.py", [1, 2], 3, 2, 2
    args.max_new_tokens = 4
    args.out = args.out or os.path.join(tempfile.mkdtemp(prefix="batch-scaling-smoke-"), "batch-scaling.json")
  questions = read_questions(args.questions_file)[: args.questions] if args.questions_file else None
  questions = questions or questions_of(args.questions)

  config = load_config(args.config)
  apply_overrides(config, [f"generation.max_new_tokens={args.max_new_tokens}", "generation.ignore_eos=True"])
  loaded = load_system(config, progress=False)
  kw = dict(rounds=args.rounds, steps=args.steps, max_new_tokens=args.max_new_tokens, task=config.task,
            sampling=sampling_of(config), prompts=loaded.prompts)  # fmt: skip
  rows, reference = [], None
  for size in args.batch_sizes:
    warm = ask_batched(loaded.system, loaded.tokenizers, questions if args.warmup == "all" else questions[:size],
                       batch_size=size, **kw)  # fmt: skip
    start = time.perf_counter()
    result = ask_batched(loaded.system, loaded.tokenizers, questions, batch_size=size, **kw)
    wall = time.perf_counter() - start
    texts = [a.text for a in result.answers]
    reference = reference or texts
    acc = result.accounting
    rows.append(dict(batch_size=size, questions=len(questions), batches=acc["batches"], rows=acc["rows"],
                     wall_s=wall, questions_per_s=len(questions) / wall, latent_rounds_s=acc["wall_s"]["latent_rounds"],
                     decode_s=acc["wall_s"]["decode"], compile_s_in_timed_run=acc["compile_s"],
                     warmup_compile_s=warm.accounting["compile_s"],
                     same_answers_as_first_size=sum(a == b for a, b in zip(texts, reference, strict=True)),
                     decoded_tokens=sum(sum(a.decoded_tokens) for a in result.answers)))  # fmt: skip
    rows[-1]["speedup_vs_first_size"] = rows[-1]["questions_per_s"] / rows[0]["questions_per_s"]
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

  out = dict(
    config=args.config,
    models=dict(loaded.models),
    rounds=args.rounds,
    latent_steps=args.steps,
    max_new_tokens=args.max_new_tokens,
    ignore_eos=True,
    questions=questions,
    device=str(jax.devices()[0]),
    host=platform.processor() or platform.machine(),
    cpu_count=os.cpu_count(),
    date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    smoke=args.smoke,
    rows=rows,
  )
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=2)
    path = args.out
  else:
    path = write_benchmark(f"batch-scaling-{jax.default_backend()}", out, overwrite=args.overwrite)
  print(
    "| batch | questions/s | vs batch 1 | latent rounds s | decode s | same answers as batch 1 | warm-up compile s |"
  )
  print("|--:|--:|--:|--:|--:|--:|--:|")
  for r in rows:
    print(f"| {r['batch_size']} | {r['questions_per_s']:.3f} | {r['speedup_vs_first_size']:.2f}× | "
          f"{r['latent_rounds_s']:.1f} | {r['decode_s']:.1f} | {r['same_answers_as_first_size']}/{r['questions']} | "
          f"{r['warmup_compile_s']:.1f} |")  # fmt: skip
  print(f"written: {path}")


if __name__ == "__main__":
  main()
