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
from rmas_jax.training.batches import (
  OuterBatch,
  gold_text,
  inner_prompt,
  inner_sequence,
  inner_turn,
  outer_batch,
  response_ids,
  stack_inner,
)
from rmas_jax.training.checkpoints import CheckpointStore, fingerprint_of
from rmas_jax.training.objectives import INNER_TEMPERATURE, inner_loss, rollout_loss, rollout_loss_by_round
from rmas_jax.training.optimizer import link_groups, split_links, stage_optimizer

log = logging.getLogger(__name__)
MODES = ("rollout", "teacher_forced")
INNER_PROMPTS = ("role", "generic")
CHECKPOINTS = ("latest", "best")
BEST_DIR = "checkpoints_best"  # the links of the lowest held-out answer loss seen (keep 1), beside checkpoints/
BEST_FILE = "best.json"


class TrainingIncompleteError(RuntimeError):
  """The run ended without its final checkpoint; the one-line message says where a rerun resumes."""


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


def only_group(links, group: str):
  """`links` with every other group's parameters held constant (`stop_gradient`): the stage differentiates only its
  own links, so no backward pass runs for what nothing trains (a thinker's rollout in round 1, say), while gradients
  still flow *through* the other links to earlier ones, as the release does with its frozen inner links."""
  return jax.tree.map(lambda g, x: x if g == group else jax.lax.stop_gradient(x), link_groups(links), links)


def _apply_if_finite(optimizer, links, opt_state, loss, grads, extra=None):
  finite = jnp.isfinite(loss) & jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
  updates, new_opt = optimizer.update(grads, opt_state, links)
  new_links = optax.apply_updates(links, updates)
  keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
  metrics = dict(loss=loss, grad_norm=optax.global_norm(grads), finite=finite, **(extra or {}))
  return jax.tree.map(keep, new_links, links), jax.tree.map(keep, new_opt, opt_state), metrics


def _guarded_update(loss_fn, optimizer, links, frozen, opt_state, batch):
  loss, grads = jax.value_and_grad(loss_fn)(links, frozen, batch)
  return _apply_if_finite(optimizer, links, opt_state, loss, grads)


def inner_objective_of(t) -> dict:
  """`{objective, temperature}` of a train config (`train.inner_objective`, `train.inner_temperature`)."""
  return dict(objective=t.get("inner_objective", "cosine"), temperature=t.get("inner_temperature", INNER_TEMPERATURE))


def mean_inner_loss(system, roles: Sequence[str], batches, objective: str = "cosine",
                    temperature: float = INNER_TEMPERATURE) -> jax.Array:  # fmt: skip
  """The inner objective (eq. 5, or `objective`; see `inner_loss`) averaged over the roles: the inner stage's loss,
  for its step and its held-out loss alike."""
  losses = [inner_loss(system.agents[r].backbone, system.agents[r].inner, *batches[r], objective=objective,
                       temperature=temperature) for r in roles]  # fmt: skip
  return sum(losses) / len(losses)


def make_inner_step(graphdef, optimizer, roles: Sequence[str], out_shardings=None, objective: str = "cosine",
                    temperature: float = INNER_TEMPERATURE):  # fmt: skip
  """`(links, frozen, opt_state, {role: (ids, mask, response)}) -> (links, opt_state, metrics)`, jit-compiled.

  `out_shardings` (links, optimizer state, metrics) keeps a sharded run's state in its layout from step to step;
  `objective` and `temperature` choose the inner loss (`inner_loss`).
  """

  def loss_fn(links, frozen, batches):
    system = nnx.merge(graphdef, only_group(links, "inner"), frozen)
    return mean_inner_loss(system, roles, batches, objective, temperature)

  return jax.jit(functools.partial(_guarded_update, loss_fn, optimizer), donate_argnums=(0, 2),
                 out_shardings=out_shardings)  # fmt: skip


