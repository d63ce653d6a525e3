"""Seconds per question side by side, equal work: ours against the release's way (latent steps without a KV
cache: the whole sequence re-run at every step) and against PyTorch with a KV cache, for m in 16, 32, 64 and r in
1..3, the same models, questions and decode length.

The two PyTorch systems are measured by the independent harness `../shared/anchors/torch_anchor.py` (modes A and
B), run as a subprocess once per m right after ours for that m, so both sides see the same machine in the same
minutes. It is read, never copied: the questions are taken from its `QUESTIONS` literal (parsed, not run), so
both sides answer the same five, batch 1, and both decode exactly `--max-new-tokens` tokens (ours with
`generation.ignore_eos`, the harness with `min_new_tokens = max_new_tokens`). Prompts are each side's own. Ours is
timed with prefix reuse on (the default) and, unless `--no-prefix-off`, off too, which measures what the reuse
saves. Before each (m, r) of ours is timed, one question of each layout shape among the questions is asked
untimed, so the timed ones compile nothing; compile time is reported apart.

The harness times r < r_max as the deterministic prefix of its r_max run plus that r's own decode; ours runs each r
on its own. Without the harness (or with `--no-anchor`) only ours is measured.

Results go to `benchmarks/results/vs-peers-<platform>.json` (replaced only with `--overwrite`; otherwise a
timestamped name) and a markdown table of ratios to stdout. `--smoke` runs a tiny configuration (`configs/tiny.py`,
m = 2, r = 1..2, 4 tokens, 2 questions, no harness) into a temporary file: it checks the wiring, not the speed.

Usage:
  python benchmarks/vs_peers.py [--steps 16 32 64] [--rounds 1 2 3] [--max-new-tokens 64] [--overwrite]
  python benchmarks/vs_peers.py --smoke
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rmas_jax.config_lib import apply_overrides, load_config  # noqa: E402
from rmas_jax.patterns.ask import ask, layouts_by_round, segmented_prompts  # noqa: E402
from rmas_jax.patterns.from_config import load_system, sampling_of  # noqa: E402
from rmas_jax.results import write_benchmark  # noqa: E402
from rmas_jax.weights import registry  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANCHOR = os.path.join(os.path.dirname(ROOT), "shared", "anchors", "torch_anchor.py")
# Ours, for runs without the harness (GSM8K-style, written for this benchmark).
OWN_QUESTIONS = [
  "A shop sells pencils for $2 each. Mia buys 7 pencils and pays with a $20 bill. How much change does she get?",
  "A tank holds 120 litres. It is three quarters full and 25 litres are used. How many litres are left?",
  "Sam runs 4 km every weekday and 9 km on Saturday. How many kilometres does he run in 2 weeks?",
  "A class of 28 pupils splits into teams of 4. Each team gets 3 balls. How many balls are needed?",
  "Ana had 150 stickers. She gave 30% to her brother and 18 to a friend. How many stickers does she keep?",
]


def anchor_questions(path: str) -> list[str]:
  """The harness's questions, read from its `QUESTIONS = [(question, answer), ...]` literal without running it."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read())
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "QUESTIONS" for t in node.targets):
      return [q for q, _ in ast.literal_eval(node.value)]
  raise ValueError(f"{path}: no QUESTIONS literal")


def layout_shapes(loaded, question: str, *, rounds: int, steps: int, task: str, prefix_reuse: bool) -> tuple:
  """What decides which compiled program a question runs: each round's and role's layout length and prefix block."""
  prompts = segmented_prompts(loaded.system, loaded.tokenizers, [question], rounds=rounds, task=task,
                              book=loaded.prompts)  # fmt: skip
  lays = layouts_by_round(loaded.system, prompts, steps, prefix_reuse=prefix_reuse)
  return tuple((role, lay.ids.shape, lay.prefix) for by_role in lays for role, lay in by_role.items())


