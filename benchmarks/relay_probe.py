"""Where the relay's fact is lost: linear read-outs of the code's digits from the reader's latents.

`python benchmarks/relay_probe.py --workdir runs/relay --out benchmarks/results/relay/probe.json [--set K=V ...]`
runs the reader on training records of `configs/relay.py` with a run's links (fresh ones without `--workdir`), and
fits a ridge read-out of each of the four digits from (a) each latent step's `R_in` output, (b) all steps together and
(c) the outer link's output; accuracy is on records the read-out was not fitted on (chance 0.1). A digit that a
linear read-out finds in the outer link's output but the answerer does not write is lost in the answerer's reading,
not in the links.
"""

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def readout_accuracy(features: np.ndarray, digits: np.ndarray, fit: int, ridge: float = 50.0) -> list[float]:
  """Per-digit accuracy of a ridge read-out fitted on the first `fit` rows, scored on the rest.

  Args:
    features: `[N, F]`.
    digits: `[N, 4]` ints 0..9.
    fit: rows to fit on.
    ridge: the L2 penalty on standardised features.
  """
  x = (features - features[:fit].mean(0)) / (features[:fit].std(0) + 1e-6)
  out = []
  for k in range(digits.shape[1]):
    onehot = np.eye(10)[digits[:, k]]
    w = np.linalg.solve(x[:fit].T @ x[:fit] + ridge * np.eye(x.shape[1]), x[:fit].T @ onehot[:fit])
    out.append(float((np.argmax(x[fit:] @ w, 1) == digits[fit:, k]).mean()))
  return out


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", help="a relay training run (its latest links); fresh links without it")
  p.add_argument("--out", required=True, help="result JSON (never overwritten)")
  p.add_argument("--records", type=int, default=480)
  p.add_argument("--held", type=int, default=160, help="records the read-outs are scored on, not fitted on")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
  args = p.parse_args()
  if os.path.exists(args.out):
    print(f"error: --out {args.out}: the file exists; choose a new name", file=sys.stderr)
    return 2
  from rmas_jax.config_lib import apply_overrides, load_config
  from rmas_jax.patterns.ask import ask
  from rmas_jax.patterns.from_config import load_system
  from rmas_jax.training.trainer import restore_links

  config = load_config("configs/relay.py")
  apply_overrides(config, args.set)
  loaded = load_system(config, progress=False)
  step = restore_links(config, loaded.system, args.workdir) if args.workdir else None
  with open(config.train.data_path) as f:
    records = [json.loads(line) for line in f][: args.records]
  thoughts, sent, digits = [], [], []
  steps = config.inference.latent_steps
  for i in range(0, len(records), 32):
    batch = records[i : i + 32]
    result = ask(loaded.system, loaded.tokenizers, batch, rounds=1, steps=steps, max_new_tokens=1,
                 task=config.task, prompts=loaded.prompts, trace=True)  # fmt: skip
    (turn,) = result.trace
    thoughts.append(np.asarray(turn.thoughts))
    sent.append(np.asarray(next(iter(turn.sent.values()))))
    digits += [[int(c) for c in r["answer"]] for r in batch]
  x, s, y = np.concatenate(thoughts), np.concatenate(sent), np.array(digits)
  fit = len(y) - args.held
  result = dict(
    workdir=args.workdir, step=step, overrides=args.set, records=len(y), scored_on=args.held, chance=0.1,
    inner_by_step=[readout_accuracy(x[:, k], y, fit) for k in range(steps)],
    inner_all_steps=readout_accuracy(x.reshape(len(y), -1), y, fit),
    outer_all_steps=readout_accuracy(s.reshape(len(y), -1), y, fit),
  )  # fmt: skip
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "x") as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
