"""Checkpoints of the trained links and their optimizer state, over orbax's `CheckpointManager`.

Only the small link variables and the optimizer state are written; the frozen backbones are reloaded from their own
weights and never enter a checkpoint, so a checkpoint is a few MB whatever the backbone size.

One checkpoint is the step directory `<directory>/<step>/` holding three orbax items:

* `links`: the link variables as a pure dict of arrays (`StandardSave`);
* `opt_state`: the optax state pytree (`StandardSave`);
* `meta`: JSON with the caller's `meta` (e.g. `data_position`, `config`), plus `step`, `wall_time`, `versions`,
  `fingerprint`, `structure` (path, shape and dtype of every saved leaf, checked against restore templates) and
  `hashes` (the SHA-256 of every saved leaf's bytes).

Verification: `restore` reads a step, recomputes each leaf's hash, compares it with the one written beside it and
checks that every floating-point leaf is finite (`save` never writes NaN or inf, so one read back means damage). Any
failure, a file that cannot be read included, is a `CheckpointDamagedError` naming the step and what is wrong.
`restore_newest` walks back from the latest step to the newest intact one and reports the damaged ones in one log
line; a run directory whose every checkpoint is damaged is one `CheckpointDamagedError`. Orbax itself does not
check array bytes: bytes overwritten in a data file load as other numbers without a word. Hashes are of whole
arrays, gathered across processes, so they do not depend on the mesh. In a multi-process run the processes agree on
a verdict only when they all see the damage (a hash mismatch or a file every process reads); a shard file that only
some processes read, torn, fails those processes alone.

Links may be given as an `nnx.State` or as a plain nested dict of arrays. An `nnx.State` is written as its pure dict
(`nnx.to_pure_dict`), so the files do not depend on flax's Variable classes; `restore` gives back the type of the
template it was handed (an `nnx.State` template comes back as a new `nnx.State`, the template itself is untouched).

Atomicity (verified on orbax-checkpoint 0.12.8, local file systems): orbax writes a step into
`<directory>/<step>.orbax-checkpoint-tmp`, writes `commit_success.txt` into it last, and renames it to
`<directory>/<step>` once every item is complete. Orbax lists a directory as a step when its name has no
`.orbax-checkpoint-tmp` in it; this store further requires `commit_success.txt`, so a directory that was not made by a
finished orbax save is never restored. Saves here are synchronous (async checkpointing is off and `save` waits), so a
`kill -9` after `save` returns cannot lose that step, and one during `save` leaves only a temporary directory, which
the next `CheckpointStore` on the directory deletes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

logger = logging.getLogger(__name__)

# Meta keys this module writes itself; a caller's meta may not use them.
RESERVED_META_KEYS = ("step", "wall_time", "versions", "fingerprint", "structure", "hashes")

# Written once per run directory, so that a directory is claimed by its first save even before any step is complete.
_RUN_FILE = "rmas_checkpoint_run.json"
_ITEMS = ("links", "opt_state", "meta")
_VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint")
# Damaged steps that a resuming run moves aside get this prefix: not a step name to orbax, so never listed again.
DAMAGED_PREFIX = "damaged-"


class CheckpointMismatchError(ValueError):
  """A checkpoint directory or step belongs to a different run or link design than the caller's."""


class CheckpointDamagedError(ValueError):
  """A checkpoint's files cannot be read, or what they hold differs from what was written.

  Attributes:
    step: The damaged step (None when the error is about the whole directory).
    reason: What is wrong, without the directory and step.
  """

  def __init__(self, message: str, *, step: int | None = None, reason: str = ""):
    super().__init__(message)
    self.step = step
    self.reason = reason or message


