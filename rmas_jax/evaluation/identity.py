"""What an evaluation result measured: its identity, written into every result and partial file.

An identity is a JSON dict of five parts:

- `dataset`: where the questions came from (a local file's path and the SHA-256 of its bytes; a registry name with
  its package version, generation seed, split and limit) and a digest of the examples themselves;
- `task` and `fields`: how records became questions and how answers are scored;
- `method`: the method and every setting that changes its answers (rounds, latent steps, generation, scoring, ...);
- `system`: the agents, pattern, prompts and link design;
- `links`: the checkpoint step and a content hash of the link arrays, "fresh" links with their seed, or "not used".

The result's file name is a readable base plus a short hash of the parts that say *which questions* (dataset, task,
field map), so results of different datasets never share a file; everything else must match for a resume (or for a
finished result to be handed back), and `check_same` refuses a mismatch in one line naming what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

# Recorded for the reader, not compared: the same bytes under another path, or the same links read through another
# run directory or selector, measure the same thing.
INFORMATIONAL = ("dataset.path", "dataset.name", "links.dir", "links.which")
# The parts whose hash goes into the file name: which questions, posed and scored how.
NAMED_PARTS = ("dataset", "task", "fields")
_CHUNK = 1 << 20


class IdentityMismatchError(ValueError):
  """A result or partial file was made by a different evaluation than the one asked for."""


def canonical(value: Any) -> str:
  """Canonical JSON of `value`: sorted keys, no spaces, non-JSON values (numpy scalars, paths) as strings."""
  return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), default=str)


def _plain(value: Any) -> Any:
  if hasattr(value, "to_dict"):  # ConfigDict
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [_plain(v) for v in value]
  return value


def digest(value: Any) -> str:
  """SHA-256 (hex) of the canonical JSON of `value`."""
  return hashlib.sha256(canonical(value).encode()).hexdigest()


def file_digest(path: str) -> str:
  """SHA-256 of a file's bytes, read in 1 MiB chunks; for a folder, of every file's relative path and bytes in sorted
  order (hidden files and folders such as `.cache` left out, since tools write there)."""
  h = hashlib.sha256()
  if not os.path.isdir(path):
    _hash_file(h, path)
    return h.hexdigest()
  for root, dirs, files in os.walk(path):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(f for f in files if not f.startswith(".")):
      full = os.path.join(root, name)
      h.update(os.path.relpath(full, path).encode() + b"\0")
      _hash_file(h, full)
  return h.hexdigest()


def _hash_file(h, path: str) -> None:
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)


def examples_digest(examples: Iterable) -> str:
  """SHA-256 over every example's id, question, answer, task and meta, in order: what was asked and scored."""
  h = hashlib.sha256()
  for x in examples:
    h.update(canonical([x.id, x.question, x.answer, x.task, x.meta]).encode() + b"\n")
  return h.hexdigest()


def link_digest(system) -> str:
  """SHA-256 of a system's link arrays (`nnx.state(system, LinkParam)`): every leaf's path, dtype, shape and bytes,
  in sorted path order, so two systems hash alike exactly when their links are equal bit for bit."""
  import jax
  from flax import nnx

  from rmas_jax.links.recursive_link import LinkParam

  # The pure dict drops flax's Variable wrappers, so the hash does not change with flax's state classes.
  pure = nnx.to_pure_dict(nnx.state(system, LinkParam))
  leaves = sorted((jax.tree_util.keystr(path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(pure))
  h = hashlib.sha256()
  for path, leaf in leaves:
    array = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{path}|{array.dtype.str}|{array.shape}\n".encode())
    h.update(array.tobytes())
  return h.hexdigest()


def fresh_link_digest(config, system) -> str:
  """`link_digest` of the links `config` initialises for `system`'s backbones (what `load_system` builds from
  `config.seed`), so a system's links can be told fresh or not without trusting whoever passed it in."""
  from rmas_jax.patterns.system import build_system

  links = config.get("links") or {}
  backbones = {role: system.agents[role].backbone for role in system.pattern.roles}
  fresh = build_system(system.pattern, backbones, form=links.get("form", "official"),
                       design=links.get("design", "res+2-layer"), seed=config.seed)  # fmt: skip
  return link_digest(fresh)


def name_key(identity: Mapping) -> str:
  """8 hex digits naming the questions an identity asks (its dataset, task and field map)."""
  return digest({k: _compared(identity.get(k), k) for k in NAMED_PARTS})[:8]


def _compared(value: Any, prefix: str) -> Any:
  """`value` without the informational entries under `prefix`."""
  if not isinstance(value, Mapping):
    return value
  return {k: _compared(v, f"{prefix}.{k}") for k, v in value.items() if f"{prefix}.{k}" not in INFORMATIONAL}


def differences(old: Mapping, new: Mapping) -> list[str]:
  """`"path: OLD there, NEW now"` for every compared leaf that differs (informational entries skipped)."""
  out: list[str] = []
  _diff(_plain(old), _plain(new), "", out)
  return out


def _diff(old: Any, new: Any, prefix: str, out: list[str]) -> None:
  if prefix in INFORMATIONAL:
    return
  if isinstance(old, dict) and isinstance(new, dict):
    for key in sorted(set(old) | set(new)):
      _diff(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key, out)
    return
  if old != new:
    out.append(f"{prefix}: {_short(old)} there, {_short(new)} now")


def _short(value: Any) -> str:
  text = json.dumps(value, sort_keys=True, default=str) if value is not None else "none"
  return text if len(text) <= 48 else text[:45] + "..."


def check_same(stored: Mapping | None, current: Mapping, where: str) -> None:
  """Raises `IdentityMismatchError` (one line naming the first differences) unless `stored` equals `current` in
  every compared entry.

  Args:
    stored: the identity found in the file (None: the file has none).
    current: the identity of the evaluation asked for.
    where: the file, for the message.
  """
  if stored is None:
    raise IdentityMismatchError(f"{where}: no evaluation identity (written by an older version or another tool); "
                                "move it away to evaluate again")  # fmt: skip
  diffs = differences(stored, current)
  if diffs:
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    raise IdentityMismatchError(f"{where} was made by a different evaluation: {'; '.join(diffs[:3])}{more}; "
                                "delete it or use another --workdir")  # fmt: skip
