"""A config's links without its backbones: their widths, an empty system holding only them, and the rmas-jax
link checkpoint of a workdir written and read as training writes and `restore_links` reads it.

Converting links needs only their shapes, so nothing here loads a model's weights: widths come from the models'
configs (`rmas_jax.plan.arch_of`: the Table 1 table, a local directory, a tiny spec, the HF cache, or `config.json`
fetched from the hub).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rmas_jax.interop.pt_files import ReleaseFileError
from rmas_jax.links.recursive_link import inner_link, outer_link
from rmas_jax.patterns.from_config import pattern_of
from rmas_jax.patterns.system import Agent, System, link_key
from rmas_jax.weights.errors import ModelLoadError


def check_official_links(config) -> None:
  """The release's links are the `official` form; a config with another form or design cannot hold them."""
  links = config.get("links") or {}
  form, design = links.get("form", "official"), links.get("design", "res+2-layer")
  if form != "official" or design != "res+2-layer":
    raise ValueError(f"config.links: form {form!r}, design {design!r}; the release's links are form 'official' "
                     "(design 'res+2-layer'), so convert with such a config")  # fmt: skip
  if links.get("scale_to_embeddings", False):
    # The release's files have no output scale; a scaled link would be read or written with the wrong norm.
    raise ValueError("config.links.scale_to_embeddings: True; the release's links carry no output scale, so convert "
                     "with links.scale_to_embeddings=False")  # fmt: skip


def _hub_width(spec: str) -> int:
  from rmas_jax.interop.release_files import HUB_ID
  from rmas_jax.weights.hf_config import arch_from_dir

  if not HUB_ID.match(spec):
    raise ModelLoadError(f"{spec}: no architecture known offline; pass an HF checkpoint directory (with config.json)")
  try:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(spec, "config.json")
  except Exception as e:  # noqa: BLE001 - offline, unknown repository, no huggingface_hub: one line either way
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ModelLoadError(f"{spec}: its width is unknown offline and config.json cannot be fetched ({reason}); pass "
                         "the model's directory instead") from None  # fmt: skip
  return arch_from_dir(os.path.dirname(path)).hidden_size


def agent_widths(config) -> dict[str, int]:
  """Role -> hidden width of the config's agents, from their configs (no weights are read).

  Raises:
    ValueError: a model's width cannot be found (one line naming the agent).
  """
  from rmas_jax.plan import arch_of

  widths = {}
  for i, agent in enumerate(config.agents):
    try:
      try:
        widths[agent["role"]] = arch_of(agent["model"]).hidden_size
      except ModelLoadError:
        widths[agent["role"]] = _hub_width(agent["model"])
    except ModelLoadError as e:
      raise ValueError(f"config.agents[{i}].model: {e}") from None
  return widths


def link_skeleton(config, widths: dict[str, int]) -> System:
  """A system of the config's pattern whose agents have inner links and no backbone: the links' structure exactly
  as a loaded system splits it (`rmas_jax.training.optimizer.split_links`), so checkpoints fit either."""
  pattern = pattern_of(config)

  def build() -> System:
    rngs = nnx.Rngs(0)
    agents = {r: Agent(None, inner_link(widths[r], rngs=rngs)) for r in pattern.roles}
    outer = {link_key(e.src, e.dst): outer_link(widths[e.src], widths[e.dst], rngs=rngs) for e in pattern.edges}
    return System(pattern, agents, outer)

  # The values are always overwritten, so zeros stand in for the random init (which compiles a program per shape).
  graphdef, state = nnx.split(nnx.eval_shape(build))
  return nnx.merge(graphdef, jax.tree.map(lambda s: jnp.asarray(np.zeros(s.shape, s.dtype)), state))


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def save_links(config, system: System, workdir: str, meta: dict) -> int:
  """Writes `system`'s links as a finished run's checkpoint of `config` under `workdir/checkpoints`.

  The step is the run's last (`train.inner_steps + train.outer_steps`, at least 1) and the optimizer state a fresh
  one of that step's stage: what `rmas_jax.training.trainer.restore_links` builds as its template, so eval.py and
  `ask --workdir` load these links like trained ones, and train.py finds the run complete.

  Returns:
    The step written.

  Raises:
    ValueError: the workdir already holds checkpoints (nothing is overwritten) or the save was refused.
  """
  from rmas_jax.sharding.placement import init_opt_state
  from rmas_jax.training.optimizer import split_links, stage_optimizer
  from rmas_jax.training.trainer import StagePlan, run_store

  t = config.train
  plan = StagePlan(t.inner_steps, t.outer_steps)
  step = max(plan.total, 1)
  stage = plan.stage(step - 1)
  _, links, _ = split_links(system)
  opt_state = init_opt_state(stage_optimizer(stage, t, plan.steps_in(stage)), links, None)
  directory = checkpoint_dir(workdir)
  with run_store(directory, config, keep=t.keep) as store:
    if store.latest_step() is not None:
      raise ValueError(f"{directory}: holds checkpoints already (step {store.latest_step()}); convert into a new "
                       "--workdir (nothing is overwritten)")  # fmt: skip
    if not store.save(step, links, opt_state, dict(meta, data_position=0, stage=stage, config=config)):
      raise ValueError(f"{directory}: the checkpoint was not written (non-finite link values?)")
  return step


def load_links(config, workdir: str) -> tuple[dict, int]:
  """The links of `workdir`'s checkpoint (as `restore_links` picks it) as a pure dict, and its step.

  Raises:
    ValueError: no checkpoint there, or one of another run config (one line).
  """
  from rmas_jax.training.trainer import restore_links

  system = link_skeleton(config, agent_widths(config))
  step = restore_links(config, system, workdir)
  if not step:
    raise ReleaseFileError(f"{checkpoint_dir(workdir)}: no link checkpoint to export")
  return nnx.to_pure_dict(nnx.state(system)), step
