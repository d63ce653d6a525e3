"""Table 4, measured: `python -m rmas_jax.analysis.link_design --config configs/sequential.py`.

For each RecursiveLink design (`1-layer`, `res+1-layer`, `2-layer`, `res+2-layer` in the paper's printed form, and
optionally `official`, the release's LayerNorm-wrapped form), fresh links around the same frozen agents are trained
with the config's `train` recipe (inner stage, then outer stage; shorten it with `--set train.inner_steps=...`)
into `--scratch/<design>/`, then evaluated on the config's held-out questions. Training and evaluation both resume
where they stopped. Writes `DIR/link-design[-<name>].json` and a PNG (accuracy, final training losses).
"""

from __future__ import annotations

import json
import os
import sys
import time

from rmas_jax.analysis import outputs
from rmas_jax.analysis.evals import evaluate_variant, summary_row
from rmas_jax.links.recursive_link import DESIGNS


def link_parameters(system) -> int:
  """Trainable link weights of the system."""
  import jax

  from rmas_jax.training.optimizer import split_links

  return int(sum(x.size for x in jax.tree.leaves(split_links(system)[1])))


def training_curve(workdir: str) -> dict:
  """First and last losses of each stage, and the seconds spent, from `metrics.jsonl`."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  out = {}
  for stage in ("inner", "outer"):
    losses = [r["loss"] for r in rows if r["stage"] == stage]
    if losses:
      tail = losses[-3:]
      out[stage] = dict(steps=len(losses), first_loss=losses[0], last_loss=losses[-1],
                        last3_mean_loss=sum(tail) / len(tail),
                        seconds=sum(r["seconds"] for r in rows if r["stage"] == stage))  # fmt: skip
  return out


def plot(result: dict, path: str) -> str:
  plt = outputs.pyplot()
  rows = result["rows"]
  names = [r["design"] for r in rows]
  fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
  axes[0].bar(names, [r["accuracy"] for r in rows], color="tab:blue")
  axes[0].set_ylabel(f"accuracy (n={rows[0]['n'] if rows else 0})")
  for ax, stage in zip(axes[1:], ("inner", "outer"), strict=True):
    first = [r["training"].get(stage, {}).get("first_loss", float("nan")) for r in rows]
    last = [r["training"].get(stage, {}).get("last3_mean_loss", float("nan")) for r in rows]
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], first, width=0.4, label="first step", color="0.7")
    ax.bar([i + 0.2 for i in x], last, width=0.4, label="mean of last 3 steps", color="tab:orange")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names)
    ax.set_ylabel(f"{stage} loss ({'eq. 5' if stage == 'inner' else 'eq. 6'})")
    ax.legend(fontsize=7)
  for ax in axes:
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(alpha=0.3, axis="y")
  t = result["train"]
  fig.suptitle(f"Link designs — {result['dataset']}; training {t['inner_steps']} inner + {t['outer_steps']} outer "
               f"steps, batch {t['batch_size']}", fontsize=9)  # fmt: skip
  fig.tight_layout()
  return outputs.save_figure(fig, path)


def markdown(result: dict) -> str:
  lines = ["| design | link params | inner loss (first → last 3) | outer loss (first → last 3) | n | accuracy | "
           "s / question | tokens / question |", "|---|--:|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
  for r in result["rows"]:
    cells = []
    for stage in ("inner", "outer"):
      s = r["training"].get(stage)
      cells.append(f"{s['first_loss']:.3f} → {s['last3_mean_loss']:.3f}" if s else "")
    lines.append(f"| {r['design']} | {r['link_parameters']:,} | {cells[0]} | {cells[1]} | {r['n']} | "
                 f"{r['accuracy']:.3f} | {r['seconds_per_question']:.2f} | "
                 f"{r['decoded_tokens_per_question']:.1f} |")  # fmt: skip
  return "\n".join(lines)


def run(args, backbones=None) -> dict:
  """Trains and evaluates each design; `backbones` = `(loaded system, whose agents are reused)`."""
  from rmas_jax.patterns.from_config import LoadedSystem, load_system
  from rmas_jax.patterns.system import build_system
  from rmas_jax.runtime import enable_compilation_cache
  from rmas_jax.training.trainer import train

  enable_compilation_cache()
  config = outputs.load_config_with(args.config, args.set, args.seed)
  base = backbones or load_system(config, progress=False, scan_layers=config.train.scan_layers)
  pattern = base.system.pattern
  agents = {role: base.system.agents[role].backbone for role in pattern.roles}
  result = dict(config=args.config, overrides=list(args.set), dataset=config.eval.dataset, limit=config.eval.limit,
                rounds=config.eval.rounds or config.inference.rounds,
                latent_steps=config.eval.latent_steps or config.inference.latent_steps, seed=config.seed,
                train=config.train.to_dict(), rows=[])  # fmt: skip
  tick = time.perf_counter()
  for design in args.designs:
    c = config.copy_and_resolve_references()
    form = "official" if design == "official" else "paper"
    c.links.form, c.links.design = form, ("res+2-layer" if design == "official" else design)
    system = build_system(pattern, agents, form=form, design=c.links.design, seed=c.seed)
    loaded = LoadedSystem(system, base.tokenizers, base.prompts, base.models)
    workdir = os.path.join(args.scratch, design.replace("+", "_"))
    start = time.perf_counter()
    summary = train(c, workdir, loaded=loaded, progress=False)
    c.eval.method = "recursive_mas"
    res = evaluate_variant(c, workdir, loaded=loaded)
    row = dict(design=design, form=form, link_parameters=link_parameters(system), training=training_curve(workdir),
               skipped_steps=summary["skipped"], **summary_row(res))  # fmt: skip
    result["rows"].append(row)
    print(f"  {design}: accuracy {row['accuracy']:.3f} ({row['n']} q) [{time.perf_counter() - start:.0f}s]",
          flush=True)  # fmt: skip
  result["wall_s"] = time.perf_counter() - tick
  result["table"] = markdown(result)
  stem = outputs.result_stem(args.out, "link-design" + (f"-{args.name}" if args.name else ""))
  written = [outputs.write_json(stem + ".json", result), plot(result, stem + ".png")]
  print(result["table"])
  for path in written:
    print(f"written: {path}", file=sys.stderr)
  return result


def _designs(text: str) -> list[str]:
  names = [x.strip() for x in text.split(",") if x.strip()]
  bad = [n for n in names if n not in (*DESIGNS, "official")]
  if bad:
    raise ValueError(f"--designs: unknown {bad}; expected some of {', '.join((*DESIGNS, 'official'))}")
  return names


def build_parser():
  """The command line of this study."""
  p = outputs.parser(__doc__.split("\n\n")[0], workdir_help="unused (each design trains its own links)")
  p.add_argument("--designs", type=_designs, default=list(DESIGNS), help="comma-separated designs")
  p.add_argument("--scratch", default="runs/analysis/link-design", help="run directories of training and evaluation")
  return p


def main(argv: list[str] | None = None) -> int:
  return outputs.command(build_parser, run, argv)


if __name__ == "__main__":
  sys.exit(main())
