"""Evaluations that a study runs under variations (latent length, link design, rounds): each in a scratch run
directory of its own, so `eval.py`'s resumable, never-overwritten result files keep one variant each, with trained
links read through a link to the training run's checkpoints."""

from __future__ import annotations

import os

ROW_KEYS = ("accuracy", "n", "seconds_per_question", "decoded_tokens_per_question", "wall_time_s", "links",
            "process_cpu_s")  # fmt: skip


def evaluate_variant(config, scratch: str, *, links_from: str = "", loaded=None) -> dict:
  """`evaluate(config, scratch)` with `scratch/checkpoints` pointing at `links_from/checkpoints` when given.

  A finished variant is read back instead of re-run (evaluation results are never overwritten), and an interrupted
  one resumes from its partial records. The result gains `process_cpu_s`: this process's CPU seconds spent on it
  (compilation included; None when it was read back or resumed), a measure that other jobs on a shared machine
  disturb less than wall time."""
  import time

  from rmas_jax.evaluation.runner import evaluate

  os.makedirs(scratch, exist_ok=True)
  if links_from:
    source = os.path.abspath(os.path.join(links_from, "checkpoints"))
    if not os.path.isdir(source):
      raise ValueError(f"--workdir {links_from}: no checkpoints directory")
    target = os.path.join(scratch, "checkpoints")
    if os.path.islink(target) and os.readlink(target) != source:
      raise ValueError(f"{target} links to {os.readlink(target)}, not {source}; use a new scratch directory")
    if not os.path.lexists(target):
      os.symlink(source, target)
  cpu = time.process_time()
  result = evaluate(config, scratch, loaded=loaded, progress=False)
  fresh = not result.get("read_back") and not result.get("resumed_from")  # all of it computed in this call
  return dict(result, process_cpu_s=time.process_time() - cpu if fresh else None)


def summary_row(result: dict) -> dict:
  """The fields a study table shows, plus compact per-question records."""
  row = {k: result[k] for k in ROW_KEYS}
  row["records"] = [dict(id=r["id"], correct=r["correct"], extracted=r["extracted"], gold=r["gold"],
                         tokens=r["tokens"], seconds=r["seconds"]) for r in result["records"]]  # fmt: skip
  return row
