"""The device mesh a run uses, from `config.mesh`, and multi-host start-up.

`config.mesh` (see `configs/base.py`):

* `data`, `fsdp`, `tensor`: mesh axis sizes. 1/1/1 (the default) means no mesh: one device, exactly the code path
  of a run without this package. One axis may be -1: it takes the devices the others leave.
* `distributed`: `auto` (start multi-host JAX when the environment names a coordinator or a managed cluster with
  several processes), `on` (always: Cloud TPU pod slices, Slurm and Open MPI are detected by JAX itself) or `off`.
* `coordinator_address`, `num_processes`, `process_id`: explicit multi-host settings (empty / 0 / -1: from the
  environment, `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`, or JAX's cluster detection).

The mesh's axis types are explicit `Auto`: XLA's sharding propagation fills in what the rules leave open, as in
MaxText's default; `jax.make_mesh` without axis types would make every axis `Explicit` on jax 0.10.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from typing import Any

import jax
from jax.sharding import AxisType, Mesh

from rmas_jax.sharding.rules import AXES

log = logging.getLogger(__name__)
DISTRIBUTED_MODES = ("auto", "on", "off")
# Environment variables of launchers that start one process per host (or per device) with several processes.
_CLUSTER_SIZE_VARS = ("JAX_NUM_PROCESSES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def mesh_settings(config) -> dict[str, Any]:
  """`config.mesh` as a plain dict with defaults filled in (configs older than the mesh section have none)."""
  section = config.get("mesh") if config is not None else None
  section = dict(section) if section else {}
  out = dict(data=1, fsdp=1, tensor=1, distributed="auto", coordinator_address="", num_processes=0, process_id=-1)
  out.update(section)
  return out


def check_mesh_settings(config) -> None:
  """Raises ValueError naming the first bad `config.mesh` field."""
  m = mesh_settings(config)
  sizes = [m[a] for a in AXES]
  for axis, size in zip(AXES, sizes, strict=True):
    if not isinstance(size, int) or (size < 1 and size != -1):
      raise ValueError(f"config.mesh.{axis}: {size!r}; expected a positive size or -1 (the remaining devices)")
  if sizes.count(-1) > 1:
    raise ValueError("config.mesh: at most one of data, fsdp, tensor may be -1")
  if m["distributed"] not in DISTRIBUTED_MODES:
    raise ValueError(f"config.mesh.distributed: {m['distributed']!r}; expected one of {DISTRIBUTED_MODES}")


def parse_mesh(text: str) -> tuple[int, int, int]:
  """`DxFxT` (e.g. `2x4x1`) -> (data, fsdp, tensor)."""
  parts = text.lower().split("x")
  try:
    sizes = tuple(int(p) for p in parts)
  except ValueError:
    sizes = ()
  if len(sizes) != 3 or min(sizes) < 1:
    raise ValueError(f"mesh {text!r}: expected DATAxFSDPxTENSOR with positive sizes, e.g. 2x4x1")
  return sizes  # type: ignore[return-value]


def _wants_distributed(m: dict[str, Any]) -> bool:
  if m["distributed"] == "off":
    return False
  if m["distributed"] == "on" or m["coordinator_address"] or m["num_processes"] > 1:
    return True
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return True
  return any(int(os.environ.get(v, "1") or 1) > 1 for v in _CLUSTER_SIZE_VARS)


def maybe_initialize_distributed(config) -> bool:
  """Starts multi-host JAX (`jax.distributed.initialize`) when the config or the environment asks for it.

  Must run before anything else touches JAX's backends. On CPU, cross-process collectives go through gloo.

  Returns:
    Whether this process is now part of a multi-process run.
  """
  m = mesh_settings(config)
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  if not _wants_distributed(m):
    return False
  kwargs: dict[str, Any] = {}
  address = m["coordinator_address"] or os.environ.get("JAX_COORDINATOR_ADDRESS")
  count = m["num_processes"] or int(os.environ.get("JAX_NUM_PROCESSES", "0") or 0)
  index = m["process_id"] if m["process_id"] >= 0 else int(os.environ.get("JAX_PROCESS_ID", "-1") or -1)
  if address:
    kwargs["coordinator_address"] = address
  if count:
    kwargs["num_processes"] = count
  if index >= 0:
    kwargs["process_id"] = index
  # Only the CPU client reads this; without it CPU devices of different processes cannot exchange data.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  log.info("process %d of %d, %d local devices", jax.process_index(), jax.process_count(), jax.local_device_count())
  return jax.process_count() > 1


def mesh_shape(config, device_count: int | None = None) -> tuple[int, int, int]:
  """(data, fsdp, tensor) with a -1 resolved against `device_count` (default: all devices)."""
  check_mesh_settings(config)
  m = mesh_settings(config)
  sizes = [m[a] for a in AXES]
  n = jax.device_count() if device_count is None else device_count
  if -1 in sizes:
    rest = math.prod(s for s in sizes if s != -1)
    if n % rest:
      raise ValueError(f"config.mesh: {device_count} devices do not split into {sizes} (the fixed axes take {rest})")
    sizes[sizes.index(-1)] = n // rest
  return tuple(sizes)  # type: ignore[return-value]


def make_mesh(shape: tuple[int, int, int], devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh with `Auto` axes over `devices` (default: the first `prod(shape)` devices).

  Raises:
    ValueError: the mesh needs more devices than there are, or leaves some out in a multi-process run (every
      process must take part in every computation).
  """
  size = math.prod(shape)
  devices = list(jax.devices() if devices is None else devices)
  if size > len(devices):
    raise ValueError(f"mesh {'x'.join(map(str, shape))} needs {size} devices; {len(devices)} are available")
  if size < len(devices):
    if jax.process_count() > 1:
      raise ValueError(f"mesh {'x'.join(map(str, shape))} uses {size} of {len(devices)} devices; a multi-process "
                       "run must use all of them")  # fmt: skip
    log.warning("mesh %s uses %d of %d devices", "x".join(map(str, shape)), size, len(devices))
    devices = devices[:size]
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def mesh_from_config(config) -> Mesh | None:
  """The run's mesh, or None for a 1/1/1 mesh on one process (the plain single-device path)."""
  shape = mesh_shape(config)
  if math.prod(shape) == 1 and jax.process_count() == 1:
    return None
  return make_mesh(shape)


