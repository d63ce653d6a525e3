"""Seconds per question of a whole system, and where they go: latent rounds vs the final decode.

For each (rounds R, latent steps m) this asks the same question twice with the config's agents: the first call
compiles, the second is timed. It records the wall time of each stage of the second call (prompt rendering, the
jit-compiled latent rounds, the decoder's text), decoded tokens and the latent steps run. The links are freshly
initialised, so decoded lengths differ between settings; the decode time per token is reported next to them.

Results go to `benchmarks/results/ask-timing-<platform>.json` (an existing file is replaced only with
`--overwrite`; otherwise a timestamped name is used) and a markdown table goes to stdout.

Usage:
  python benchmarks/ask_timing.py [--config configs/sequential.py] [--rounds 1 2 3] [--steps 16 32]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rmas_jax.config_lib import load_config  # noqa: E402
from rmas_jax.patterns.ask import ask  # noqa: E402
from rmas_jax.patterns.from_config import load_system, sampling_of  # noqa: E402
from rmas_jax.results import write_benchmark  # noqa: E402

QUESTION = (
  "A baker makes 24 muffins in the morning and 3 times as many in the afternoon. She sells 70 muffins. "
  "How many muffins are left?"
)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/sequential.py")
  parser.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 3])
  parser.add_argument("--steps", type=int, nargs="+", default=[16, 32])
  parser.add_argument("--max-new-tokens", type=int, default=128)
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args()

  config = load_config(args.config)
  loaded = load_system(config, progress=False)
  rows = []
  for rounds in args.rounds:
    for steps in args.steps:
      kw = dict(rounds=rounds, steps=steps, max_new_tokens=args.max_new_tokens, task=config.task,
                sampling=sampling_of(config), prompts=loaded.prompts)  # fmt: skip
      ask(loaded.system, loaded.tokenizers, [QUESTION], **kw)  # compiles
      result = ask(loaded.system, loaded.tokenizers, [QUESTION], **kw)
      acc, answer = result.accounting, result.answers[0]
      wall = acc["wall_s"]
      total = sum(wall.values())
      stages = {f"{k}_s": v for k, v in wall.items()}
      row = dict(rounds=rounds, latent_steps=steps, seconds_per_question=total, **stages,
                 latent_share=wall["latent_rounds"] / total, decode_share=wall["decode"] / total,
                 latent_steps_total=acc["latent_steps_total"], decoded_tokens=answer.decoded_tokens[0],
                 decode_ms_per_token=1000 * wall["decode"] / max(1, answer.decoded_tokens[0]),
                 latent_ms_per_step=1000 * wall["latent_rounds"] / acc["latent_steps_total"])  # fmt: skip
      rows.append(row)
      print(json.dumps(row), file=sys.stderr, flush=True)

  out = dict(
    config=args.config,
    models={role: spec for role, spec in loaded.models.items()},
    question=QUESTION,
    max_new_tokens=args.max_new_tokens,
    device=str(jax.devices()[0]),
    host=platform.processor() or platform.machine(),
    cpu_count=os.cpu_count(),
    date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    rows=rows,
  )
  path = write_benchmark(f"ask-timing-{jax.default_backend()}", out, overwrite=args.overwrite)
  print("| R | m | s/question | latent rounds s (share) | decode s (share) | tokens | ms/token | ms/latent step |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['rounds']} | {r['latent_steps']} | {r['seconds_per_question']:.2f} | {r['latent_rounds_s']:.2f} "
          f"({r['latent_share']:.0%}) | {r['decode_s']:.2f} ({r['decode_share']:.0%}) | {r['decoded_tokens']} | "
          f"{r['decode_ms_per_token']:.1f} | {r['latent_ms_per_step']:.1f} |")  # fmt: skip
  print(f"written: {path}")


if __name__ == "__main__":
  main()