def make_outer_step(graphdef, optimizer, steps: int, remat: bool = True, out_shardings=None,
                    credit_rounds: int | None = None):  # fmt: skip
  """`(links, frozen, opt_state, OuterBatch) -> (links, opt_state, metrics)`, jit-compiled (see `make_inner_step`
  for `out_shardings`).

  With `credit_rounds` = R, each round runs with its own copy of the links (`rollout_loss_by_round`), so the
  metrics also hold `round_grad_norms` `[R]`: the norm of the gradient that reaches the links through each round.
  The update is the same (the copies' gradients summed)."""
  if credit_rounds is None:

    def loss_fn(links, frozen, b: OuterBatch):
      system = nnx.merge(graphdef, only_group(links, "outer"), frozen)
      return rollout_loss(system, b.first, b.middle, b.last, b.target, b.target_mask, steps=steps, remat=remat,
                          gold=b.gold)  # fmt: skip

    return jax.jit(functools.partial(_guarded_update, loss_fn, optimizer), donate_argnums=(0, 2),
                   out_shardings=out_shardings)  # fmt: skip

  def loss_by_round(copies, frozen, b: OuterBatch):
    systems = [nnx.merge(graphdef, only_group(c, "outer"), frozen) for c in copies]
    return rollout_loss_by_round(systems, b.first, b.middle, b.last, b.target, b.target_mask, steps=steps,
                                 remat=remat, gold=b.gold)  # fmt: skip

  def update(links, frozen, opt_state, batch):
    loss, by_round = jax.value_and_grad(loss_by_round)([links] * credit_rounds, frozen, batch)
    grads = jax.tree.map(lambda *g: functools.reduce(jnp.add, g), *by_round)
    norms = jnp.stack([optax.global_norm(g) for g in by_round])  # [R]
    return _apply_if_finite(optimizer, links, opt_state, loss, grads, dict(round_grad_norms=norms))

  return jax.jit(update, donate_argnums=(0, 2), out_shardings=out_shardings)


def make_heldout_loss(graphdef, roles: Sequence[str], steps: int, objective: str = "cosine",
                      temperature: float = INNER_TEMPERATURE):  # fmt: skip
  """`{"inner": (links, frozen, batches) -> loss, "outer": (links, frozen, OuterBatch) -> loss}`, jit-compiled,
  forward only: each stage's objective on held-out examples (the outer one is the answer cross-entropy)."""

  def inner(links, frozen, batches):
    return mean_inner_loss(nnx.merge(graphdef, links, frozen), roles, batches, objective, temperature)

  def outer(links, frozen, b: OuterBatch):
    system = nnx.merge(graphdef, links, frozen)
    return rollout_loss(system, b.first, b.middle, b.last, b.target, b.target_mask, steps=steps, remat=False,
                        gold=b.gold)  # fmt: skip

  return {"inner": jax.jit(inner), "outer": jax.jit(outer)}


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
  """The configured training data (`train.data_path`, else `train.dataset`'s train split), before any held-out
  examples are set apart (`split_heldout`)."""
  t = config.train
  if t.data_path:  # a single file has no splits; a dataset folder's split defaults to "train"
    return load_examples(t.data_path, task=config.task, limit=t.examples, seed=config.seed, fields=t.get("fields"))
  return load_examples(t.dataset, split="train", limit=t.examples, seed=config.seed)


def split_heldout(config, examples: Sequence[Example]) -> tuple[list[Example], list[Example]]:
  """`(train, heldout)`: the held-out loss set is `train.eval_path` when given, else the last `train.eval_examples`
  of the training data, which are then never trained on. Off (`train.eval_every` 0) it is empty."""
  t = config.train
  if not t.get("eval_every"):
    return list(examples), []
  if t.get("eval_path"):
    heldout = load_examples(t.eval_path, task=config.task, limit=t.eval_examples, seed=config.seed,
                            fields=t.get("fields"))  # fmt: skip
    seen = {e.question for e in examples}
    leaked = sum(e.question in seen for e in heldout)
    if leaked:
      raise ValueError(f"config.train.eval_path: {leaked} of its questions are also training questions")
    return list(examples), heldout
  n = t.eval_examples
  if n >= len(examples):
    raise ValueError(f"config.train.eval_examples: {n} leaves no training examples of {len(examples)}")
  return list(examples[:-n]), list(examples[-n:])