def activate(config) -> Mesh | None:
  """What an entry point calls first: starts multi-host JAX if asked, builds `config.mesh`'s mesh and sets it for
  the process (`jax.set_mesh`), so loading, training, evaluation and asking all run sharded. Returns the mesh (None:
  one device, nothing set)."""
  maybe_initialize_distributed(config)
  mesh = mesh_from_config(config)
  if mesh is not None:
    jax.set_mesh(mesh)
    log.info("%s", describe(mesh))
  return mesh


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None) -> Iterator[Mesh | None]:
  """`jax.set_mesh(mesh)` for the block (activation constraints read it while tracing); nothing for None."""
  if mesh is None:
    yield None
    return
  with jax.set_mesh(mesh):
    yield mesh


def single_process_only(what: str) -> None:
  """Raises ValueError in a multi-process run: `what` (evaluation, asking) reads its results back on one host."""
  if jax.process_count() > 1:
    raise ValueError(f"{what} runs in one process (on any number of its devices); multi-host runs are for train.py")


def is_writer() -> bool:
  """Whether this process writes logs, metrics and reports (process 0; every process in a single-process run)."""
  return jax.process_index() == 0


def describe(mesh: Mesh | None) -> str:
  """One line naming the mesh, e.g. `mesh data=2 fsdp=2 tensor=2 (8 devices, 1 process)`."""
  if mesh is None:
    return f"no mesh (1 device: {jax.devices()[0].platform})"
  axes = " ".join(f"{k}={v}" for k, v in mesh.shape.items())
  return f"mesh {axes} ({mesh.size} devices, {jax.process_count()} process{'es' * (jax.process_count() > 1)})"
