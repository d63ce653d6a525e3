"""The public PyTorch release's link files: which system is which, what its files are called, how its manifests
name them, and where an inner link lives in a role repository.

The release publishes, per system, one repository of outer links and one repository per role (the frozen model plus
its inner links). Outer links are named by their edge's legacy key (`outer_12` is planner→critic); a manifest
`outerlink_config.json` maps each key to a file, in one of three layouts:

1. task-scoped: `{"paradigm", "tasks": {task: {"adapters": [...]}}}` (Sequential and Distillation releases);
2. flat with meta: `{"paradigm", "meta": {"mas_shape", "mas_task", ...}, "adapters": [...]}` (Deliberation release);
3. flat: `{"paradigm", "legacy_config_filename", "adapters": [...]}` (what the release's training writes).

Older directories have only `outer_adapter_config[(task)].json` (`outer_XY_in_dim`, `_out_dim`, `_type`) and files
named `outer_XY.pt`. Inner links are `adapter(task).pt` (or `adapter.pt` for systems without a task split), found
through `innerlink_config.json` when it names them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from rmas_jax.interop.pt_files import ReleaseFileError
from rmas_jax.patterns.graph import Pattern

INNER_TYPE = "ln_res_adapter"
OUTER_TYPE = "outer_ln_res_adapter"
MANIFEST = "outerlink_config.json"
INNER_MANIFEST = "innerlink_config.json"
INNER_CONFIG = "adapter_config.json"
TASKS = ("math", "code")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclasses.dataclass(frozen=True)
class ReleaseSystem:
  """One of the release's collaboration systems, as its files name it.

  Attributes:
    pattern: the built-in pattern of ours with the same roles and edges.
    paradigms: spellings of the system in a manifest's `paradigm` (and `meta.mas_shape`).
    names: our role -> the release's name for it in file names (`Planner`).
    edges: legacy key -> (source role, target role).
    task_split: links trained per task (`math`, `code`); without it, one set of links.
  """

  pattern: str
  paradigms: tuple[str, ...]
  names: Mapping[str, str]
  edges: Mapping[str, tuple[str, str]]
  task_split: bool

  def key_of(self, src: str, dst: str) -> str:
    """The legacy key of the edge `src`→`dst`."""
    return next(k for k, edge in self.edges.items() if edge == (src, dst))

  def outer_filename(self, key: str, task: str | None) -> str:
    """The release's file name of an outer link, e.g. `Planner-Critic-Outerlink(math).pt`."""
    src, dst = self.edges[key]
    return f"{self.names[src]}-{self.names[dst]}-Outerlink{f'({task})' if task else ''}.pt"

  def describe(self, key: str) -> str:
    src, dst = self.edges[key]
    return f"{key} ({src}→{dst})"


SYSTEMS: dict[str, ReleaseSystem] = {
  s.pattern: s
  for s in (
    ReleaseSystem("sequential", ("sequential", "chain", "sequential_light", "sequential_scaled"),
                  {"planner": "Planner", "critic": "Critic", "solver": "Solver"},
                  {"outer_12": ("planner", "critic"), "outer_23": ("critic", "solver"),
                   "outer_31": ("solver", "planner")}, task_split=True),  # fmt: skip
    ReleaseSystem("mixture", ("mixture", "hie", "hierarchical"),
                  {"math_expert": "Math", "code_expert": "Code", "science_expert": "Science",
                   "summarizer": "Summarizer"},
                  {"outer_1s": ("math_expert", "summarizer"), "outer_2s": ("code_expert", "summarizer"),
                   "outer_3s": ("science_expert", "summarizer"), "outer_s1": ("summarizer", "math_expert"),
                   "outer_s2": ("summarizer", "code_expert"), "outer_s3": ("summarizer", "science_expert")},
                  task_split=False),  # fmt: skip
    ReleaseSystem("distillation", ("distillation", "distill"), {"expert": "Expert", "learner": "Learner"},
                  {"outer_el": ("expert", "learner"), "outer_le": ("learner", "expert")}, task_split=True),
    ReleaseSystem("deliberation", ("deliberation",), {"reflector": "Reflector", "tool_caller": "Toolcaller"},
                  {"outer_rt": ("reflector", "tool_caller"), "outer_tr": ("tool_caller", "reflector")},
                  task_split=False),  # fmt: skip
  )
}


def release_system_of(pattern: Pattern) -> ReleaseSystem:
  """The release system with `pattern`'s roles and edges (a declared copy of a built-in pattern counts).

  Raises:
    ValueError: the pattern has no counterpart in the release.
  """
  edges = {(e.src, e.dst) for e in pattern.edges}
  for system in SYSTEMS.values():
    if set(system.names) == set(pattern.roles) and set(system.edges.values()) == edges:
      return system
  raise ValueError(f"pattern {pattern.name!r} (roles {list(pattern.roles)}) has no counterpart among the release's "
                   f"systems ({', '.join(SYSTEMS)}); only their links convert")  # fmt: skip


