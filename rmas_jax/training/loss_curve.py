"""`python -m rmas_jax.training.loss_curve RUN_DIR [OUT.png]`: plots a run's `metrics.jsonl`, one panel per stage."""

from __future__ import annotations

import json
import os
import sys


def plot(run_dir: str, out: str | None = None) -> str:
  """Writes the loss curve of `run_dir` (default `run_dir/loss.png`) and returns its path."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  path = os.path.join(run_dir, "metrics.jsonl")
  if not os.path.exists(path):
    raise ValueError(f"{path}: no such file; is {run_dir} a training run directory?")
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  stages = [s for s in ("inner", "outer") if any(r["stage"] == s for r in rows)]
  if not stages:
    raise ValueError(f"{path}: no training steps recorded yet")
  labels = {
    "inner": "inner loop: train.inner_objective (1 - cos is eq. 5)",
    "outer": "outer loop: answer cross-entropy (eq. 6)",
  }
  fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.5), squeeze=False)
  for ax, stage in zip(axes[0], stages, strict=True):
    pts = [(r["step"], r["loss"]) for r in rows if r["stage"] == stage and r["finite"]]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", linewidth=1, label="training batch")
    held = [(r["step"], r["loss"]) for r in rows if r["stage"] == f"heldout_{stage}"]
    if held:  # `train.eval_every`: the same held-out examples each time
      ax.plot([p[0] for p in held], [p[1] for p in held], marker="o", linewidth=1.5, label="held-out")
      ax.legend(fontsize=8)
    ax.set_title(labels[stage], fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  out = out or os.path.join(run_dir, "loss.png")
  fig.savefig(out, dpi=110)
  return out


if __name__ == "__main__":
  if len(sys.argv) not in (2, 3):
    sys.exit("usage: python -m rmas_jax.training.loss_curve RUN_DIR [OUT.png]")
  print(plot(*sys.argv[1:]))
