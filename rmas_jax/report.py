"""`python -m rmas_jax.report DIR [DIR ...]`: the evaluation results of run directories as one markdown table
(method × rounds: accuracy with its Wilson 95 % interval, decoded tokens and seconds per question, and speed-up and
token reduction against `recursive_text_mas` at the same rounds where that was evaluated), then, for every pair of
results on the same questions, the paired comparison (exact McNemar p-value over the questions where exactly one
was right), plus PNG plots of accuracy, time and tokens against rounds, written next to the first directory's
results. A skipped question (too long to ask) counts as wrong."""

from __future__ import annotations

import glob
import itertools
import json
import os
import sys

from rmas_jax.evaluation.paired import mcnemar_exact, paired_counts, wilson_interval


def load_results(directories: list[str]) -> list[dict]:
  """Every finished `DIR/eval/*.json` result (partial records are not results)."""
  rows = []
  for d in directories:
    for path in sorted(glob.glob(os.path.join(d, "eval", "*.json"))):
      with open(path) as f:
        r = json.load(f)
      correct = {x["id"]: bool(x.get("correct")) for x in r.get("records", [])}
      rows.append(dict(run=d, name=os.path.splitext(os.path.basename(path))[0], dataset=r["dataset"],
                       method=r["method"], rounds=r["rounds"], links=r.get("links", ""), n=r["n"],
                       accuracy=r["accuracy"], tokens=r["decoded_tokens_per_question"] or 0.0,
                       seconds=r["seconds_per_question"] or 0.0, correct=correct))  # fmt: skip
  if not rows:
    raise ValueError(f"no evaluation results under {', '.join(d + '/eval' for d in directories)}")
  return rows


def markdown(rows: list[dict]) -> str:
  """The comparison table; speed-up = text seconds / ours, token reduction = 1 - ours / text tokens."""
  text = {(r["dataset"], r["rounds"]): r for r in rows if r["method"] == "recursive_text_mas"}
  lines = ["| run | dataset | method | r | links | n | accuracy | 95 % interval | tokens / q | s / q | speed-up | "
           "token reduction |", "|---|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
  for r in sorted(rows, key=lambda r: (r["dataset"], r["method"], r["rounds"], r["run"])):
    base = text.get((r["dataset"], r["rounds"]))
    speed = f"{base['seconds'] / r['seconds']:.2f}×" if base and r is not base else ""
    saved = f"{1 - r['tokens'] / base['tokens']:.1%}" if base and r is not base and base["tokens"] else ""
    right = round(r["accuracy"] * r["n"])
    lo, hi = wilson_interval(right, r["n"])
    lines.append(f"| {r['run']} | {r['dataset']} | {r['method']} | {r['rounds']} | {r['links']} | {r['n']} | "
                 f"{r['accuracy']:.3f} | {lo:.3f}–{hi:.3f} | {r['tokens']:.1f} | {r['seconds']:.2f} | {speed} | "
                 f"{saved} |")  # fmt: skip
  return "\n".join(lines)


def _label(r: dict) -> str:
  return f"{os.path.basename(r['run'].rstrip('/'))}/{r['name']}"


def paired_markdown(rows: list[dict]) -> str:
  """Every pair of results that share question ids: how many each alone got right and the exact McNemar p-value
  (two-sided). Empty when no two results share a question."""
  lines = []
  for a, b in itertools.combinations(sorted(rows, key=_label), 2):
    try:
      c = paired_counts(a["correct"], b["correct"])
    except ValueError:
      continue
    p = mcnemar_exact(c["only_a"], c["only_b"])
    lines.append(f"| {_label(a)} | {_label(b)} | {c['n']} | {c['both']} | {c['only_a']} | {c['only_b']} | "
                 f"{c['neither']} | {p:.3g} |")  # fmt: skip
  if not lines:
    return ""
  head = ["| A | B | shared questions | both right | only A | only B | neither | McNemar p |",
          "|---|---|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
  return "\n".join(head + lines)


def plot(rows: list[dict], out_dir: str) -> list[str]:
  """Accuracy, seconds and tokens per question against rounds, one line per (method, run)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  written = []
  for key, label in (("accuracy", "accuracy"), ("seconds", "seconds per question"), ("tokens", "tokens per question")):
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in rows:
      series.setdefault((r["method"], r["run"]), []).append((r["rounds"], r[key]))
    for (method, run), pts in sorted(series.items()):
      pts.sort()
      ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{method} ({os.path.basename(run)})")
    ax.set_xlabel("recursion rounds r")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, f"report-{key}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
  return written


def main(argv: list[str]) -> int:
  if not argv:
    print("usage: python -m rmas_jax.report DIR [DIR ...]", file=sys.stderr)
    return 2
  try:
    rows = load_results(argv)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  table = markdown(rows)
  paired = paired_markdown(rows)
  if paired:
    table += "\n\nPaired on the same questions (exact McNemar test):\n\n" + paired
  out_dir = os.path.join(argv[0], "eval")
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write(table + "\n")
  print(table)
  for path in plot(rows, out_dir):
    print(f"written: {path}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
