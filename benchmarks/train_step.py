"""Cost of one outer training step against a forward-only pass of the same system and batch, and how much of the
system trains.

For the config's agents this builds one outer batch (`train.rounds`, `train.latent_steps`, `train.target_tokens`,
`train.batch_size`, prompts of `train.prompt_bucket` slots), compiles the outer step (loss, gradient through every
round, AdamW update) and the forward-only loss, reports XLA's memory analysis of both (arguments and temporaries),
and times each after a warm-up call. It also counts link and backbone parameters (the paper: links are 0.31% of
its systems).

Results go to `benchmarks/results/train-step-<platform>.json` (an existing file is replaced only with
`--overwrite`; otherwise a timestamped name is used).

Usage:
  python benchmarks/train_step.py [--config configs/sequential.py] [--repeats 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flax import nnx  # noqa: E402

from rmas_jax.config_lib import load_config  # noqa: E402
from rmas_jax.patterns.from_config import load_system  # noqa: E402
from rmas_jax.results import write_benchmark  # noqa: E402
from rmas_jax.training import trainer  # noqa: E402
from rmas_jax.training.batches import outer_batch  # noqa: E402
from rmas_jax.training.objectives import rollout_loss  # noqa: E402
from rmas_jax.training.optimizer import split_links, stage_optimizer  # noqa: E402


def timed(fn, *args, repeats: int):
  jax.block_until_ready(fn(*args))  # warm-up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/sequential.py")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args()

  config = load_config(args.config)
  t = config.train
  loaded = load_system(config, progress=False, scan_layers=t.scan_layers)
  examples = trainer.fitting_examples(loaded, trainer.training_examples(config)[:64], rounds=t.rounds,
                                      steps=t.latent_steps, task=config.task, length=t.prompt_bucket)  # fmt: skip
  batch = outer_batch(loaded.system, loaded.tokenizers, examples[: t.batch_size], rounds=t.rounds,
                      steps=t.latent_steps, task=config.task, target_tokens=t.target_tokens,
                      min_prompt=t.prompt_bucket, book=loaded.prompts)  # fmt: skip
  graphdef, links, frozen = split_links(loaded.system)
  optimizer = stage_optimizer("outer", t, 100)
  opt_state = optimizer.init(links)
  step = trainer.make_outer_step(graphdef, optimizer, t.latent_steps, remat=t.remat)

  @jax.jit
  def forward(links, frozen, b):
    system = nnx.merge(graphdef, links, frozen)
    return rollout_loss(system, b.first, b.middle, b.last, b.target, b.target_mask, steps=t.latent_steps)

  rows = {}
  for name, fn, fn_args in (("outer_step", step, (links, frozen, opt_state, batch)),
                            ("forward_only", forward, (links, frozen, batch))):  # fmt: skip
    start = time.perf_counter()
    compiled = fn.lower(*fn_args).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    if name == "outer_step":  # the step donates links and optimizer state: hand it fresh copies each call
      call = lambda *a, c=compiled: c(jax.tree.map(lambda x: x.copy(), a[0]), a[1],  # noqa: E731
                                      jax.tree.map(lambda x: x.copy(), a[2]), a[3])  # fmt: skip
    else:
      call = compiled
    rows[name] = dict(
      compile_s=compile_s,
      seconds=timed(call, *fn_args, repeats=args.repeats),
      argument_bytes=mem.argument_size_in_bytes,
      temp_bytes=mem.temp_size_in_bytes,
      output_bytes=mem.output_size_in_bytes,
    )
    print(name, json.dumps(rows[name]), file=sys.stderr, flush=True)

  link_params = sum(x.size for x in jax.tree.leaves(links))
  distinct = {}  # roles naming one model share its weights
  for role, spec in loaded.models.items():
    distinct.setdefault(spec, loaded.system.agents[role].backbone.cfg.num_params)
  backbone_params = sum(distinct.values())
  out = dict(
    config=args.config,
    models=loaded.models,
    device=str(jax.devices()[0]),
    cpu_count=os.cpu_count(),
    date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    batch_size=t.batch_size,
    rounds=t.rounds,
    latent_steps=t.latent_steps,
    target_tokens=t.target_tokens,
    prompt_slots=t.prompt_bucket,
    scan_layers=t.scan_layers,
    remat=t.remat,
    step_vs_forward=rows["outer_step"]["seconds"] / rows["forward_only"]["seconds"],
    link_params=link_params,
    backbone_params=backbone_params,
    trainable_share=link_params / (link_params + backbone_params),
    **rows,
  )
  path = write_benchmark(f"train-step-{jax.default_backend()}", out, overwrite=args.overwrite)
  print(json.dumps({k: v for k, v in out.items() if k not in rows}, indent=2))
  print(f"written: {path}")


if __name__ == "__main__":
  main()