def fingerprint_of(payload: Any) -> str:
  """A short stable hash of a JSON-able value (dicts, lists, numbers, strings, `ConfigDict`s).

  Callers pass the config fields that decide the link design (models, pattern, link sizes), so that a run directory
  refuses checkpoints of a different design while harmless changes (learning rate, logging) keep resuming.

  Args:
    payload: The value to hash; dict keys are sorted first, so key order does not matter.

  Returns:
    16 hex digits of the SHA-256 of the canonical JSON of `payload`.
  """
  text = json.dumps(_jsonable(payload), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


class CheckpointStore:
  """Saves and restores `(links, opt_state, meta)` checkpoints in one run directory.

  Usable as a context manager; `close()` waits for orbax and releases it.

  Args:
    directory: The run's checkpoint directory; created if missing.
    fingerprint: The run's design fingerprint (see `fingerprint_of`). Opening a directory whose checkpoints carry a
      different fingerprint raises `CheckpointMismatchError` instead of mixing two runs.
    keep: How many of the newest checkpoints to keep; older ones are deleted after each save.

  Raises:
    CheckpointMismatchError: `directory` holds checkpoints made with a different fingerprint.
  """

  def __init__(
    self, directory: str | os.PathLike, *, fingerprint: str, keep: int = 3, fields: Mapping[str, Any] | None = None
  ):
    if keep < 1:
      raise ValueError(f"keep: {keep}; expected >= 1")
    if not fingerprint:
      raise ValueError("fingerprint: empty; expected e.g. fingerprint_of(<the config's link-design fields>)")
    self.directory = os.path.abspath(os.fspath(directory))
    self.fingerprint = fingerprint
    self.fields = None if fields is None else _jsonable(dict(fields))
    os.makedirs(self.directory, exist_ok=True)
    self._remove_unfinished_saves()
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      create=True,
      # Synchronous: a save is on disk, renamed into place, when `save` returns, and no background thread outlives
      # the store. Link checkpoints are small, so the training loop loses little by waiting.
      enable_async_checkpointing=False,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)
    self._closed = False
    try:
      self._check_run_fingerprint()
    except BaseException:
      self.close()
      raise

  # Lifecycle.

  def close(self) -> None:
    """Waits for orbax to finish and releases it; further calls do nothing."""
    if not self._closed:
      self._closed = True
      self._manager.wait_until_finished()
      self._manager.close()

  def __enter__(self) -> CheckpointStore:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()

  # Queries.

  def steps(self) -> list[int]:
    """The complete checkpoints' steps, ascending."""
    return sorted(s for s in self._manager.all_steps() if self._is_committed(s))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None when there is none."""
    steps = self.steps()
    return steps[-1] if steps else None

  # Save and restore.

  def save(self, step: int, links: Any, opt_state: Any, meta: Mapping[str, Any] | None = None) -> bool:
    """Writes one checkpoint and returns once it is complete on disk.

    Nothing is written, and False is returned with a logged warning, when a floating-point leaf of `links` or
    `opt_state` holds a NaN or an infinity, or when `step` is not newer than the latest checkpoint.

    Args:
      step: The training step the state belongs to.
      links: The link variables: an `nnx.State` or a nested dict of arrays.
      opt_state: The optax state pytree (or an `nnx.State`).
      meta: JSON-able values to keep with the checkpoint, e.g. `{"data_position": 1234, "config": config}`;
        `ConfigDict`s are stored as the JSON of `to_json_best_effort()`, numpy and jax scalars as numbers. It may not
        use the keys in `RESERVED_META_KEYS`.

    Returns:
      Whether a checkpoint was written.

    Raises:
      ValueError: `meta` uses a reserved key.
      TypeError: a `meta` value cannot be written as JSON.
    """
    self._check_open()
    step = int(step)
    links_tree, opt_tree = _pure(links), _pure(opt_state)
    bad = _first_non_finite({"links": links_tree, "opt_state": opt_tree})
    if bad is not None:
      logger.warning("%s: step %d not saved: %s holds NaN or inf", self.directory, step, bad)
      return False
    latest = self._manager.latest_step()
    if latest is not None and step <= latest:
      logger.warning("%s: step %d not saved: a checkpoint for step %d exists", self.directory, step, latest)
      return False
    record = self._meta_record(step, links_tree, opt_tree, meta or {})
    self._claim_directory()
    items = {"meta": ocp.args.JsonSave(record)}
    # Orbax refuses a tree without arrays (e.g. plain SGD's state); its leafless structure is in `record` instead.
    for name, tree in (("links", links_tree), ("opt_state", opt_tree)):
      if jax.tree.leaves(tree):
        items[name] = ocp.args.StandardSave(tree)
    saved = self._manager.save(
      step,
      args=ocp.args.Composite(**items),
      force=True,  # the step checks above are this store's save policy; orbax's interval policy must not skip it
    )
    self._manager.wait_until_finished()
    return bool(saved)

  def restore(
    self, step: int | None = None, *, links_template: Any, opt_state_template: Any
  ) -> tuple[Any, Any, dict[str, Any]]:
    """Reads one checkpoint into the structure, dtypes and shardings of the templates, and verifies it.

    Each leaf is read in the dtype it was saved in, checked against the SHA-256 written with it (checkpoints from
    before content hashes were written are checked for finiteness only) and for NaN and inf, then cast to the
    template's dtype.

    Args:
      step: The step to read; the latest complete one when None.
      links_template: The links as the caller holds them (an `nnx.State` or a dict), with concrete arrays or
        `jax.ShapeDtypeStruct` leaves (e.g. from `nnx.eval_shape`). Leaves without a sharding are placed on the
        first local device; give shardings for multi-device runs.
      opt_state_template: The optax state likewise, e.g. `optimizer.init(links)` or its `jax.eval_shape`.

    Returns:
      `(links, opt_state, meta)`: `links` and `opt_state` shaped like their templates, and `meta` as saved (the
      caller's keys plus `step`, `wall_time`, `versions` and `fingerprint`).

    Raises:
      FileNotFoundError: there is no complete checkpoint (for `step`).
      CheckpointMismatchError: the checkpoint's run fingerprint or tree structure differs from the caller's.
      CheckpointDamagedError: the checkpoint's files cannot be read, or a leaf differs from its content hash or is
        not finite.
    """
    self._check_open()
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"{self.directory}: no complete checkpoint to restore")
    elif int(step) not in self.steps():
      raise FileNotFoundError(f"{self.directory}: no complete checkpoint for step {step}; have {self.steps()}")
    step = int(step)
    try:
      meta = self._read_meta(step)
    except Exception as e:  # whatever orbax or json raise on a torn file, it is damage
      raise self._damaged(step, f"its meta cannot be read ({_first_line(e)})") from e
    if meta.get("fingerprint") != self.fingerprint:
      raise CheckpointMismatchError(
        f"{self.directory}: step {step} was made by a different run (fingerprint {meta.get('fingerprint')!r}, "
        f"this run's is {self.fingerprint!r})"
      )
    links_tree, opt_tree = _pure(links_template), _pure(opt_state_template)
    stored = meta.pop("structure", {})
    hashes = meta.pop("hashes", None)
    for item, tree in (("links", links_tree), ("opt_state", opt_tree)):
      problem = _structure_difference(stored.get(item, []), _describe(tree))
      if problem:
        raise CheckpointMismatchError(
          f"{self.directory}: step {step} was made with a different link structure ({item}: {problem}); "
          "restore it with the config that wrote it, or train into a new directory"
        )
    trees = {"links": links_tree, "opt_state": opt_tree}
    # Leafless trees were not written (see `save`); the template, already checked equal in structure, is the result.
    # Leaves are read in their saved dtypes, so that the bytes hashed are the bytes that were written.
    wanted = {
      name: ocp.args.StandardRestore(_abstract(tree, {p: d for p, _, d in stored.get(name, [])}))
      for name, tree in trees.items()
      if jax.tree.leaves(tree)
    }
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**wanted)) if wanted else {}
    except Exception as e:
      # The structure check above has passed, so a failure here is a file that is missing, torn or garbled.
      raise self._damaged(step, f"its files cannot be read ({_first_line(e)})") from e
    got = {name: restored[name] if name in wanted else tree for name, tree in trees.items()}
    problem = _verify({name: got[name] for name in wanted}, hashes)
    if problem:
      raise self._damaged(step, problem)
    got = {name: _cast_like(got[name], trees[name]) if name in wanted else got[name] for name in trees}
    return _like(links_template, got["links"]), _like(opt_state_template, got["opt_state"]), meta

  def restore_newest(
    self, *, links_template: Any, opt_state_template: Any, quarantine: bool = False
  ) -> tuple[int, Any, Any, dict[str, Any]] | None:
    """Restores the newest intact checkpoint, passing over damaged ones with one logged line.

    Args:
      links_template: As for `restore`.
      opt_state_template: As for `restore`, or a function of the step that returns it (the optimizer state's
        structure can depend on the training stage a step belongs to).
      quarantine: Move each damaged step aside (renamed `damaged-<step>`) so that the run can save that step
        again; for a resuming trainer. Readers (evaluation, `ask`) leave the directory as it is.

    Returns:
      `(step, links, opt_state, meta)`, or None when the directory holds no complete checkpoint.

    Raises:
      CheckpointDamagedError: there are checkpoints, and every one is damaged (one line naming each and why).
      CheckpointMismatchError: as for `restore`; a checkpoint of another design is not passed over.
    """
    self._check_open()
    damaged: list[CheckpointDamagedError] = []
    for step in reversed(self.steps()):
      template = opt_state_template(step) if callable(opt_state_template) else opt_state_template
      try:
        links, opt_state, meta = self.restore(step, links_template=links_template, opt_state_template=template)
      except CheckpointDamagedError as e:
        damaged.append(e)
        continue
      if damaged:
        logger.warning(
          "%s: %s; using step %d, the newest intact checkpoint%s",
          self.directory,
          "; ".join(f"step {e.step} is damaged: {e.reason}" for e in damaged),
          step,
          self._quarantine([e.step for e in damaged]) if quarantine else "",
        )
      return step, links, opt_state, meta
    if not damaged:
      return None
    raise CheckpointDamagedError(
      f"{self.directory}: no intact checkpoint ("
      + "; ".join(f"step {e.step}: {e.reason}" for e in damaged)
      + "); move the directory aside to start afresh",
      reason="every checkpoint is damaged",
    )

  # Internals.

  def _check_open(self) -> None:
    if self._closed:
      raise RuntimeError(f"{self.directory}: CheckpointStore is closed")

  def _damaged(self, step: int, reason: str) -> CheckpointDamagedError:
    return CheckpointDamagedError(f"{self.directory}: step {step} is damaged: {reason}", step=step, reason=reason)

  def _quarantine(self, steps: list[int]) -> str:
    """Renames damaged step directories out of orbax's sight; returns the note for the log line."""
    moved = []
    if jax.process_index() == 0:
      for step in steps:
        target = os.path.join(self.directory, f"{DAMAGED_PREFIX}{step}")
        n = 1
        while os.path.exists(target):
          n += 1
          target = os.path.join(self.directory, f"{DAMAGED_PREFIX}{step}.{n}")
        os.rename(os.path.join(self.directory, str(step)), target)
        moved.append(os.path.basename(target))
    _sync("rmas_checkpoint_quarantine")
    self._manager.reload()
    return f" (moved aside as {', '.join(moved)})" if moved else ""

  def _is_committed(self, step: int) -> bool:
    return os.path.isfile(os.path.join(self.directory, str(step), ocp.path.atomicity.COMMIT_SUCCESS_FILE))

  def _remove_unfinished_saves(self) -> None:
    """Deletes the temporary directories of saves that were killed mid-way.

    Orbax never lists them as steps, so this is housekeeping: done here, synchronously, rather than with orbax's
    `cleanup_tmp_directories`, which deletes in a background thread the store would then have to wait for.
    """
    if jax.process_index() != 0:
      return
    for name in sorted(os.listdir(self.directory)):
      path = os.path.join(self.directory, name)
      if os.path.isdir(path) and not os.path.islink(path) and ocp.path.step.is_path_temporary(path):
        logger.warning("%s: removing %s, left by a save that did not finish", self.directory, name)
        shutil.rmtree(path)

  def _check_run_fingerprint(self) -> None:
    run_file = os.path.join(self.directory, _RUN_FILE)
    stored, where, stored_fields = None, None, None
    if os.path.isfile(run_file):
      try:
        with open(run_file) as f:
          record = json.load(f)
        stored, stored_fields = record["fingerprint"], record.get("fields")
        where = _RUN_FILE
      except (OSError, ValueError, KeyError, TypeError) as e:
        # A torn run file must not lock the run out: the checkpoints carry the fingerprint too, and the next save
        # writes the file anew.
        logger.warning("%s: %s cannot be read (%s); using the checkpoints' fingerprints", self.directory, _RUN_FILE,
                       _first_line(e))  # fmt: skip
        if jax.process_index() == 0:
          os.remove(run_file)
    if where is None:
      for step in reversed(self.steps()):
        try:
          stored = self._read_meta(step).get("fingerprint")
        except Exception:  # a damaged step is reported when it is restored
          continue
        where = f"step {step}"
        break
      if where is None:
        return
    if stored == self.fingerprint and stored_fields is None and where == _RUN_FILE and self.fields is not None:
      self._write_run_file()  # an older run file: add the fields, so a later mismatch can be named
    if stored != self.fingerprint:
      differs = _field_difference(stored_fields, self.fields)
      what = differs or f"{where} has fingerprint {stored!r}, this run's is {self.fingerprint!r}"
      raise CheckpointMismatchError(
        f"{self.directory}: holds checkpoints of a different run ({what}); use the settings it was made with, or "
        f"a new directory"
      )

  def _claim_directory(self) -> None:
    if not os.path.isfile(os.path.join(self.directory, _RUN_FILE)):
      self._write_run_file()

  def _write_run_file(self) -> None:
    if jax.process_index() != 0:
      return
    run_file = os.path.join(self.directory, _RUN_FILE)
    tmp = f"{run_file}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
      record = {"fingerprint": self.fingerprint, "created": time.time()}
      if self.fields is not None:  # what the fingerprint hashes, so a mismatch can be named
        record["fields"] = self.fields
      json.dump(record, f)
    os.replace(tmp, run_file)  # atomic, so a reader never sees half a file

  def _read_meta(self, step: int) -> dict[str, Any]:
    return dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

  def _meta_record(self, step: int, links_tree: Any, opt_tree: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    clash = sorted(set(meta) & set(RESERVED_META_KEYS))
    if clash:
      raise ValueError(f"meta: keys {clash} are reserved for the checkpoint store")
    record = _jsonable(dict(meta))
    record.update(
      step=step,
      wall_time=time.time(),
      versions=_versions(),
      fingerprint=self.fingerprint,
      structure={"links": _describe(links_tree), "opt_state": _describe(opt_tree)},
      hashes={"links": _digests(links_tree), "opt_state": _digests(opt_tree)},
    )
    return record


def _pure(tree: Any) -> Any:
  """The tree with any `nnx.State` replaced by its pure dict of arrays."""
  return nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree


def _like(template: Any, restored: Any) -> Any:
  """`restored` in the container type of `template`: an `nnx.State` template gets a new `nnx.State`."""
  if not isinstance(template, nnx.State):
    return restored
  # A structural copy has fresh Variables, so filling it leaves the caller's template as it was.
  state = jax.tree.map(lambda x: x, template)
  nnx.replace_by_pure_dict(state, restored)
  return state


def _describe(tree: Any) -> list[list[Any]]:
  """`[path, shape, dtype]` of every leaf: what a template must match to restore a checkpoint."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [[jax.tree_util.keystr(path), list(np.shape(leaf)), str(_dtype(leaf))] for path, leaf in leaves]


def _structure_difference(stored: list[list[Any]], wanted: list[list[Any]]) -> str | None:
  """The first path or shape difference between two `_describe` lists, or None. Dtypes may differ: restore casts."""
  stored_shapes = {path: shape for path, shape, _ in stored}
  wanted_shapes = {path: shape for path, shape, _ in wanted}
  missing = [p for p in wanted_shapes if p not in stored_shapes]
  extra = [p for p in stored_shapes if p not in wanted_shapes]
  if missing or extra:
    parts = []
    if missing:
      parts.append(f"{len(missing)} template entries not in the checkpoint, e.g. {missing[0]}")
    if extra:
      parts.append(f"{len(extra)} checkpoint entries not in the template, e.g. {extra[0]}")
    return "; ".join(parts)
  for path, shape in wanted_shapes.items():
    if list(stored_shapes[path]) != list(shape):
      return f"{path} has shape {tuple(stored_shapes[path])} in the checkpoint, {tuple(shape)} in the template"
  return None


def _first_non_finite(tree: Any) -> str | None:
  """The path of the first floating-point leaf holding NaN or inf, or None."""
  leaves = [
    (path, leaf)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    if np.issubdtype(_dtype(leaf), np.inexact)
  ]
  if not leaves:
    return None
  # One program and one device-to-host transfer for the whole tree, not one per leaf: with sharded leaves each check
  # is a collective, and many small collective programs in flight at once can starve each other of threads on CPU.
  finite = jax.device_get(_all_finite([leaf for _, leaf in leaves]))
  for (path, _), ok in zip(leaves, finite, strict=True):
    if not ok:
      return jax.tree_util.keystr(path)
  return None


@jax.jit
def _all_finite(leaves: list) -> list:
  return [jax.numpy.isfinite(leaf).all() for leaf in leaves]


def _dtype(leaf: Any) -> np.dtype:
  """The dtype of an array, `jax.ShapeDtypeStruct` or Python scalar leaf."""
  return np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype


def _abstract(tree: Any, dtypes: Mapping[str, str] | None = None) -> Any:
  """`jax.ShapeDtypeStruct` leaves carrying a sharding, as orbax's `StandardRestore` wants them.

  Args:
    tree: The template.
    dtypes: Dtype names by leaf path (`keystr`) to read leaves in instead of the template's.
  """
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  dtypes = dtypes or {}

  def one(path: Any, leaf: Any) -> jax.ShapeDtypeStruct:
    sharding = getattr(leaf, "sharding", None)
    if not isinstance(sharding, jax.sharding.Sharding):
      sharding = default
    dtype = dtypes.get(jax.tree_util.keystr(path))
    return jax.ShapeDtypeStruct(np.shape(leaf), np.dtype(dtype) if dtype else _dtype(leaf), sharding=sharding)

  return jax.tree_util.tree_map_with_path(one, tree)


def _cast_like(restored: Any, template: Any) -> Any:
  """`restored` with each leaf in its template leaf's dtype (a checkpoint may be read into another precision)."""
  return jax.tree.map(lambda x, t: x if _dtype(x) == _dtype(t) else x.astype(_dtype(t)), restored, template)


def _host_value(leaf: Any) -> np.ndarray:
  """A leaf's whole value on this host, whatever its sharding (a collective when it spans processes)."""
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    if leaf.sharding.is_fully_replicated:
      return np.asarray(leaf.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
  return np.asarray(jax.device_get(leaf))


def _digests(tree: Any) -> dict[str, str]:
  """The SHA-256 of each leaf's dtype, shape and bytes, by path (`keystr`); independent of sharding and mesh."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    value = np.ascontiguousarray(_host_value(leaf))
    digest = hashlib.sha256(f"{value.dtype}{value.shape}".encode())
    digest.update(value.tobytes())
    out[jax.tree_util.keystr(path)] = digest.hexdigest()
  return out


def _verify(trees: Mapping[str, Any], hashes: Mapping[str, Mapping[str, str]] | None) -> str | None:
  """What is wrong with restored `trees` against the `hashes` saved with them, or None when they match."""
  if hashes is not None:
    for name, tree in trees.items():
      want = hashes.get(name, {}) if isinstance(hashes, Mapping) else {}
      for path, got in _digests(tree).items():
        if want.get(path) != got:
          return f"{name}{path} does not match the content hash written with it"
  bad = _first_non_finite(dict(trees))
  if bad is not None:
    return f"{bad} holds NaN or inf, which no save writes"
  return None


def _field_difference(stored: Any, wanted: Any, prefix: str = "") -> str | None:
  """`key: A there, B now` for the first fields (at most three) in which two fingerprint payloads differ."""
  if not isinstance(stored, dict) or not isinstance(wanted, dict):
    return None
  parts = []
  for key in sorted(set(stored) | set(wanted)):
    a, b = stored.get(key, "(unset)"), wanted.get(key, "(unset)")
    if a == b:
      continue
    inner = _field_difference(a, b, f"{prefix}{key}.") if isinstance(a, dict) and isinstance(b, dict) else None
    parts.append(inner or f"{prefix}{key}: {json.dumps(a)} there, {json.dumps(b)} now")
  return "; ".join(parts[:3]) or None


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


def _sync(name: str) -> None:
  """A barrier across processes (nothing to do in a single-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _jsonable(value: Any) -> Any:
  """`value` as plain JSON types, so that what `restore` returns equals what was saved."""

  def default(o: Any) -> Any:
    if hasattr(o, "to_json_best_effort"):  # ml_collections ConfigDict / FrozenConfigDict
      return json.loads(o.to_json_best_effort())
    if isinstance(o, np.generic | np.ndarray | jax.Array):
      return np.asarray(o).tolist()
    if isinstance(o, Mapping):
      return dict(o)
    if isinstance(o, tuple | set | frozenset):
      return list(o)
    raise TypeError(f"meta: {type(o).__name__} value {o!r} cannot be written as JSON")

  return json.loads(json.dumps(value, default=default))


def _versions() -> dict[str, str]:
  versions = {}
  for package in _VERSIONED_PACKAGES:
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = "absent"
  return versions
