"""Putting weights, links, optimizer state and batches onto a mesh.

Loaded weights go from host memory straight to their shards: `jax.make_array_from_callback` asks for one
device's slice at a time, so no device ever holds a whole matrix it does not own, and in a multi-host run each
process transfers only what its own devices hold. Randomly initialised models (the tiny test agents) are drawn on
the host and sent the same way.

Batches are sharded by process: each process builds only the rows its devices hold (`local_rows`), and
`global_batch` assembles the global array from every process's rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rmas_jax.sharding.rules import backbone_axes, link_axes, path_keys, spec_for, system_axes, tree_shardings


def current_mesh() -> Mesh | None:
  """The mesh set with `jax.set_mesh` (see `rmas_jax.sharding.use_mesh`), or None when there is none or it has one
  device: loaders then place weights exactly as without this package."""
  mesh = jax.sharding.get_mesh()
  return None if mesh.empty or mesh.size == 1 else mesh


def to_devices(tree: Any, axes_fn=backbone_axes) -> Any:
  """Host arrays (a loaded model's pure dict) to device arrays: shard by shard under a mesh, else `jnp.asarray`."""
  mesh = current_mesh()
  if mesh is None:
    return jax.tree.map(jnp.asarray, tree)
  return place_host_tree(tree, mesh, axes_fn)


def init_on_mesh(make: Callable[[], nnx.Module]) -> nnx.Module:
  """`make()`, laid out on the mesh when one is set (see `init_sharded`)."""
  mesh = current_mesh()
  return make() if mesh is None else init_sharded(make, mesh)


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding that puts a whole copy on every device of `mesh`."""
  return NamedSharding(mesh, PartitionSpec())


def put_host_array(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A host array as a global array laid out by `sharding`, each device receiving only its own slice."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def place_host_tree(tree: Any, mesh: Mesh, axes_fn=backbone_axes) -> Any:
  """A tree of host arrays (e.g. a model's pure-dict weights) placed shard by shard on `mesh`."""
  return jax.tree.map(put_host_array, tree, tree_shardings(tree, mesh, axes_fn))


def init_sharded(make: Callable[[], nnx.Module], mesh: Mesh, axes_fn=backbone_axes) -> nnx.Module:
  """`make()` (a randomly initialised model) laid out on `mesh`.

  The weights are drawn on the host's CPU device, then sent shard by shard like loaded weights: the values are
  bit-identical to an unsharded `make()` on CPU (XLA fuses a jitted initialiser differently, which moves the last
  bit), and no accelerator ever holds a whole matrix it does not own.
  """
  with jax.default_device(jax.local_devices(backend="cpu")[0]):
    model = make()
  graphdef, state = nnx.split(model)
  host = jax.tree.map(np.asarray, nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, place_host_tree(host, mesh, axes_fn))
  return nnx.merge(graphdef, state)


def place_state(state: Any, mesh: Mesh, axes_fn=system_axes) -> Any:
  """Existing arrays (an `nnx.State` or any pytree) moved to the layouts their paths give on `mesh`."""
  return jax.device_put(state, tree_shardings(state, mesh, axes_fn))


def place_links(system: nnx.Module, mesh: Mesh) -> None:
  """Moves a system's freshly initialised links (small, made on one device) to their layout on `mesh`."""
  from rmas_jax.links.recursive_link import LinkParam

  nnx.update(system, place_state(nnx.state(system, LinkParam), mesh, system_axes))


def opt_state_shardings(optimizer, links: Any, mesh: Mesh) -> Any:
  """Shardings of `optimizer.init(links)`: every moment is shaped like a link leaf, so link rules apply."""
  return tree_shardings(jax.eval_shape(optimizer.init, links), mesh, link_axes)


def init_opt_state(optimizer, links: Any, mesh: Mesh | None) -> Any:
  """`optimizer.init(links)`, laid out on `mesh` (the plain eager call without a mesh)."""
  if mesh is None:
    return optimizer.init(links)
  return jax.jit(optimizer.init, out_shardings=opt_state_shardings(optimizer, links, mesh))(links)


# ----- batches -----


def batch_sharding(mesh: Mesh, shape: tuple[int, ...], axis: int = 0) -> NamedSharding:
  """The layout of a batch array whose examples run along `axis`: that axis over the rules' `batch` axes."""
  logical = [None] * len(shape)
  logical[axis] = "batch"
  return NamedSharding(mesh, spec_for(logical, shape, dict(mesh.shape)))


def local_rows(mesh: Mesh, batch: int) -> tuple[int, int]:
  """The rows `[lo, hi)` of a global batch of `batch` examples that this process's devices hold.

  Every process holds all rows when the batch axes do not span processes (or do not divide the batch).

  Raises:
    ValueError: this process's rows are not contiguous (a device order this helper does not handle).
  """
  index_map = batch_sharding(mesh, (batch,)).addressable_devices_indices_map((batch,))
  spans = {(s[0].start or 0, batch if s[0].stop is None else s[0].stop) for s in index_map.values()}
  lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
  covered = set()
  for a, b in spans:
    covered.update(range(a, b))
  if covered != set(range(lo, hi)):
    raise ValueError(f"process {jax.process_index()} holds rows {sorted(spans)} of the batch: not one block")
  return lo, hi


def outer_batch_axis(path) -> int:
  """Batch axis of an `OuterBatch` leaf: 1 under `middle` (stacked `[rounds, B, ...]`), else 0."""
  return 1 if "middle" in path_keys(path) else 0


def global_batch(local: Any, mesh: Mesh, batch: int, lo: int, axis_fn: Callable[[Any], int] = lambda path: 0) -> Any:
  """Global batch arrays on `mesh` from this process's rows `[lo, lo + local rows)` of a `batch`-row batch.

  Args:
    local: a pytree of arrays holding this process's rows (see `local_rows`) along each leaf's batch axis.
    mesh: the mesh.
    batch: the global number of rows.
    lo: the first global row `local` holds.
    axis_fn: a leaf's batch axis from its path (`outer_batch_axis` for an `OuterBatch`).
  """

  def one(path, x):
    x = np.asarray(x)
    axis = axis_fn(path)
    shape = x.shape[:axis] + (batch,) + x.shape[axis + 1 :]

    def rows(index):
      index = list(index)
      s = index[axis]
      index[axis] = slice((s.start or 0) - lo, (batch if s.stop is None else s.stop) - lo)
      return x[tuple(index)]

    return jax.make_array_from_callback(shape, batch_sharding(mesh, shape, axis), rows)

  return jax.tree_util.tree_map_with_path(one, local)


def to_host(x: jax.Array) -> np.ndarray:
  """A (possibly multi-host) array as a numpy array on this host; gathers across processes when needed."""
  if getattr(x, "is_fully_addressable", True) or x.is_fully_replicated:
    return np.asarray(x)
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))