def release_task(system: ReleaseSystem | None, config_task: str) -> str | None:
  """The task whose links the release uses for a config task: `code` for code, `math` for everything else (the
  release's rule), and none for systems without a task split."""
  if system is not None and not system.task_split:
    return None
  return "code" if config_task == "code" else "math"


def choose_task(config, system: ReleaseSystem, task: str | None) -> str | None:
  """The task whose links to convert: `task` for systems with a task split (default: the release's choice for
  `config.task`, said on stderr), none for the others (where `task` is an error)."""
  if not system.task_split:
    if task:
      raise ValueError(f"--task {task}: the release's {system.pattern} system has one set of links (no task split); "
                       "drop --task")  # fmt: skip
    return None
  if task is None:
    task = release_task(system, config.task)
    print(f"note: --task not given; using {task!r} (the release's choice for config.task={config.task!r})",
          file=sys.stderr)  # fmt: skip
  elif task not in TASKS:
    raise ValueError(f"--task {task}: expected one of {', '.join(TASKS)}")
  return task


def write_json(path: str, value: Any) -> None:
  """Writes `value` as indented JSON through a temporary file, so a reader never sees half a file."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  """A JSON file, or a one-line error naming it."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ReleaseFileError(f"{path}: not valid JSON ({e})") from None
  except OSError as e:
    raise ReleaseFileError(f"{path}: cannot be read ({e.strerror})") from None


@dataclasses.dataclass
class OuterFile:
  """Where one outer link's tensors are, and the widths its directory declares for it (None: not declared)."""

  key: str
  path: str
  in_dim: int | None = None
  out_dim: int | None = None


@dataclasses.dataclass
class OuterFiles:
  """An outer-links directory resolved for one system and task.

  Attributes:
    files: legacy key -> file, one per edge of the system.
    layout: how the names were found (`task-scoped manifest`, `flat manifest with meta`, `flat manifest`,
      `legacy config`, `legacy file names`).
    described_by: the manifest or config file read, if any.
  """

  files: dict[str, OuterFile]
  layout: str
  described_by: str | None


def _check_paradigm(where: str, value: Any, system: ReleaseSystem, field: str) -> None:
  """A paradigm that names another release system is an error; an unknown spelling is left to the key check."""
  if not isinstance(value, str):
    return
  spelled = value.strip().lower()
  for other in SYSTEMS.values():
    if other is not system and spelled in other.paradigms:
      raise ReleaseFileError(f"{where}: {field} is {value!r}, a {other.pattern} system, but the config's pattern is "
                             f"{system.pattern}; use a {other.pattern} config or that system's links")  # fmt: skip


def _plain_name(where: str, key: str, name: Any) -> str:
  if not isinstance(name, str) or not name or os.path.basename(name) != name or name in (".", ".."):
    raise ReleaseFileError(f"{where}: {key}'s filename {name!r} is not a file name in the directory")
  return name


def _dim(where: str, key: str, entry: Mapping, field: str) -> int | None:
  value = entry.get(field)
  if value is None:
    return None
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ReleaseFileError(f"{where}: {key}'s {field} is {value!r}; expected a positive integer")
  return value


def _check_type(where: str, key: str, kind: Any) -> None:
  if kind is not None and kind != OUTER_TYPE:
    raise ReleaseFileError(f"{where}: {key} is of type {kind!r}; only {OUTER_TYPE!r} (the release's outer links) "
                           "converts")  # fmt: skip


def _complete(where: str, found: Mapping[str, OuterFile], system: ReleaseSystem) -> None:
  missing = [k for k in system.edges if k not in found]
  if missing:
    raise ReleaseFileError(f"{where}: no entry for {', '.join(system.describe(k) for k in missing)}")