def time_ours(loaded, config, questions, *, rounds: int, steps: int, prefix_reuse: bool) -> dict:
  """Batch-1 seconds per question (median) and its stages. One question of each layout shape among them is asked
  once untimed first, so the timed questions compile nothing (`compile_s_timed` says so)."""
  kw = dict(rounds=rounds, steps=steps, max_new_tokens=config.generation.max_new_tokens, task=config.task,
            sampling=sampling_of(config), prompts=loaded.prompts, prefix_reuse=prefix_reuse)  # fmt: skip
  shapes = {}
  for q in questions:
    shapes.setdefault(layout_shapes(loaded, q, rounds=rounds, steps=steps, task=config.task,
                                    prefix_reuse=prefix_reuse), q)  # fmt: skip
  warm = [ask(loaded.system, loaded.tokenizers, [q], **kw).accounting["compile_s"] for q in shapes.values()]
  per_q = []
  for q in questions:
    start = time.perf_counter()
    result = ask(loaded.system, loaded.tokenizers, [q], **kw)
    total = time.perf_counter() - start
    per_q.append(dict(total_s=total, decoded_tokens=result.answers[0].decoded_tokens[0],
                      compile_s=result.accounting["compile_s"],
                      **{f"{k}_s": v for k, v in result.accounting["wall_s"].items()}))  # fmt: skip
  med = lambda key: statistics.median(r[key] for r in per_q)  # noqa: E731
  return dict(median_total_s=med("total_s"), median_latent_s=med("latent_rounds_s"), median_decode_s=med("decode_s"),
              decoded_tokens=[r["decoded_tokens"] for r in per_q], per_question_total_s=[r["total_s"] for r in per_q],
              compile_s=sum(warm), layout_shapes=len(shapes),
              compile_s_timed=sum(r["compile_s"] for r in per_q))  # fmt: skip


def anchor_command(args, config, m: int) -> list[str]:
  """The harness run for one m: modes B (KV cache) and A (release's way) over r = --rounds."""
  files = [registry.fetch(a["model"], progress=False) for a in sorted(config.agents, key=_role_order)]
  if len({os.path.dirname(f) for f in files}) != 1:
    raise ValueError("the harness needs the three GGUF files in one folder")
  rs = ",".join(map(str, args.rounds))
  nq_a = dict(p.split(":") for p in args.release_questions.split(";")).get(str(m), "0")
  out = os.path.join(args.anchor_dir, f"anchor-m{m}.json")
  return [args.anchor_python, args.anchor, os.path.dirname(files[0]), "--planner", os.path.basename(files[0]),
          "--critic", os.path.basename(files[1]), "--solver", os.path.basename(files[2]), "--modes", "B,A",
          "--grid-a", f"{m}:{rs}", "--grid-b", f"{m}:{rs}", "--nq-a", f"{m}:{nq_a}", "--nq-b", str(args.questions),
          "--new-tokens", str(config.generation.max_new_tokens), "--agree-m", "", "--check-standalone", "",
          "--out-json", out, "--out-md", out.replace(".json", ".md")]  # fmt: skip


def _role_order(agent) -> int:
  return ["planner", "critic", "solver"].index(agent["role"])


def run_anchor(cmd: list[str]) -> dict:
  """Runs the harness; its summary (`B_m16_R1`, `A_m16_R1`, ...), or the error it ended with."""
  start = time.perf_counter()
  done = subprocess.run(cmd, capture_output=True, text=True)
  if done.returncode != 0:
    return dict(error=done.stderr[-2000:], returncode=done.returncode)
  with open(cmd[cmd.index("--out-json") + 1]) as f:
    res = json.load(f)
  return dict(summary=res["summary"], env=res["env"], questions=res["questions"], wall_s=time.perf_counter() - start)


