"""`convert to-release`: a workdir's links as the release's files, for the release's own loader.

Outer links go to `OUT/<Src>-<Dst>-Outerlink(task).pt` (no `(task)` for Mixture and Deliberation) with
`outer_adapter_config[(task)].json` and a task-scoped (or flat) `outerlink_config.json`; inner links to
`OUT/<role>/adapter(task).pt` (or `adapter.pt`) with `adapter_config.json` and `innerlink_config.json`. Tensors carry
the release's key names and `[out, in]` weights, in bfloat16 (the release's dtype) or float32. Exporting the other
task into the same directory adds it to the manifests; no existing link file is ever overwritten.
"""

from __future__ import annotations

import os

from rmas_jax.interop import link_store
from rmas_jax.interop.link_tensors import DTYPES, link_to_release
from rmas_jax.interop.pt_files import ReleaseFileError, write_state_dict
from rmas_jax.interop.release_files import (
  INNER_CONFIG,
  INNER_MANIFEST,
  INNER_TYPE,
  MANIFEST,
  OUTER_TYPE,
  ReleaseSystem,
  choose_task,
  read_json,
  release_system_of,
  write_json,
)
from rmas_jax.patterns.from_config import pattern_of
from rmas_jax.patterns.system import link_key


def _merged(path: str, fresh: dict, task: str | None) -> dict:
  """`fresh`, or the existing manifest at `path` with `fresh`'s task added (never replacing a task it has)."""
  if not os.path.exists(path):
    return fresh
  old = read_json(path)
  if task is None or not isinstance(old, dict) or not isinstance(old.get("tasks"), dict):
    raise ReleaseFileError(f"{path}: exists; export into a new --out (nothing is overwritten)")
  if task in old["tasks"]:
    raise ReleaseFileError(f"{path}: has links for task {task!r} already; export into a new --out")
  if old.get("paradigm", fresh.get("paradigm")) != fresh.get("paradigm"):
    raise ReleaseFileError(f"{path}: a manifest of paradigm {old.get('paradigm')!r}, not {fresh.get('paradigm')!r}")
  return dict(old, tasks={**old["tasks"], **fresh["tasks"]})


def _outer_manifests(system: ReleaseSystem, widths: dict[str, int], task: str | None) -> tuple[str, dict, dict]:
  """(legacy config name, legacy config, manifest) for the system's outer links."""
  legacy_name = f"outer_adapter_config({task}).json" if task else "outer_adapter_config.json"
  legacy, adapters = {}, []
  for key, (src, dst) in system.edges.items():
    legacy.update({f"{key}_in_dim": widths[src], f"{key}_out_dim": widths[dst], f"{key}_type": OUTER_TYPE})
    adapters.append({"legacy_key": key, "legacy_filename": f"{key}.pt", "filename": system.outer_filename(key, task),
                     "source_role": system.names[src], "target_role": system.names[dst], "adapter_type": OUTER_TYPE,
                     "in_dim": widths[src], "out_dim": widths[dst]})  # fmt: skip
  paradigm = system.paradigms[0]
  if task:
    scoped = {"legacy_config_filename": legacy_name, "task": task, "adapters": adapters}
    manifest = {"format_version": 1, "paradigm": paradigm, "tasks": {task: scoped}}
  else:
    manifest = {"format_version": 1, "paradigm": paradigm, "legacy_config_filename": legacy_name,
                "adapters": adapters}  # fmt: skip
  return legacy_name, legacy, manifest


def export_release(config, *, workdir: str, out: str, task: str | None, dtype: str = "bfloat16") -> dict:
  """Writes the links of `workdir`'s checkpoint of `config` as the release's files under `out`.

  Args:
    config: the run config the workdir was trained or converted with.
    workdir: holds `checkpoints/` (the latest is exported, as `restore_links` picks it).
    out: the release-layout directory (created; existing link files are never overwritten).
    task: `math` or `code` for systems with a task split (default: the release's choice for `config.task`).
    dtype: `bfloat16` (the release's) or `float32`.

  Returns:
    `{"step", "task", "dtype", "files": {path: sha256}}` of what was written.

  Raises:
    ValueError: one line naming the file or argument at fault.
  """
  if dtype not in DTYPES:
    raise ValueError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
  link_store.check_official_links(config)
  pattern = pattern_of(config)
  system = release_system_of(pattern)
  task = choose_task(config, system, task)
  links, step = link_store.load_links(config, workdir)
  widths = {r: int(links["agents"][r]["inner"]["pre_ln"]["weight"].shape[0]) for r in pattern.roles}

  inner_name = f"adapter({task}).pt" if task else "adapter.pt"
  tensors: dict[str, dict] = {}
  for e in pattern.edges:
    path = os.path.join(out, system.outer_filename(system.key_of(e.src, e.dst), task))
    tensors[path] = link_to_release(links["outer"][link_key(e.src, e.dst)], "outer", dtype)
  for role in pattern.roles:
    tensors[os.path.join(out, role, inner_name)] = link_to_release(links["agents"][role]["inner"], "inner", dtype)
  legacy_name, legacy, manifest = _outer_manifests(system, widths, task)
  jsons = {os.path.join(out, legacy_name): legacy}
  for path in [*tensors, *jsons]:
    if os.path.exists(path):
      raise ReleaseFileError(f"{path}: exists; export into a new --out (nothing is overwritten)")
  jsons[os.path.join(out, MANIFEST)] = _merged(os.path.join(out, MANIFEST), manifest, task)
  for role in pattern.roles:
    jsons[os.path.join(out, role, INNER_CONFIG)] = {"adapter_type": INNER_TYPE}
    if task:
      inner_manifest = {"tasks": {task: {"adapter.pt": inner_name}}}
      jsons[os.path.join(out, role, INNER_MANIFEST)] = _merged(os.path.join(out, role, INNER_MANIFEST),
                                                                inner_manifest, task)  # fmt: skip
  written = {}
  for path, sd in tensors.items():
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    written[os.path.abspath(path)] = write_state_dict(path, sd)
  for path, value in jsons.items():
    write_json(path, value)
  return {"step": step, "task": task, "dtype": dtype, "files": written, "manifest": os.path.join(out, MANIFEST)}

