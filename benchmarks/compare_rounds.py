"""RecursiveMAS against Recursive-TextMAS at r = 1, 2, 3 (the paper's Table 2 and Figures 5–6, on CPU).

One process loads the system once and evaluates, on the same held-out questions, `recursive_mas` (latent rounds,
trained links from `--links`) and `recursive_text_mas` (every agent writes text, which fills the receivers' slots)
at each r, then `single` (the decoder alone). Every evaluation runs its first batch once untimed
(`eval.warmup`), so seconds per question leave compiling out. The result files go to `OUT/eval/`; an existing one
is kept (results are never overwritten) and an interrupted run resumes. `python -m rmas_jax.report OUT` then
writes the table and plots.

Usage:
  PYTHONPATH=. python benchmarks/compare_rounds.py [--config configs/sequential.py] [--links runs/seq]
      [--out benchmarks/results/eval-compare] [--limit 30] [--batch-size 6] [--rounds 1 2 3] [--no-single]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rmas_jax.config_lib import load_config  # noqa: E402
from rmas_jax.evaluation.runner import evaluate  # noqa: E402
from rmas_jax.patterns.from_config import load_system  # noqa: E402
from rmas_jax.runtime import enable_compilation_cache  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/sequential.py")
  parser.add_argument("--links", default="runs/seq", help="run directory with trained links (untrained if none)")
  parser.add_argument("--out", default="benchmarks/results/eval-compare")
  parser.add_argument("--limit", type=int, default=30)
  parser.add_argument("--batch-size", type=int, default=6)
  parser.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 3])
  parser.add_argument("--no-single", action="store_true", help="skip the decoder-alone baseline")
  args = parser.parse_args()

  enable_compilation_cache()
  config = load_config(args.config)
  config.eval.limit = args.limit
  config.eval.batch_size = args.batch_size
  config.eval.warmup = True
  loaded = load_system(config, progress=True)
  plan = [(m, r) for r in args.rounds for m in ("recursive_mas", "recursive_text_mas")]
  plan += [] if args.no_single else [("single", 1)]
  for method, rounds in plan:
    config.eval.method = method
    config.eval.rounds = rounds
    result = evaluate(config, args.out, loaded=loaded, links_from=args.links)
    keys = ("method", "rounds", "links", "n", "accuracy", "decoded_tokens_per_question", "seconds_per_question")
    print(json.dumps({k: result[k] for k in keys}), flush=True)


if __name__ == "__main__":
  main()