def table(rows) -> str:
  head = ("| m | r | ours s/q | ours, prefix reuse off | release's way (no cache) | PyTorch, KV cache | "
          "ours vs release | ours vs cached PyTorch |")  # fmt: skip
  lines = [head, "|--:|--:|--:|--:|--:|--:|--:|--:|"]
  f = lambda x, fmt="{:.2f}": "–" if x is None else fmt.format(x)  # noqa: E731
  for r in rows:
    lines.append(
      f"| {r['m']} | {r['r']} | {f(r['ours_s'])} | {f(r['ours_no_prefix_s'])} | {f(r['release_s'])} | "
      f"{f(r['torch_cached_s'])} | {f(r['vs_release'], '{:.1f}×')} | {f(r['vs_cached'], '{:.1f}×')} |"
    )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/sequential.py")
  parser.add_argument("--steps", type=int, nargs="+", default=[16, 32, 64])
  parser.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 3])
  parser.add_argument("--max-new-tokens", type=int, default=64)
  parser.add_argument("--questions", type=int, default=5, help="questions per setting (the harness has five)")
  parser.add_argument(
    "--release-questions",
    default="16:5;32:3;64:2",
    help="questions per m for the release's way (slow: about 280 s a question at m = 64, r = 3)",
  )
  parser.add_argument("--anchor", default=ANCHOR, help="the PyTorch harness (default ../shared/anchors/)")
  parser.add_argument("--anchor-python", default=sys.executable, help="the Python with torch and transformers")
  parser.add_argument("--no-anchor", action="store_true", help="measure ours only")
  parser.add_argument("--no-prefix-off", action="store_true", help="skip ours with prefix reuse off")
  parser.add_argument("--smoke", action="store_true", help="tiny models and settings, no harness: checks the wiring")
  parser.add_argument("--out", help="write the result here instead of benchmarks/results/")
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args()
  if args.smoke:
    args.config, args.steps, args.rounds, args.max_new_tokens, args.questions = "configs/tiny.py", [2], [1, 2], 4, 2
    args.no_anchor = True
    args.out = args.out or os.path.join(tempfile.mkdtemp(prefix="vs-peers-smoke-"), "vs-peers.json")
  use_anchor = not args.no_anchor and os.path.isfile(args.anchor)
  questions = (anchor_questions(args.anchor) if os.path.isfile(args.anchor) else OWN_QUESTIONS)[: args.questions]

  config = load_config(args.config)
  apply_overrides(config, [f"generation.max_new_tokens={args.max_new_tokens}", "generation.ignore_eos=True"])
  loaded = load_system(config, progress=False)
  args.anchor_dir = tempfile.mkdtemp(prefix="torch-anchor-")
  ours, anchors = {}, {}
  for m in args.steps:  # interleaved: ours for this m, then the harness for this m
    for r in args.rounds:
      for reuse in (True, False) if not args.no_prefix_off else (True,):
        ours[m, r, reuse] = time_ours(loaded, config, questions, rounds=r, steps=m, prefix_reuse=reuse)
        print(json.dumps(dict(m=m, r=r, prefix_reuse=reuse, **ours[m, r, reuse])), file=sys.stderr, flush=True)
    if use_anchor:
      anchors[m] = run_anchor(anchor_command(args, config, m))
      print(json.dumps(dict(m=m, anchor={k: v for k, v in anchors[m].items() if k != "env"})), file=sys.stderr,
            flush=True)  # fmt: skip

  rows = []
  for m in args.steps:
    summary = anchors.get(m, {}).get("summary", {})
    for r in args.rounds:
      mine, off = ours[m, r, True], ours.get((m, r, False))
      release, cached = summary.get(f"A_m{m}_R{r}"), summary.get(f"B_m{m}_R{r}")
      row = dict(m=m, r=r, ours_s=mine["median_total_s"], ours_no_prefix_s=off and off["median_total_s"],
                 release_s=release and release["median_total_s"], torch_cached_s=cached and cached["median_total_s"],
                 ours=mine, ours_no_prefix=off, release=release, torch_cached=cached)  # fmt: skip
      row["vs_release"] = row["release_s"] and row["release_s"] / row["ours_s"]
      row["vs_cached"] = row["torch_cached_s"] and row["torch_cached_s"] / row["ours_s"]
      row["prefix_reuse_speedup"] = row["ours_no_prefix_s"] and row["ours_no_prefix_s"] / row["ours_s"]
      rows.append(row)
  out = dict(
    config=args.config,
    models=dict(loaded.models),
    questions=questions,
    max_new_tokens=args.max_new_tokens,
    ignore_eos=True,
    batch_size=1,
    anchor=args.anchor if use_anchor else None,
    anchor_runs={m: {k: v for k, v in a.items() if k != "summary"} for m, a in anchors.items()},
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
    path = write_benchmark(f"vs-peers-{jax.default_backend()}", out, overwrite=args.overwrite)
  print(table(rows))
  print(f"written: {path}")


if __name__ == "__main__":
  main()