def _from_manifest(directory: str, system: ReleaseSystem, task: str | None) -> OuterFiles:
  where = os.path.join(directory, MANIFEST)
  data = read_json(where)
  if not isinstance(data, dict):
    raise ReleaseFileError(f"{where}: a JSON {type(data).__name__}, not a manifest object")
  _check_paradigm(where, data.get("paradigm"), system, "paradigm")
  meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
  _check_paradigm(where, meta.get("mas_shape"), system, "meta.mas_shape")
  if "tasks" in data:
    tasks = data["tasks"]
    if not isinstance(tasks, dict) or not tasks:
      raise ReleaseFileError(f"{where}: 'tasks' is not a non-empty object of task -> links")
    if task is None:
      raise ReleaseFileError(f"{where}: links per task ({', '.join(tasks)}), but the {system.pattern} system has no "
                             "task split")  # fmt: skip
    if task not in tasks or not isinstance(tasks[task], dict):
      raise ReleaseFileError(f"{where}: no links for task {task!r} (it has {', '.join(map(str, tasks))})")
    adapters, layout = tasks[task].get("adapters"), "task-scoped manifest"
  else:
    trained_for = meta.get("mas_task")
    if task is not None and isinstance(trained_for, str) and trained_for and trained_for != task:
      raise ReleaseFileError(f"{where}: links trained for task {trained_for!r} (meta.mas_task), asked for {task!r}")
    adapters, layout = data.get("adapters"), "flat manifest with meta" if meta else "flat manifest"
  if not isinstance(adapters, list) or not adapters:
    raise ReleaseFileError(f"{where}: 'adapters' is not a non-empty list of links")
  found: dict[str, OuterFile] = {}
  for i, entry in enumerate(adapters):
    if not isinstance(entry, dict) or not isinstance(entry.get("legacy_key"), str):
      raise ReleaseFileError(f"{where}: adapters[{i}] has no 'legacy_key'")
    key = entry["legacy_key"]
    if key not in system.edges:
      raise ReleaseFileError(f"{where}: {key!r} is not an edge of the {system.pattern} system (its edges: "
                             f"{', '.join(system.edges)}); links of another paradigm?")  # fmt: skip
    if key in found:
      raise ReleaseFileError(f"{where}: {key} appears twice")
    _check_type(where, key, entry.get("adapter_type"))
    name = _plain_name(where, key, entry.get("filename"))
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
      raise ReleaseFileError(f"{where}: {key}'s file {name} is missing from {directory}")
    found[key] = OuterFile(key, path, _dim(where, key, entry, "in_dim"), _dim(where, key, entry, "out_dim"))
  _complete(where, found, system)
  return OuterFiles(found, layout, where)


def _existing(directory: str, names: list[str]) -> str | None:
  return next((os.path.join(directory, n) for n in names if os.path.isfile(os.path.join(directory, n))), None)


def _legacy_candidates(system: ReleaseSystem, key: str, task: str | None) -> list[str]:
  names = [f"{key}.pt"]
  if task:
    names.append(system.outer_filename(key, task))
  return [*names, system.outer_filename(key, None)]


def _from_legacy_config(directory: str, system: ReleaseSystem, task: str | None, where: str) -> OuterFiles:
  data = read_json(where)
  if not isinstance(data, dict):
    raise ReleaseFileError(f"{where}: a JSON {type(data).__name__}, not an outer adapter config")
  described = {m.group(1) for m in map(re.compile(r"^(outer_\w+?)_(in_dim|out_dim|type)$").match, data) if m}
  foreign = sorted(described - set(system.edges))
  if foreign:
    raise ReleaseFileError(f"{where}: describes {', '.join(foreign)}, not edges of the {system.pattern} system "
                           f"({', '.join(system.edges)}); links of another paradigm?")  # fmt: skip
  found = {}
  for key in system.edges:
    if key not in described:
      continue
    _check_type(where, key, data.get(f"{key}_type"))
    path = _existing(directory, _legacy_candidates(system, key, task))
    if path is None:
      raise ReleaseFileError(f"{where}: describes {key}, but {directory} has no {key}.pt")
    found[key] = OuterFile(key, path, _dim(where, key, data, f"{key}_in_dim"), _dim(where, key, data, f"{key}_out_dim"))
  _complete(where, found, system)
  return OuterFiles(found, "legacy config", where)


def resolve_outer_files(directory: str, system: ReleaseSystem, task: str | None) -> OuterFiles:
  """Finds one file per edge of `system` in an outer-links directory: through `outerlink_config.json` (any layout),
  else `outer_adapter_config(task).json` / `outer_adapter_config.json`, else the legacy names `outer_XY.pt`.

  Raises:
    ReleaseFileError: naming the manifest or directory: a malformed manifest, one of another paradigm or task, an
      entry of another system, a missing entry or a missing file.
  """
  if not os.path.isdir(directory):
    raise ReleaseFileError(f"{directory}: no such directory")
  if os.path.isfile(os.path.join(directory, MANIFEST)):
    return _from_manifest(directory, system, task)
  legacy_names = ([f"outer_adapter_config({task}).json"] if task else []) + ["outer_adapter_config.json"]
  legacy = _existing(directory, legacy_names)
  if legacy is not None:
    return _from_legacy_config(directory, system, task, legacy)
  found = {}
  for key in system.edges:
    path = _existing(directory, _legacy_candidates(system, key, task))
    if path is not None:
      found[key] = OuterFile(key, path)
  if not found:
    raise ReleaseFileError(f"{directory}: no {MANIFEST}, no outer_adapter_config*.json and no outer link files "
                           f"({', '.join(f'{k}.pt' for k in system.edges)}); not an outer-links directory")  # fmt: skip
  _complete(directory, found, system)
  return OuterFiles(found, "legacy file names", None)


