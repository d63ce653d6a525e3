"""Training-step time of a tiny system on one CPU device against 8 fake CPU devices under a few mesh shapes.

Fake devices share the machine's cores, so 8 of them are expected to be slower than one: this measures what the
sharded path costs on CPU (partitioned programs, collectives between fake devices), not a speed-up. Each mesh runs
in its own child process (the device count is fixed when JAX starts). Per mesh: the inner step and the outer step
(all rounds, backward through them, AdamW) are compiled once, then timed over `--repeats` calls after a warm-up;
the losses are reported too, and must agree across meshes.

Results go to `benchmarks/results/sharded-step-cpu.json` (an existing file is replaced only with `--overwrite`).

Usage:
  PYTHONPATH=. python benchmarks/sharded_step.py [--config configs/tiny.py:custom] [--batch 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MESHES = ("1x1x1", "8x1x1", "1x8x1", "2x2x2")
QUESTIONS = [
  (f"What is {a} + {b}?", str(a + b)) for a, b in ((2, 3), (4, 4), (9, 2), (3, 3), (10, 2), (6, 1), (8, 5), (2, 6))
]


def child(args) -> dict:
  """One mesh, in a process whose JAX sees `prod(mesh)` CPU devices."""
  import jax

  jax.config.update("jax_platforms", "cpu")
  from rmas_jax.config_lib import load_config
  from rmas_jax.patterns.from_config import load_system
  from rmas_jax.sharding.mesh import make_mesh, parse_mesh, use_mesh
  from rmas_jax.sharding.placement import (
    global_batch,
    init_opt_state,
    opt_state_shardings,
    outer_batch_axis,
    replicated,
  )
  from rmas_jax.training import trainer
  from rmas_jax.training.batches import inner_batch, outer_batch
  from rmas_jax.training.optimizer import split_links, stage_optimizer

  spec = args.mesh[-1]  # the parent passes one `--mesh` to each child
  shape = parse_mesh(spec)
  mesh = None if shape == (1, 1, 1) else make_mesh(shape)
  config = load_config(args.config)
  t = config.train
  t.update(data_path=args.data, examples=len(QUESTIONS), batch_size=args.batch, prompt_bucket=256, target_tokens=12,
           inner_tokens=64, latent_steps=2, rounds=2)  # fmt: skip
  out = {"mesh": spec, "devices": jax.device_count()}
  with use_mesh(mesh):
    start = time.perf_counter()
    loaded = load_system(config, progress=False, scan_layers=True)
    out["load_s"] = time.perf_counter() - start
    graphdef, links, frozen = split_links(loaded.system)
    examples = trainer.training_examples(config)
    chosen = trainer.batch_examples(examples, 0, args.batch, config.seed)
    roles = list(loaded.system.pattern.roles)
    batches = {
      "inner": {r: inner_batch(loaded.tokenizers[r], chosen, task=config.task, length=t.inner_tokens, whole=False)
                for r in roles},
      "outer": outer_batch(
        loaded.system,
        loaded.tokenizers,
        chosen,
        rounds=t.rounds,
        steps=t.latent_steps,
        task=config.task,
        target_tokens=t.target_tokens,
        min_prompt=t.prompt_bucket,
        book=loaded.prompts,
        whole=False,
      ),  # fmt: skip
    }
    for stage in ("inner", "outer"):
      optimizer = stage_optimizer(stage, t, 10)
      shardings = None
      batch = batches[stage]
      if mesh is not None:
        link_shardings = jax.tree.map(lambda x: x.sharding, links)
        shardings = (link_shardings, opt_state_shardings(optimizer, links, mesh), replicated(mesh))
        batch = global_batch(batch, mesh, args.batch, 0, outer_batch_axis if stage == "outer" else lambda _: 0)
      make = trainer.make_inner_step if stage == "inner" else trainer.make_outer_step
      extra = roles if stage == "inner" else t.latent_steps
      step = make(graphdef, optimizer, extra, out_shardings=shardings)
      opt_state = init_opt_state(optimizer, links, mesh)
      copy = jax.tree.map(lambda x: x.copy(), links)  # the step donates its links
      start = time.perf_counter()
      copy, opt_state, m = jax.block_until_ready(step(copy, frozen, opt_state, batch))
      out[f"{stage}_first_call_s"] = time.perf_counter() - start  # compile + one step
      times = []
      for _ in range(args.repeats):
        start = time.perf_counter()
        copy, opt_state, m = jax.block_until_ready(step(copy, frozen, opt_state, batch))
        times.append(time.perf_counter() - start)
      out[f"{stage}_step_s"] = statistics.median(times)
      out[f"{stage}_step_s_all"] = times
      out[f"{stage}_last_loss"] = float(m["loss"])
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/tiny.py:custom")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--mesh", action="append", default=[], help=f"DxFxT (repeatable; default {' '.join(MESHES)})")
  parser.add_argument("--overwrite", action="store_true")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--data", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args)))
    return

  from rmas_jax.results import write_benchmark

  results = []
  with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, "questions.jsonl")
    with open(data, "w") as f:
      f.writelines(json.dumps(dict(question=q, answer=a)) + "\n" for q, a in QUESTIONS)
    for mesh in args.mesh or MESHES:
      devices = 1
      for n in mesh.split("x"):
        devices *= int(n)
      env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
      cmd = [sys.executable, __file__, "--child", "--mesh", mesh, "--data", data, "--config", args.config,
             "--batch", str(args.batch), "--repeats", str(args.repeats)]  # fmt: skip
      load_before = os.getloadavg()[0]
      run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
      if run.returncode:
        sys.exit(f"mesh {mesh} failed:\n{run.stderr[-3000:]}")
      row = json.loads(run.stdout.strip().splitlines()[-1])
      row["load_average_before_after"] = [load_before, os.getloadavg()[0]]
      results.append(row)
      print(f"{mesh:>6}: {row['devices']} devices, inner {row['inner_step_s'] * 1e3:8.1f} ms, outer "
            f"{row['outer_step_s'] * 1e3:8.1f} ms (first call {row['outer_first_call_s']:.1f} s), "
            f"loss {row['outer_last_loss']:.6f}", flush=True)  # fmt: skip
  payload = dict(
    what="median seconds of one training step (inner: every agent's inner link; outer: all rounds + backward + "
    "AdamW) of a tiny system, on 1 CPU device and on 8 fake CPU devices sharing the same cores",
    config=args.config,
    batch=args.batch,
    repeats=args.repeats,
    cpu_count=os.cpu_count(),
    machine=platform.machine(),
    results=results,
  )
  print(write_benchmark("sharded-step-cpu", payload, overwrite=args.overwrite))


if __name__ == "__main__":
  main()
