"""`convert from-release`: the release's links into an rmas-jax workdir, checked against a config.

Every tensor is checked before anything is written: each file's key set (exactly the release's), each shape against
the config's agent widths, each manifest width, finiteness. The links are upcast to fp32 and written as the workdir's
link checkpoint (`link_store.save_links`), and `links_source.json` records where they came from (the files and their
SHA-256), so eval.py, `ask --workdir` and `serve --workdir` use them like trained links and can say so.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rmas_jax.interop import link_store
from rmas_jax.interop.link_tensors import link_from_release
from rmas_jax.interop.pt_files import ReleaseFileError, read_state_dict
from rmas_jax.interop.release_files import (
  choose_task,
  has_inner_links,
  inner_patterns,
  local_or_fetched,
  outer_patterns,
  release_system_of,
  resolve_inner_file,
  resolve_outer_files,
  write_json,
)
from rmas_jax.patterns.from_config import pattern_of
from rmas_jax.patterns.system import link_key

SOURCE_FILE = "links_source.json"


def _release_field(config, name: str):
  release = config.get("release") or {}
  return release.get(name) if hasattr(release, "get") else None


def _inner_sources(config, pattern, inner: Mapping[str, str]) -> dict[str, str]:
  """Role -> where its inner link comes from: `--inner`, else the agent's own model when it is a role repository
  directory, else the config's `release.roles`."""
  unknown = sorted(set(inner) - set(pattern.roles))
  if unknown:
    raise ValueError(f"--inner: no role {', '.join(map(repr, unknown))} in pattern {pattern.name} (roles: "
                     f"{', '.join(pattern.roles)})")  # fmt: skip
  models = {a["role"]: a["model"] for a in config.agents}
  release_roles = _release_field(config, "roles") or {}
  sources = {}
  for role in pattern.roles:
    if role in inner:
      sources[role] = inner[role]
    elif os.path.isdir(models[role]) and has_inner_links(models[role]):
      sources[role] = models[role]
    elif role in release_roles:
      sources[role] = release_roles[role]
    else:
      raise ValueError(f"no inner link for role {role!r}: pass --inner {role}=FILE_OR_ROLE_REPOSITORY (its model "
                       f"{models[role]} is not a role repository and the config names none in release.roles)")
  return sources


def _check_declared(where: str, key: str, declared: int | None, field: str, role: str, width: int) -> None:
  if declared is not None and declared != width:
    raise ReleaseFileError(f"{where}: {key} has {field} {declared}, but the config's {role} agent is {width} wide")


def import_release(config, *, config_spec: str, outer: str | None, inner: Mapping[str, str], task: str | None,
                   workdir: str) -> dict:  # fmt: skip
  """Converts the release's links for `config`'s system into `workdir` (see the module docstring).

  Args:
    config: a validated run config whose pattern is one of the release's systems, links of the official form.
    config_spec: how the config was named (recorded).
    outer: the outer-links directory or hub id (default: `config.release.outer`).
    inner: role -> inner-link file, role repository directory or hub id (missing roles: the agent's model when it
      is a role repository, else `config.release.roles`).
    task: `math` or `code` for systems with a task split (default: the release's choice for `config.task`); None
      for Mixture and Deliberation.
    workdir: where `checkpoints/` and `links_source.json` go; must hold neither.

  Returns:
    The provenance record written to `workdir/links_source.json`.

  Raises:
    ValueError: one line naming the file or argument at fault (`ReleaseFileError` for files).
  """
  link_store.check_official_links(config)
  pattern = pattern_of(config)
  system = release_system_of(pattern)
  task = choose_task(config, system, task)
  source_path = os.path.join(workdir, SOURCE_FILE)
  if os.path.exists(source_path):
    raise ValueError(f"{source_path}: exists; convert into a new --workdir (nothing is overwritten)")
  checkpoints = link_store.checkpoint_dir(workdir)
  if os.path.isdir(checkpoints) and os.listdir(checkpoints):  # said before any download, not after
    raise ValueError(f"{checkpoints}: holds checkpoints already; convert into a new --workdir (nothing is overwritten)")
  outer = outer or _release_field(config, "outer")
  if not outer:
    raise ValueError("--outer is required (the outer-links directory or hub id; the config names no release.outer)")
  sources = _inner_sources(config, pattern, inner)
  widths = link_store.agent_widths(config)
  models = {a["role"]: a["model"] for a in config.agents}

  outer_dir = local_or_fetched(outer, outer_patterns(system, task), "the outer links")
  found = resolve_outer_files(outer_dir, system, task)
  values: dict = {"agents": {}, "outer": {}}
  files: dict[str, str] = {}
  dtypes: dict[str, str] = {}
  for e in pattern.edges:
    key = system.key_of(e.src, e.dst)
    entry = found.files[key]
    where = found.described_by or entry.path
    _check_declared(where, key, entry.in_dim, "in_dim", e.src, widths[e.src])
    _check_declared(where, key, entry.out_dim, "out_dim", e.dst, widths[e.dst])
    sd = read_state_dict(entry.path)
    what = f"{system.describe(key)}: {models[e.src]} (width {widths[e.src]}) to {models[e.dst]} (width {widths[e.dst]})"
    values["outer"][link_key(e.src, e.dst)] = link_from_release(sd, "outer", widths[e.src], widths[e.dst], what)
    files[os.path.abspath(entry.path)], dtypes[os.path.abspath(entry.path)] = sd.sha256, _dtypes(sd)
  inner_files = {}
  for role in pattern.roles:
    spec = sources[role]
    path = resolve_inner_file(local_or_fetched(spec, inner_patterns(task), f"the inner link of {role}"), task)
    sd = read_state_dict(path)
    what = f"the inner link of {role} ({models[role]}, width {widths[role]})"
    values["agents"][role] = {"inner": link_from_release(sd, "inner", widths[role], widths[role], what)}
    inner_files[role] = os.path.abspath(path)
    files[inner_files[role]], dtypes[inner_files[role]] = sd.sha256, _dtypes(sd)

  skeleton = link_store.link_skeleton(config, widths)
  state = nnx.state(skeleton)
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, values))
  nnx.update(skeleton, state)
  record = {
    "kind": "release",
    "config": config_spec,
    "outer": outer if not os.path.exists(outer) else os.path.abspath(outer),
    "outer_dir": os.path.abspath(outer_dir),
    "layout": found.layout,
    "inner": inner_files,
    "task": task,
    "files": files,
    "dtypes": dtypes,
  }
  os.makedirs(workdir, exist_ok=True)
  record["step"] = link_store.save_links(config, skeleton, workdir, {"links_source": record})
  write_json(source_path, record)
  return record


def _dtypes(sd) -> str:
  kinds = sorted({str(np.dtype(a.dtype)) for a in sd.tensors.values()})
  return ",".join(kinds)