def resolve_inner_file(path: str, task: str | None) -> str:
  """The inner-link file named by `path`: the file itself, or in a role repository directory the one that
  `innerlink_config.json` names for `task`, else `adapter(task).pt`, else `adapter.pt` (the release's order).

  Raises:
    ReleaseFileError: no such file, an `adapter_config.json` of another link type, a manifest naming a missing file,
      or a directory without inner links.
  """
  if os.path.isfile(path):
    return path
  if not os.path.isdir(path):
    raise ReleaseFileError(f"{path}: no such file or directory")
  config = os.path.join(path, INNER_CONFIG)
  if os.path.isfile(config):
    kind = read_json(config)
    kind = kind.get("adapter_type") if isinstance(kind, dict) else kind
    if kind is not None and kind != INNER_TYPE:
      raise ReleaseFileError(f"{config}: adapter_type is {kind!r}; only {INNER_TYPE!r} (the release's inner links) "
                             "converts")  # fmt: skip
  manifest = os.path.join(path, INNER_MANIFEST)
  if task and os.path.isfile(manifest):
    data = read_json(manifest)
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if isinstance(tasks, dict) and isinstance(tasks.get(task), dict):
      name = _plain_name(manifest, task, tasks[task].get("adapter.pt", "adapter.pt"))
      if not os.path.isfile(os.path.join(path, name)):
        raise ReleaseFileError(f"{manifest}: task {task}'s file {name} is missing from {path}")
      return os.path.join(path, name)
  found = _existing(path, ([f"adapter({task}).pt"] if task else []) + ["adapter.pt"])
  if found is None:
    wanted = f"adapter({task}).pt or adapter.pt" if task else "adapter.pt"
    raise ReleaseFileError(f"{path}: no {wanted}; not a role repository with inner links")
  return found


def has_inner_links(directory: str) -> bool:
  """Whether a model directory is a role repository: it holds `adapter*.pt` files next to the model."""
  try:
    return any(n.startswith("adapter") and n.endswith(".pt") for n in os.listdir(directory))
  except OSError:
    return False


def fetch_repo(repo_id: str, patterns: list[str]) -> str:
  """Downloads the files of a hub repository matching `patterns` (with `huggingface_hub`); returns its directory.

  Raises:
    ReleaseFileError: the hub cannot be reached, the repository does not exist, or huggingface_hub is missing.
  """
  try:
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
  except ImportError:
    raise ReleaseFileError(f"{repo_id}: huggingface_hub is not installed; pip install huggingface_hub") from None
  try:
    return huggingface_hub.snapshot_download(repo_id, allow_patterns=patterns)
  except RepositoryNotFoundError:
    raise ReleaseFileError(f"{repo_id}: no such repository on the Hugging Face hub") from None
  except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ReleaseFileError(f"{repo_id}: cannot fetch from the Hugging Face hub ({reason}); download the repository "
                           "on a machine with access and pass its directory instead") from None  # fmt: skip


def local_or_fetched(spec: str, patterns: list[str], what: str) -> str:
  """`spec` itself when it exists locally, else the directory of the hub repository it names."""
  if os.path.exists(spec):
    return spec
  if HUB_ID.match(spec):
    try:
      return fetch_repo(spec, patterns)
    except ReleaseFileError as e:  # `dl/outer` is a hub id too: a mistyped local path must still read as one
      reason = str(e).split(": ", 1)[1]
      raise ReleaseFileError(f"{spec}: no such local path; as a hub id for {what}: {reason}") from None
  raise ReleaseFileError(f"{spec}: no such file or directory (nor a hub id org/name) for {what}")


def outer_patterns(system: ReleaseSystem, task: str | None) -> list[str]:
  """What to download of an outer-links repository: manifests and the task's links (not the other task's)."""
  return ["*.json", f"*({task}).pt", "outer_*.pt"] if task else ["*.json", "*.pt"]


def inner_patterns(task: str | None) -> list[str]:
  """What to download of a role repository for its inner link alone (not the model)."""
  return [INNER_MANIFEST, INNER_CONFIG, "adapter.pt"] + ([f"adapter({task}).pt"] if task else [])
