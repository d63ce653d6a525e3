"""Figure 8, measured: `python -m rmas_jax.analysis.latent_length --config configs/sequential.py --workdir RUN`.

Evaluates the system (trained links of `--workdir`, else fresh) at each latent thoughts length m on the same
held-out questions (`config.eval`: dataset, limit, rounds), with accuracy, seconds and decoded tokens per question.
Each m is its own resumable evaluation under `--scratch/m<m>/`; the summary goes to
`DIR/latent-length[-<name>].json` with a PNG next to it.
"""

from __future__ import annotations

import sys
import time

from rmas_jax.analysis import outputs
from rmas_jax.analysis.evals import evaluate_variant, summary_row

DEFAULT_LENGTHS = (8, 16, 32, 64, 80)


def plot(result: dict, path: str) -> str:
  plt = outputs.pyplot()
  rows = result["rows"]
  ms = [r["latent_steps"] for r in rows]
  fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
  panels = (("accuracy", "accuracy"), ("seconds_per_question", "seconds per question"),
            ("decoded_tokens_per_question", "decoded tokens per question"))  # fmt: skip
  for ax, (key, label) in zip(axes, panels, strict=True):
    ax.plot(ms, [r[key] for r in rows], marker="o")
    ax.set_xlabel("latent thoughts length m")
    ax.set_ylabel(label)
    ax.set_xticks(ms)
    ax.grid(alpha=0.3)
  n = rows[0]["n"] if rows else 0
  fig.suptitle(f"Latent length sweep — {result['dataset']}, n={n}, r={result['rounds']}, links: {result['links']}",
               fontsize=9)  # fmt: skip
  fig.tight_layout()
  return outputs.save_figure(fig, path)


def markdown(result: dict) -> str:
  lines = ["| m | n | accuracy | s / question | decoded tokens / question |", "|--:|--:|--:|--:|--:|"]
  for r in result["rows"]:
    lines.append(f"| {r['latent_steps']} | {r['n']} | {r['accuracy']:.3f} | {r['seconds_per_question']:.2f} | "
                 f"{r['decoded_tokens_per_question']:.1f} |")  # fmt: skip
  return "\n".join(lines)


def run(args, loaded=None) -> dict:
  """Runs the sweep; `loaded` reuses an already loaded system (its links are restored from `--workdir`)."""
  from rmas_jax.runtime import enable_compilation_cache

  enable_compilation_cache()
  config = outputs.load_config_with(args.config, args.set, args.seed)
  if loaded is None:
    from rmas_jax.patterns.from_config import load_system

    loaded = load_system(config, progress=False)
  rounds = config.eval.rounds or config.inference.rounds
  result = dict(config=args.config, overrides=list(args.set), workdir=args.workdir, dataset=config.eval.dataset,
                split=config.eval.split, limit=config.eval.limit, rounds=rounds, seed=config.seed,
                links="trained" if args.workdir else "fresh", rows=[])  # fmt: skip
  tick = time.perf_counter()
  for m in args.lengths:
    c = config.copy_and_resolve_references()
    c.eval.method = "recursive_mas"
    c.eval.latent_steps = m
    start = time.perf_counter()
    res = evaluate_variant(c, f"{args.scratch}/m{m}", links_from=args.workdir, loaded=loaded)
    row = dict(latent_steps=m, **summary_row(res))
    result["rows"].append(row)
    print(f"  m={m}: accuracy {row['accuracy']:.3f} ({row['n']} q), {row['seconds_per_question']:.1f} s/q, "
          f"{row['decoded_tokens_per_question']:.0f} tokens/q [{time.perf_counter() - start:.0f}s]",
          flush=True)  # fmt: skip
  result["links"] = result["rows"][0]["links"] if result["rows"] else result["links"]
  result["wall_s"] = time.perf_counter() - tick
  result["table"] = markdown(result)
  stem = outputs.result_stem(args.out, "latent-length" + (f"-{args.name}" if args.name else ""))
  written = [outputs.write_json(stem + ".json", result), plot(result, stem + ".png")]
  print(result["table"])
  for path in written:
    print(f"written: {path}", file=sys.stderr)
  return result


def build_parser():
  """The command line of this study."""
  p = outputs.parser(__doc__.split("\n\n")[0])
  p.add_argument("--lengths", type=outputs.ints, default=list(DEFAULT_LENGTHS), help="latent lengths m")
  p.add_argument("--scratch", default="runs/analysis/latent-length", help="run directories of the evaluations")
  return p


def main(argv: list[str] | None = None) -> int:
  return outputs.command(build_parser, run, argv)


if __name__ == "__main__":
  sys.exit(main())
