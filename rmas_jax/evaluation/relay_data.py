"""Latent-relay records: a fact only one agent reads, asked of an agent that never sees it.

Each record has a `context` (a filler sentence and one stated fact, in either order), a `question` about the fact
that does not contain it and the `answer`; training records also have `gold_reader`, the reader's restating of the
fact in the words a small instruct model uses by itself ("The code is 4716."): its own gold text for the inner stage
(`gold_<role>`; without it the reader would be trained to open with the bare answer, which it never does). Facts are
drawn at random, so an agent that never read the context can only guess: a four-digit code has 9000 values. Train and
held-out files are written from disjoint pools of facts, so no held-out answer ever occurs in training.

Two variants:
  * `recall`: the fact is a code; the answer is the code.
  * `sum`: the context gives two two-digit counts; the answer is their sum, so the decoder must use the relayed
    numbers rather than copy them.

`python -m rmas_jax.evaluation.relay_data --out data/relay` writes `train.jsonl` and `test.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

VARIANTS = ("recall", "sum")

_NAMES = ("Ana", "Bo", "Chidi", "Dara", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kofi", "Lena", "Mateo",
          "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wen", "Yara",
          "Zeno")  # fmt: skip
_THINGS = (  # (what the code opens, the question's phrase)
  ("locker", "the locker code"),
  ("bike lock", "the bike lock code"),
  ("storage unit", "the storage unit code"),
  ("mailbox", "the mailbox code"),
  ("office door", "the office door code"),
  ("safe", "the safe code"),
)
_FILLER = (
  "The meeting ran long, so everyone left late.",
  "Rain was forecast for most of the week.",
  "The printer on the second floor is out of paper again.",
  "Lunch will be served in the small hall today.",
  "A new coffee machine arrived on Monday.",
  "The lift is being serviced until Friday.",
  "Parking behind the building is free after six.",
  "The quarterly report is due at the end of the month.",
  "Someone left a blue umbrella at the front desk.",
  "The heating switches on automatically at seven.",
)
_COUNTED = (("boxes", "packed"), ("letters", "sorted"), ("plants", "watered"), ("chairs", "repaired"),
            ("forms", "checked"))  # fmt: skip


def _fact_pools(variant: str, rng: np.random.Generator) -> list:
  if variant == "recall":
    values = rng.permutation(np.arange(1000, 10000))
    return [int(v) for v in values]
  pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
  order = rng.permutation(len(pairs))
  return [pairs[i] for i in order]


def _split_pools(variant: str, facts: list, n_test: int) -> tuple[list, list]:
  """Held-out facts first; for `sum`, a held-out answer (the sum) never occurs as a training answer either."""
  if variant == "recall":
    return facts[n_test:], facts[:n_test]
  sums = sorted({a + b for a, b in facts})
  held_sums = set(sums[1::3])  # a third of the sums, spread over the range, are held out
  test = [p for p in facts if sum(p) in held_sums][:n_test]
  train = [p for p in facts if sum(p) not in held_sums]
  return train, test


def _record(variant: str, fact, rng: np.random.Generator, *, training: bool) -> dict:
  name = _NAMES[rng.integers(len(_NAMES))]
  filler = _FILLER[rng.integers(len(_FILLER))]
  if variant == "recall":
    thing, phrase = _THINGS[rng.integers(len(_THINGS))]
    stated = f"The code of {name}'s {thing} is {fact}."
    question = f"What is {phrase} that the note gives?"
    answer = str(fact)
    restated = f"The code is {fact}."
  else:
    noun, verb = _COUNTED[rng.integers(len(_COUNTED))]
    a, b = fact
    stated = f"{name} {verb} {a} {noun} in the morning and {b} {noun} in the afternoon."
    question = f"How many {noun} were {verb} that day in all?"
    answer = str(a + b)
    restated = f"The numbers are {a} and {b}."
  sentences = [filler, stated] if rng.integers(2) else [stated, filler]  # the fact first or second
  record = {"context": " ".join(sentences), "question": question, "answer": answer}
  # `gold_reader` is training text: held-out records keep only what an evaluation reads
  return {**record, "gold_reader": restated} if training else record


def relay_records(variant: str, n_train: int, n_test: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
  """Train and held-out records of `variant` whose facts never overlap.

  Args:
    variant: "recall" or "sum".
    n_train: training records (facts may repeat in training when it asks for more than the pool holds).
    n_test: held-out records, each with its own fact.
    seed: the draw.
  """
  if variant not in VARIANTS:
    raise ValueError(f"relay variant {variant!r}: expected one of {VARIANTS}")
  if n_train < 1 or n_test < 1:
    raise ValueError(f"relay records: n_train={n_train}, n_test={n_test}; expected both >= 1")
  rng = np.random.default_rng([seed, VARIANTS.index(variant)])
  train_pool, test_pool = _split_pools(variant, _fact_pools(variant, rng), n_test)
  if len(test_pool) < n_test:
    raise ValueError(f"relay records: only {len(test_pool)} held-out facts for {variant!r}; ask for fewer")
  train = [_record(variant, train_pool[i % len(train_pool)], rng, training=True) for i in range(n_train)]
  test = [_record(variant, f, rng, training=False) for f in test_pool[:n_test]]
  return train, test


def _write_new(path: str, records: list[dict]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m rmas_jax.evaluation.relay_data", description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True, help="folder for train.jsonl and test.jsonl (never overwritten)")
  p.add_argument("--variant", default="recall", choices=VARIANTS)
  p.add_argument("--train", type=int, default=2000, help="training records")
  p.add_argument("--test", type=int, default=200, help="held-out records")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  try:
    train, test = relay_records(args.variant, args.train, args.test, args.seed)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  paths = [os.path.join(args.out, n) for n in ("train.jsonl", "test.jsonl")]
  existing = [q for q in paths if os.path.exists(q)]
  if existing:
    print(f"error: {existing[0]} exists (relay files are never overwritten); choose another --out", file=sys.stderr)
    return 2
  os.makedirs(args.out, exist_ok=True)
  for path, records in zip(paths, (train, test), strict=True):
    _write_new(path, records)
  print(f"wrote {len(train)} training and {len(test)} held-out {args.variant} records to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
