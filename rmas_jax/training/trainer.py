"""The training run: the inner stage (every agent's inner link, eq. 5), then the outer stage (every edge's link
through all rounds, eq. 6), resumable from the last checkpoint.

Each stage's step is compiled once (fixed shapes) and takes only the links as the differentiated argument; the
backbones travel as a separate, never-differentiated argument. A step whose loss or gradient is not finite leaves
links and optimizer state untouched and is logged as skipped. Batches are a pure function of the step number, so a
resumed run sees exactly the data the interrupted one would have.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rmas_jax.evaluation.datasets import Example, load_examples
from rmas_jax.patterns.ask import segmented_prompts
from rmas_jax.patterns.from_config import LoadedSystem, load_system
from rmas_jax.sharding.mesh import describe, is_writer, mesh_from_config, use_mesh
from rmas_jax.sharding.placement import (
  current_mesh,
  global_batch,
  init_opt_state,
  local_rows,
  opt_state_shardings,
  outer_batch_axis,
  replicated,
)
from rmas_jax.training.batches import OuterBatch, inner_batch, outer_batch
from rmas_jax.training.checkpoints import CheckpointStore, fingerprint_of
from rmas_jax.training.objectives import inner_loss, rollout_loss
from rmas_jax.training.optimizer import split_links, stage_optimizer

log = logging.getLogger(__name__)
MODES = ("rollout", "teacher_forced")


@dataclasses.dataclass(frozen=True)
class StagePlan:
  """Steps `[0, inner)` train inner links, `[inner, inner + outer)` outer links."""

  inner: int
  outer: int

  @property
  def total(self) -> int:
    return self.inner + self.outer

  def stage(self, step: int) -> str:
    return "inner" if step < self.inner else "outer"

  def steps_in(self, stage: str) -> int:
    return self.inner if stage == "inner" else self.outer


def _guarded_update(loss_fn, optimizer, links, frozen, opt_state, batch):
  loss, grads = jax.value_and_grad(loss_fn)(links, frozen, batch)
  finite = jnp.isfinite(loss) & jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
  updates, new_opt = optimizer.update(grads, opt_state, links)
  new_links = optax.apply_updates(links, updates)
  keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
  metrics = dict(loss=loss, grad_norm=optax.global_norm(grads), finite=finite)
  return jax.tree.map(keep, new_links, links), jax.tree.map(keep, new_opt, opt_state), metrics


def make_inner_step(graphdef, optimizer, roles: Sequence[str], out_shardings=None):
  """`(links, frozen, opt_state, {role: (ids, mask, response)}) -> (links, opt_state, metrics)`, jit-compiled.

  `out_shardings` (links, optimizer state, metrics) keeps a sharded run's state in its layout from step to step.
  """

  def loss_fn(links, frozen, batches):
    system = nnx.merge(graphdef, links, frozen)
    losses = [inner_loss(system.agents[r].backbone, system.agents[r].inner, *batches[r]) for r in roles]
    return sum(losses) / len(losses)

  return jax.jit(functools.partial(_guarded_update, loss_fn, optimizer), donate_argnums=(0, 2),
                 out_shardings=out_shardings)  # fmt: skip


def make_outer_step(graphdef, optimizer, steps: int, remat: bool = True, out_shardings=None):
  """`(links, frozen, opt_state, OuterBatch) -> (links, opt_state, metrics)`, jit-compiled (see `make_inner_step`
  for `out_shardings`)."""

  def loss_fn(links, frozen, b: OuterBatch):
    system = nnx.merge(graphdef, links, frozen)
    return rollout_loss(system, b.first, b.middle, b.last, b.target, b.target_mask, steps=steps, remat=remat,
                        gold=b.gold)  # fmt: skip

  return jax.jit(functools.partial(_guarded_update, loss_fn, optimizer), donate_argnums=(0, 2),
                 out_shardings=out_shardings)  # fmt: skip


def batch_examples(examples: Sequence[Example], step: int, size: int, seed: int) -> list[Example]:
  """The examples of global step `step`: a fresh seeded permutation each epoch, so a step always gets one batch."""
  n = len(examples)
  out = []
  for j in range(step * size, (step + 1) * size):
    epoch, index = divmod(j, n)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    out.append(examples[order[index]])
  return out


def training_examples(config) -> list[Example]:
  t = config.train
  if t.data_path:  # a single file has no splits; a dataset folder's split defaults to "train"
    return load_examples(t.data_path, task=config.task, limit=t.examples, seed=config.seed)
  return load_examples(t.dataset, split="train", limit=t.examples, seed=config.seed)


def fitting_examples(loaded: LoadedSystem, examples: Sequence[Example], *, rounds: int, steps: int, task: str,
                     length: int) -> list[Example]:  # fmt: skip
  """The examples whose prompts, in every round and role, fit `length` slots with their latents (so the outer step
  compiles once, for that length)."""
  kept = []
  for i in range(0, len(examples), 64):
    chunk = examples[i : i + 64]
    prompts = segmented_prompts(loaded.system, loaded.tokenizers, [e.question for e in chunk], rounds=rounds,
                                task=task, book=loaded.prompts)  # fmt: skip
    for j, e in enumerate(chunk):
      if max(ps[j].length(steps) for rp in prompts for ps in rp.values()) <= length:
        kept.append(e)
  return kept


def run_fingerprint(config) -> str:
  """What must match for a checkpoint to be resumed: agents, pattern, links, training mode and stages."""
  t = config.train
  return fingerprint_of(dict(agents=[dict(a) for a in config.agents], style=config.style,
                             pattern=config.get("pattern") and config.pattern.to_dict(), links=config.links.to_dict(),
                             mode=t.mode, inner_steps=t.inner_steps, outer_steps=t.outer_steps,
                             batch_size=t.batch_size, rounds=t.rounds, latent_steps=t.latent_steps))  # fmt: skip


class MetricsLog:
  """`metrics.jsonl` (one line per step) plus TensorBoard events; on resume, lines past the checkpoint are dropped."""

  def __init__(self, workdir: str, resume_step: int):
    self.path = os.path.join(workdir, "metrics.jsonl")
    kept = []
    if os.path.exists(self.path):
      with open(self.path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] < resume_step]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, self.path)
    self.file = open(self.path, "a")  # noqa: SIM115
    self.tb = None
    try:
      from tensorboardX import SummaryWriter

      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step)
    except ImportError:
      log.warning("tensorboardX is not installed; metrics go to metrics.jsonl only")

  def write(self, record: dict) -> None:
    self.file.write(json.dumps(record) + "\n")
    self.file.flush()
    if self.tb is not None:
      for key in ("loss", "grad_norm", "seconds"):
        self.tb.add_scalar(f"{record['stage']}/{key}", record[key], record["step"])

  def close(self) -> None:
    self.file.close()
    if self.tb is not None:
      self.tb.close()


def train(config, workdir: str, *, loaded: LoadedSystem | None = None, progress: bool = True) -> dict:
  """Runs (or resumes) the training the config describes; returns a summary.

  On the mesh set by the caller (`rmas_jax.sharding.use_mesh`), else on `config.mesh`'s: backbones sharded by the
  rules of `rmas_jax.sharding`, each batch split by process and device, only process 0 writing metrics. Checkpoints
  hold the links whatever the mesh, so a run resumes on another mesh shape.

  Args:
    config: a validated run config with a `train` section.
    workdir: checkpoints under `workdir/checkpoints`, `metrics.jsonl`, TensorBoard events.
    loaded: an already loaded system (tests; placed on the mesh by the caller), else the config's agents are loaded.
    progress: show a progress bar.
  """
  mesh = current_mesh()
  if mesh is None:
    mesh = mesh_from_config(config)
  with use_mesh(mesh):
    return _train(config, workdir, loaded, progress, mesh)


def _train(config, workdir: str, loaded: LoadedSystem | None, progress: bool, mesh) -> dict:
  t = config.train
  if t.mode not in MODES:
    raise ValueError(f"config.train.mode: {t.mode!r}; expected one of {MODES}")
  os.makedirs(workdir, exist_ok=True)
  progress = progress and is_writer()
  log.info("training on %s", describe(mesh))
  loaded = loaded or load_system(config, progress=progress, scan_layers=t.scan_layers)
  system = loaded.system
  plan = StagePlan(t.inner_steps, t.outer_steps)
  graphdef, links, frozen = split_links(system)
  optimizers = {s: stage_optimizer(s, t, plan.steps_in(s)) for s in ("inner", "outer")}
  examples = training_examples(config)
  if not examples:
    raise ValueError("config.train: the training set is empty")

  store = CheckpointStore(os.path.join(workdir, "checkpoints"), fingerprint=run_fingerprint(config), keep=t.keep)
  start = store.latest_step() or 0
  opt_state = init_opt_state(optimizers[plan.stage(max(start - 1, 0))], links, mesh)
  if start:
    # The templates carry this run's layouts, so a checkpoint written on another mesh is read onto this one.
    links, opt_state, _ = store.restore(start, links_template=links, opt_state_template=opt_state)
    log.info("resumed from step %d", start)
    if plan.stage(start) != plan.stage(start - 1):
      opt_state = init_opt_state(optimizers[plan.stage(start)], links, mesh)
  metrics_log = MetricsLog(workdir, start) if is_writer() else None

  roles = list(system.pattern.roles)
  if t.outer_steps:
    fitting = fitting_examples(loaded, examples, rounds=t.rounds, steps=t.latent_steps, task=config.task,
                               length=t.prompt_bucket)  # fmt: skip
    if len(fitting) < len(examples):
      log.warning("%d of %d training examples have prompts longer than train.prompt_bucket=%d; skipped",
                  len(examples) - len(fitting), len(examples), t.prompt_bucket)  # fmt: skip
    if not fitting:
      raise ValueError(f"config.train.prompt_bucket: {t.prompt_bucket} fits no training prompt; raise it")
    examples = fitting
  shardings = {s: None for s in optimizers}
  if mesh is not None:  # links and optimizer state keep their layouts; metrics come back whole on every device
    link_shardings = jax.tree.map(lambda x: x.sharding, links)
    shardings = {s: (link_shardings, opt_state_shardings(optimizers[s], links, mesh), replicated(mesh))
                 for s in optimizers}  # fmt: skip
  steps_fn = {"inner": make_inner_step(graphdef, optimizers["inner"], roles, out_shardings=shardings["inner"]),
              "outer": make_outer_step(graphdef, optimizers["outer"], t.latent_steps, remat=t.remat,
                                       out_shardings=shardings["outer"])}  # fmt: skip

  def batch_for(step: int):
    chosen = batch_examples(examples, step, t.batch_size, config.seed)
    # Each process builds only the rows its devices hold. Every array has a fixed shape (lengths come from the
    # config, and every kept prompt fits `prompt_bucket`), so the processes' rows make one consistent batch.
    lo, hi = (0, len(chosen)) if mesh is None else local_rows(mesh, len(chosen))
    chosen = chosen[lo:hi]
    if plan.stage(step) == "inner":
      b = {r: inner_batch(loaded.tokenizers[r], chosen, task=config.task, length=t.inner_tokens) for r in roles}
    else:
      b = outer_batch(system, loaded.tokenizers, chosen, rounds=t.rounds, steps=t.latent_steps, task=config.task,
                      target_tokens=t.target_tokens, min_prompt=t.prompt_bucket, book=loaded.prompts,
                      teacher_forced=t.mode == "teacher_forced")  # fmt: skip
    if mesh is None:
      return b
    return global_batch(b, mesh, t.batch_size, lo, outer_batch_axis if plan.stage(step) == "outer" else lambda _: 0)

  bar = None
  if progress:
    from tqdm import tqdm

    bar = tqdm(total=plan.total, initial=start, desc="train", unit="step", dynamic_ncols=True)
  skipped, last = 0, {}
  try:
    for step in range(start, plan.total):
      stage = plan.stage(step)
      if step == plan.inner and step > 0 and step != start:
        opt_state = init_opt_state(optimizers["outer"], links, mesh)
      tick = time.perf_counter()
      links, opt_state, m = steps_fn[stage](links, frozen, opt_state, batch_for(step))
      loss, finite = float(m["loss"]), bool(m["finite"])
      seconds = time.perf_counter() - tick
      skipped += not finite
      if not finite:
        log.warning("step %d: non-finite loss or gradient (loss=%s); update skipped", step, loss)
      last = dict(step=step, stage=stage, loss=loss, grad_norm=float(m["grad_norm"]), finite=finite, seconds=seconds)
      if metrics_log is not None:
        metrics_log.write(last)
      done = step + 1
      if done % t.checkpoint_every == 0 or done == plan.inner or done == plan.total:
        store.save(done, links, opt_state, {"data_position": done * t.batch_size, "stage": stage, "config": config})
      if bar is not None:
        bar.set_postfix(stage=stage, loss=f"{loss:.4f}", s_per_step=f"{seconds:.1f}")
        bar.update(1)
  finally:
    if bar is not None:
      bar.close()
    if metrics_log is not None:
      metrics_log.close()
    store.close()
  nnx.update(system, links)
  return dict(steps=plan.total, resumed_from=start, skipped=skipped, last=last)


def restore_links(config, system, workdir: str) -> int | None:
  """Loads the latest trained links of `workdir/checkpoints` into `system`; returns their step, or None if there
  is no checkpoint (a checkpoint from a different run config is an error, not silently ignored)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return None
  t = config.train
  plan = StagePlan(t.inner_steps, t.outer_steps)
  with CheckpointStore(directory, fingerprint=run_fingerprint(config), keep=t.keep) as store:
    step = store.latest_step()
    if not step:
      return None
    _, links, _ = split_links(system)
    optimizer = stage_optimizer(plan.stage(step - 1), t, plan.steps_in(plan.stage(step - 1)))
    opt_state = init_opt_state(optimizer, links, current_mesh())  # the layouts the links have (sharded or not)
    links, _, _ = store.restore(step, links_template=links, opt_state_template=opt_state)
  nnx.update(system, links)
  return step