def fitting_examples(loaded: LoadedSystem, examples: Sequence[Example], *, rounds: int, steps: int, task: str,
                     length: int, target_tokens: int | None = None, target: str = "gold") -> list[Example]:  # fmt: skip
  """The examples whose prompts, in every round and role, fit `length` slots with their latents (so the outer step
  compiles once, for that length) and, with `target_tokens`, whose whole gold answer fits that many tokens."""
  decoder_tok = loaded.tokenizers[loaded.system.pattern.decoder]
  kept = []
  for i in range(0, len(examples), 64):
    chunk = examples[i : i + 64]
    prompts = segmented_prompts(loaded.system, loaded.tokenizers, chunk, rounds=rounds, task=task,
                                book=loaded.prompts)  # fmt: skip
    for j, e in enumerate(chunk):
      if max(ps[j].length(steps) for rp in prompts for ps in rp.values()) > length:
        continue
      if target_tokens is not None and response_ids(decoder_tok, e, task, target_tokens, target=target) is None:
        continue
      kept.append(e)
  return kept


class StageData:
  """Each stage's examples, filtered once so every batch has the step's fixed shapes, and its batches.

  The outer stage keeps the examples whose prompts fit `train.prompt_bucket` and whose whole gold answer fits
  `train.target_tokens`. The inner stage keeps, per role, the examples whose prompt and whole gold text fit
  `train.inner_tokens`: with `train.inner_prompts` "role" (the release's way) each role reads its own round-1 prompt
  with its senders' gold texts in its slots and learns on its own gold text; "generic" is one plain question turn
  and the decoder's gold response for every role.
  """

  def __init__(self, loaded: LoadedSystem, config, examples: Sequence[Example], heldout: Sequence[Example]):
    self.loaded, self.config, self.t = loaded, config, config.train
    t = self.t
    self.roles = list(loaded.system.pattern.roles)
    self.pools, self.heldout = {}, {}
    if t.inner_steps:
      self.pools["inner"] = self._inner_pools(examples, "training")
      self.heldout["inner"] = self._inner_pools(heldout, "held-out") if heldout else {}
    if t.outer_steps:
      self.pools["outer"] = self._outer_pool(examples, "training")
      self.heldout["outer"] = self._outer_pool(heldout, "held-out") if heldout else []

  def _outer_pool(self, examples: Sequence[Example], what: str) -> list[Example]:
    t = self.t
    kept = fitting_examples(self.loaded, examples, rounds=t.rounds, steps=t.latent_steps, task=self.config.task,
                            length=t.prompt_bucket, target_tokens=t.target_tokens,
                            target=t.get("target", "gold"))  # fmt: skip
    if len(kept) < len(examples):
      log.warning("%d of %d %s examples have prompts longer than train.prompt_bucket=%d or gold answers longer than "
                  "train.target_tokens=%d; left out (answers are never cut)", len(examples) - len(kept),
                  len(examples), what, t.prompt_bucket, t.target_tokens)  # fmt: skip
    if not kept:
      raise ValueError(f"config.train.prompt_bucket / target_tokens: {t.prompt_bucket} / {t.target_tokens} fit no "
                       f"{what} example; raise them")  # fmt: skip
    return kept

  def _inner_pools(self, examples: Sequence[Example], what: str) -> dict[str, list]:
    t, system = self.t, self.loaded.system
    how = t.get("inner_prompts", "role")
    if how not in INNER_PROMPTS:
      raise ValueError(f"config.train.inner_prompts: {how!r}; expected one of {INNER_PROMPTS}")
    target = t.get("target", "gold")
    pools = {}
    for role in self.roles:
      tok = self.loaded.tokenizers[role]
      kept = []
      for e in examples:
        if how == "role":
          turn = inner_turn(system, self.loaded.prompts, role, e, rounds=t.rounds, task=self.config.task,
                            target=target)  # fmt: skip
          text = gold_text(e, role, system.pattern.decoder, self.config.task, target)
        else:
          turn = inner_prompt(e.question, self.config.task)
          text = gold_text(e, system.pattern.decoder, system.pattern.decoder, self.config.task, target)
        seq = inner_sequence(tok, turn, text, t.inner_tokens)
        if seq is not None:
          kept.append(seq)
      if len(kept) < len(examples):
        log.warning("%s: %d of %d %s examples do not fit train.inner_tokens=%d with their whole gold text; left out",
                    role, len(examples) - len(kept), len(examples), what, t.inner_tokens)  # fmt: skip
      if not kept:
        raise ValueError(f"config.train.inner_tokens: {t.inner_tokens} fits no {what} example of role {role!r}")
      pools[role] = kept
    return pools

  def batch(self, stage: str, step: int, lo: int, hi: int):
    """The batch of global step `step` (rows `lo:hi` of it, the ones this process holds)."""
    t, seed = self.t, self.config.seed
    if stage == "inner":
      return {r: stack_inner(batch_examples(self.pools["inner"][r], step, t.batch_size, seed)[lo:hi], t.inner_tokens)
              for r in self.roles}  # fmt: skip
    return self._outer_batch(batch_examples(self.pools["outer"], step, t.batch_size, seed)[lo:hi])

  def _outer_batch(self, chosen: Sequence[Example]) -> OuterBatch:
    t = self.t
    return outer_batch(self.loaded.system, self.loaded.tokenizers, chosen, rounds=t.rounds, steps=t.latent_steps,
                       task=self.config.task, target_tokens=t.target_tokens, min_prompt=t.prompt_bucket,
                       book=self.loaded.prompts, teacher_forced=t.mode == "teacher_forced",
                       target=t.get("target", "gold"))  # fmt: skip

  def heldout_count(self, stage: str) -> int:
    """Held-out examples of `stage` per evaluation: whole batches (a set smaller than a batch fills one)."""
    pool = self.heldout.get(stage)
    if not pool:
      return 0
    n = min(len(p) for p in pool.values()) if stage == "inner" else len(pool)
    return max(n // self.t.batch_size, 1) * self.t.batch_size

  def heldout_batches(self, stage: str):
    """The held-out set of `stage` in full batches (the same examples at every evaluation)."""
    bs, count = self.t.batch_size, self.heldout_count(stage)
    for i in range(0, count, bs):
      if stage == "inner":
        yield {r: stack_inner([p[(i + k) % len(p)] for k in range(bs)], self.t.inner_tokens)
               for r, p in self.heldout["inner"].items()}  # fmt: skip
      else:
        pool = self.heldout["outer"]
        yield self._outer_batch([pool[(i + k) % len(pool)] for k in range(bs)])


def run_fields(config) -> dict:
  """What must match for a checkpoint to be resumed: agents, pattern, links, training mode, the inner stage's length
  (it fixes where the outer stage starts) and the shape of a step. The outer step count is left out, so a finished
  run can be extended: its cosine schedule is then laid over the new total, and the steps after the resume follow
  that longer schedule (the rate rises to where the longer decay has it at the resume step)."""
  t = config.train
  # Options added later enter only when they are not their defaults, so older runs keep their fingerprints.
  links = {k: v for k, v in config.links.to_dict().items() if not (k == "outer_init" and v == "torch")}
  objective = inner_objective_of(t)
  extra = {} if objective["objective"] == "cosine" else dict(
    inner_objective=objective["objective"], inner_temperature=objective["temperature"])  # fmt: skip
  return dict(agents=[dict(a) for a in config.agents], style=config.style,
              pattern=config.get("pattern") and config.pattern.to_dict(), links=links,
              train=dict(mode=t.mode, inner_steps=t.inner_steps, batch_size=t.batch_size, rounds=t.rounds,
                         latent_steps=t.latent_steps, **extra))  # fmt: skip


def run_fingerprint(config) -> str:
  """The hash of `run_fields`, laid out as it always was so that existing run directories keep theirs."""
  fields = run_fields(config)
  return fingerprint_of(dict({k: v for k, v in fields.items() if k != "train"}, **fields["train"]))


def run_store(directory: str, config, **kwargs) -> CheckpointStore:
  """The checkpoint store of a run directory, keyed by the config's `run_fingerprint` and naming, on a mismatch,
  which of `run_fields` differ."""
  return CheckpointStore(directory, fingerprint=run_fingerprint(config), fields=run_fields(config), **kwargs)


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
      for key, value in record.items():
        if key not in ("step", "stage", "finite") and isinstance(value, (int, float)):
          self.tb.add_scalar(f"{record['stage']}/{key}", value, record["step"])
      for r, value in enumerate(record.get("round_grad_norms") or (), 1):
        self.tb.add_scalar(f"{record['stage']}/grad_norm_round_{r}", value, record["step"])

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
  examples, heldout = split_heldout(config, training_examples(config))
  if not examples:
    raise ValueError("config.train: the training set is empty")

  store = run_store(os.path.join(workdir, "checkpoints"), config, keep=t.keep)
  best_store = run_store(os.path.join(workdir, BEST_DIR), config, keep=1)
  opt_for = lambda step: init_opt_state(optimizers[plan.stage(max(step - 1, 0))], links, mesh)  # noqa: E731
  # The templates carry this run's layouts, so a checkpoint written on another mesh is read onto this one. Damaged
  # checkpoints are verified away: moved aside with one log line, and the newest intact one resumed.
  found = store.restore_newest(links_template=links, opt_state_template=opt_for, quarantine=True)
  start, opt_state = (found[0], found[2]) if found else (0, opt_for(0))
  if start:
    links = found[1]
    log.info("resumed from step %d", start)
    if plan.stage(start) != plan.stage(start - 1):
      opt_state = init_opt_state(optimizers[plan.stage(start)], links, mesh)
  metrics_log = MetricsLog(workdir, start) if is_writer() else None
  best = _read_best(workdir, start)

  roles = list(system.pattern.roles)
  data = StageData(loaded, config, examples, heldout)
  shardings = {s: None for s in optimizers}
  if mesh is not None:  # links and optimizer state keep their layouts; metrics come back whole on every device
    link_shardings = jax.tree.map(lambda x: x.sharding, links)
    shardings = {s: (link_shardings, opt_state_shardings(optimizers[s], links, mesh), replicated(mesh))
                 for s in optimizers}  # fmt: skip
  objective = inner_objective_of(t)
  steps_fn = {"inner": make_inner_step(graphdef, optimizers["inner"], roles, out_shardings=shardings["inner"],
                                       **objective),
              "outer": make_outer_step(graphdef, optimizers["outer"], t.latent_steps, remat=t.remat,
                                       out_shardings=shardings["outer"],
                                       credit_rounds=t.rounds if t.get("round_credit", True) else None)}  # fmt: skip
  heldout_fn = make_heldout_loss(graphdef, roles, t.latent_steps, **objective) if heldout else None

  def placed(b, stage: str, lo: int):
    if mesh is None:
      return b
    return global_batch(b, mesh, t.batch_size, lo, outer_batch_axis if stage == "outer" else lambda _: 0)

  def batch_for(step: int):
    # Each process builds only the rows its devices hold. Every array has a fixed shape (lengths come from the
    # config, and every kept prompt fits `prompt_bucket`), so the processes' rows make one consistent batch.
    lo, hi = (0, t.batch_size) if mesh is None else local_rows(mesh, t.batch_size)
    stage = plan.stage(step)
    return placed(data.batch(stage, step, lo, hi), stage, lo)

  def heldout_loss(stage: str, links) -> float:
    losses = []
    for b in data.heldout_batches(stage):
      losses.append(float(heldout_fn[stage](links, frozen, placed(b, stage, 0))))
    return float(np.mean(losses))

  def evaluate_heldout(step: int, stage: str) -> None:
    nonlocal best
    if not data.heldout_count(stage):
      return
    loss = heldout_loss(stage, links)
    record = dict(step=step, stage=f"heldout_{stage}", loss=loss, examples=data.heldout_count(stage))
    if metrics_log is not None:
      metrics_log.write(record)
    log.info("step %d: held-out %s loss %.4f", step, stage, loss)
    if stage == "outer" and (best is None or loss < best["loss"]):
      if best_store.save(step, links, opt_state, {"heldout_loss": loss, "stage": stage, "config": config}):
        best = dict(step=step, loss=loss)
        _write_best(workdir, best)

  bar = None
  if progress:
    from tqdm import tqdm

    bar = tqdm(total=plan.total, initial=start, desc="train", unit="step", dynamic_ncols=True)
  skipped, in_a_row, last, saved = 0, 0, {}, start
  max_skipped = t.get("max_skipped", 3)
  try:
    for step in range(start, plan.total):
      stage = plan.stage(step)
      if step == plan.inner and step > 0 and step != start:
        opt_state = init_opt_state(optimizers["outer"], links, mesh)
      if heldout and step == plan.inner and (best is None or best["step"] < step):
        evaluate_heldout(step, "outer")  # the links before any outer step: the baseline training must beat
      tick = time.perf_counter()
      links, opt_state, m = steps_fn[stage](links, frozen, opt_state, batch_for(step))
      loss, finite = float(m["loss"]), bool(m["finite"])
      seconds = time.perf_counter() - tick
      skipped += not finite
      in_a_row = 0 if finite else in_a_row + 1
      if not finite:
        log.warning("step %d: non-finite loss or gradient (loss=%s); update skipped", step, loss)
      last = dict(step=step, stage=stage, loss=loss, grad_norm=float(m["grad_norm"]), finite=finite, seconds=seconds)
      if "round_grad_norms" in m:  # the credit each round's links receive, round 1 first
        last["round_grad_norms"] = [float(x) for x in np.asarray(m["round_grad_norms"])]
      if metrics_log is not None:
        metrics_log.write(last)
      done = step + 1
      if heldout and (done % t.eval_every == 0 or done == plan.inner or done == plan.total):
        evaluate_heldout(done, stage)
      if max_skipped and in_a_row >= max_skipped:
        raise TrainingIncompleteError(
          f"{workdir}: steps {done - in_a_row}-{step} ({stage}) gave a non-finite loss or gradient {in_a_row} "
          f"times in a row (train.max_skipped={max_skipped}; last {_described(last)}) and were skipped; the "
          f"newest checkpoint is step {saved} and a rerun resumes there"
        )
      if done % t.checkpoint_every == 0 or done == plan.inner or done == plan.total:
        if store.save(done, links, opt_state, {"data_position": done * t.batch_size, "stage": stage,
                                               "config": config}):  # fmt: skip
          saved = done
      if bar is not None:
        bar.set_postfix(stage=stage, loss=f"{loss:.4f}", s_per_step=f"{seconds:.1f}")
        bar.update(1)
  finally:
    if bar is not None:
      bar.close()
    if metrics_log is not None:
      metrics_log.close()
    store.close()
    best_store.close()
  if saved < plan.total:
    raise TrainingIncompleteError(f"{workdir}: step {plan.total}'s checkpoint was not written (the newest is "
                                  f"step {saved}); the run is not finished and a rerun resumes there")  # fmt: skip
  nnx.update(system, links)
  return dict(steps=plan.total, resumed_from=start, skipped=skipped, last=last, best=best)


def _described(step_record: dict) -> str:
  """`loss=..., grad_norm=..., round_grad_norms=[...]` of a metrics record, for one error line."""
  keys = ("loss", "grad_norm", "round_grad_norms")
  return ", ".join(f"{k}={step_record[k]}" for k in keys if k in step_record)


def _read_best(workdir: str, start: int) -> dict | None:
  """The best held-out loss so far (`best.json`). One measured past the resumed step stays: the resumed run
  reaches that step again with the same links (batches are a function of the step), so it cannot be beaten there
  by itself."""
  path = os.path.join(workdir, BEST_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write_best(workdir: str, best: dict) -> None:
  tmp = os.path.join(workdir, BEST_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(best, f)
  os.replace(tmp, os.path.join(workdir, BEST_FILE))


def restore_links(config, system, workdir: str, which: str = "latest") -> int | None:
  """Loads trained links of `workdir` into `system`; returns their step, or None if there is no checkpoint (a
  checkpoint from a different run config is an error, not silently ignored).

  Args:
    config: the run config the links were trained with.
    system: its links are replaced.
    workdir: the run directory.
    which: "latest" (`workdir/checkpoints`) or "best" (`workdir/checkpoints_best`: the links of the lowest held-out
      answer loss that training measured, with `train.eval_every`).
  """
  if which not in CHECKPOINTS:
    raise ValueError(f"checkpoint {which!r}: expected one of {CHECKPOINTS}")
  directory = os.path.join(workdir, "checkpoints" if which == "latest" else BEST_DIR)
  if which == "best" and not os.path.isdir(directory):
    raise ValueError(f"{workdir}: holds no {BEST_DIR}/ (training keeps the best links only with train.eval_every)")
  if not os.path.isdir(directory):
    return None
  t = config.train
  plan = StagePlan(t.inner_steps, t.outer_steps)
  with run_store(directory, config, keep=t.keep) as store:
    _, links, _ = split_links(system)

    def opt_for(step):  # the layouts the links have (sharded or not); the best links are kept in the outer stage
      stage = "outer" if which == "best" else plan.stage(step - 1)
      optimizer = stage_optimizer(stage, t, plan.steps_in(stage))
      return init_opt_state(optimizer, links, current_mesh())

    found = store.restore_newest(links_template=links, opt_state_template=opt_for)  # damaged ones passed over
    if not found:
      return None
    step, links, _, _ = found
  nnx.update(system, links)
  return step
