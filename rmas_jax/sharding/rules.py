"""Logical axis names, the one table mapping them to mesh axes, and the parameter paths that carry them.

Model code never names mesh axes. A backbone weight's logical axes follow from its path in the NNX state (our
modules carry HF's names: `q_proj/weight` is `[heads, embed]`), activations and caches name theirs where they are
made, and `RULES` turns logical names into mesh axes (MaxText's `logical_axis_rules`, in small):

* `batch` over (`data`, `fsdp`): data parallel, and FSDP's batch split;
* `embed` over `fsdp`: every backbone matrix is split along its model width (ZeRO-3 style: XLA gathers a layer's
  weights where they are used);
* `heads`, `kv_heads`, `mlp`, `vocab` over `tensor`: Megatron-style tensor parallelism of attention, MLP and
  the vocabulary;
* links (`link_in`, `link_out`) replicated: they are small, and replicated links need no gather in the step.

A mesh axis that does not divide a dimension is dropped for that array (the longest dividing prefix of the rule's
axes is kept), so one table serves every model size and mesh shape: a tiny model on a big mesh just replicates more.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

AXES: tuple[str, str, str] = ("data", "fsdp", "tensor")

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]
RULES: Rules = (
  ("batch", ("data", "fsdp")),
  ("length", None),
  ("act_embed", None),
  ("embed", "fsdp"),
  ("vocab", "tensor"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("mlp", "tensor"),
  ("norm", None),
  ("layers", None),
  ("conv", None),
  ("cache_batch", ("data", "fsdp")),
  ("cache_heads", "tensor"),
  ("cache_length", None),
  ("head_dim", None),
  ("link_in", None),
  ("link_out", None),
)

# Logical axes of activations and caches (where they are made, see `constrain`).
ACTIVATION = ("batch", "length", "act_embed")  # [B, T, D] residual stream
CACHE_KV = ("layers", "cache_batch", "cache_heads", "cache_length", "head_dim")  # [L, B, K, S, hd]
CACHE_SLOTS = ("cache_batch", "cache_length")  # [B, S]
CACHE_ROWS = ("cache_batch",)  # [B]

_rules: contextvars.ContextVar[Rules] = contextvars.ContextVar("rmas_sharding_rules", default=RULES)


def current_rules() -> Rules:
  """The rules in effect (`RULES` unless inside `use_rules`)."""
  return _rules.get()


@contextlib.contextmanager
def use_rules(rules: Rules) -> Iterator[None]:
  """Makes `rules` the table `constrain` and the placement helpers use, inside the block."""
  token = _rules.set(tuple(rules))
  try:
    yield
  finally:
    _rules.reset(token)


def with_rule(rules: Rules, name: str, axes: str | tuple[str, ...] | None) -> Rules:
  """`rules` with the entry of logical `name` replaced (e.g. links sharded over `fsdp`)."""
  return tuple((n, axes if n == name else a) for n, a in rules)


def spec_for(
  logical: Sequence[str | None], shape: Sequence[int], axis_sizes: Mapping[str, int], rules: Rules | None = None
) -> PartitionSpec:
  """The `PartitionSpec` of an array with these logical axes on a mesh with these axis sizes.

  Each dimension takes its rule's mesh axes minus those an earlier dimension already took, minus axes the mesh
  lacks or has at size 1, then the longest prefix whose size product divides the dimension (jax places only
  evenly divided shards).

  Args:
    logical: one logical name (or None, never sharded) per dimension.
    shape: the array's shape.
    axis_sizes: mesh axis name -> size (`mesh.shape`); the mesh need not exist (the planner passes sizes only).
    rules: the table; `current_rules()` when None.
  """
  if len(logical) != len(shape):
    raise ValueError(f"logical axes {tuple(logical)} do not match shape {tuple(shape)}")
  table = dict(current_rules() if rules is None else rules)
  used: set[str] = set()
  out: list[str | tuple[str, ...] | None] = []
  for name, dim in zip(logical, shape, strict=True):
    target = table.get(name) if name is not None else None
    candidates = (target,) if isinstance(target, str) else tuple(target or ())
    candidates = tuple(a for a in candidates if a not in used and axis_sizes.get(a, 1) > 1)
    while candidates and dim % math.prod(axis_sizes[a] for a in candidates):
      candidates = candidates[:-1]
    used.update(candidates)
    out.append(None if not candidates else candidates[0] if len(candidates) == 1 else candidates)
  while out and out[-1] is None:  # P('fsdp', None) and P('fsdp') are the same; the short form reads better
    out.pop()
  return PartitionSpec(*out)


def shard_shape(shape: Sequence[int], spec: PartitionSpec, axis_sizes: Mapping[str, int]) -> tuple[int, ...]:
  """The per-device shape of an array of `shape` laid out by `spec` (dimensions `spec_for` keeps divide evenly)."""
  dims = list(shape)
  for i, entry in enumerate(spec):
    axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
    dims[i] //= math.prod(axis_sizes[a] for a in axes) if axes else 1
  return tuple(dims)


# ----- parameter paths -> logical axes -----

# (module name, leaf name) -> logical axes of the unstacked leaf. Projection weights are `[out, in]` (HF's layout).
_BACKBONE: dict[tuple[str, str], tuple[str | None, ...]] = {
  ("embed_tokens", "embedding"): ("vocab", "embed"),
  ("q_proj", "weight"): ("heads", "embed"),
  ("q_proj", "bias"): ("heads",),
  ("k_proj", "weight"): ("kv_heads", "embed"),
  ("k_proj", "bias"): ("kv_heads",),
  ("v_proj", "weight"): ("kv_heads", "embed"),
  ("v_proj", "bias"): ("kv_heads",),
  ("o_proj", "weight"): ("embed", "heads"),
  ("o_proj", "bias"): ("norm",),
  ("gate_proj", "weight"): ("mlp", "embed"),
  ("gate_proj", "bias"): ("mlp",),
  ("up_proj", "weight"): ("mlp", "embed"),
  ("up_proj", "bias"): ("mlp",),
  ("down_proj", "weight"): ("embed", "mlp"),
  ("down_proj", "bias"): ("norm",),
  # Gated DeltaNet (Qwen3.5 / Qwen3-Next names): input projections split their heads, the output one mirrors.
  ("in_proj_qkvz", "weight"): ("heads", "embed"),
  ("in_proj_ba", "weight"): ("heads", "embed"),
  ("in_proj_qkv", "weight"): ("heads", "embed"),
  ("in_proj_z", "weight"): ("heads", "embed"),
  ("in_proj_a", "weight"): ("heads", "embed"),
  ("in_proj_b", "weight"): ("heads", "embed"),
  ("out_proj", "weight"): ("embed", "heads"),
}


def path_keys(path: Sequence[Any]) -> tuple[str | int, ...]:
  """Plain keys of a jax key path (DictKey, GetAttrKey, SequenceKey) or of a tuple of strings/ints."""
  out = []
  for p in path:
    if isinstance(p, jax.tree_util.GetAttrKey) and p.name == "value":  # an nnx.Variable's payload, not a module
      continue
    for attr in ("key", "name", "idx"):
      if hasattr(p, attr):
        p = getattr(p, attr)
        break
    out.append(p)
  return tuple(out)


def backbone_axes(path: Sequence[Any], ndim: int) -> tuple[str | None, ...]:
  """Logical axes of one leaf of a `CausalLM` state, from its path (relative to the model).

  A leaf under `layers/` whose next key is not a layer index is stacked: its leading axis is `layers` (so is every
  leaf under Qwen3.5's scanned `cycles/`). Leaves the table does not know (norm weights, convolutions, scalars of a
  new family) get `norm`/None axes, i.e. replicated.
  """
  keys = path_keys(path)
  after = keys.index("layers") + 1 if "layers" in keys else None
  stacked = "cycles" in keys or (after is not None and after < len(keys) and not isinstance(keys[after], int))
  names = [k for k in keys if isinstance(k, str)]
  inner = ndim - int(stacked)
  if names and names[-1] == "lm_head":
    axes: tuple[str | None, ...] = ("vocab", "embed")
  elif len(names) >= 2 and (names[-2], names[-1]) in _BACKBONE:
    axes = _BACKBONE[(names[-2], names[-1])]
  elif inner == 1:
    axes = ("norm",)
  else:
    axes = (None,) * inner
  if len(axes) != inner:  # a shape this table did not expect: replicate rather than guess
    axes = (None,) * inner
  return (("layers",) if stacked else ()) + axes


def link_axes(path: Sequence[Any], ndim: int) -> tuple[str | None, ...]:
  """Logical axes of a RecursiveLink leaf: kernels `[link_in, link_out]`, vectors `[link_out]`."""
  del path
  return ("link_in", "link_out") if ndim == 2 else ("link_out",) * ndim


def system_axes(path: Sequence[Any], ndim: int) -> tuple[str | None, ...]:
  """Logical axes of a leaf of a `System` state (`agents/<role>/backbone/...`, `agents/<role>/inner/...`,
  `outer/<edge>/...`) or of a bare `CausalLM` state."""
  keys = path_keys(path)
  if "backbone" in keys:
    return backbone_axes(path[keys.index("backbone") + 1 :], ndim)
  if "inner" in keys or (keys and keys[0] == "outer"):
    return link_axes(path, ndim)
  return backbone_axes(path, ndim)


def tree_specs(tree: Any, axis_sizes: Mapping[str, int], axes_fn=system_axes, rules: Rules | None = None) -> Any:
  """A `PartitionSpec` per leaf of `tree` (arrays or shape structs), from each leaf's path."""
  return jax.tree_util.tree_map_with_path(
    lambda path, leaf: spec_for(axes_fn(path, len(leaf.shape)), leaf.shape, axis_sizes, rules), tree
  )


def tree_shardings(tree: Any, mesh: jax.sharding.Mesh, axes_fn=system_axes, rules: Rules | None = None) -> Any:
  """A `NamedSharding` on `mesh` per leaf of `tree`."""
  specs = tree_specs(tree, dict(mesh.shape), axes_fn, rules)
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def constrain(x: jax.Array, logical: Sequence[str | None]) -> jax.Array:
  """`x` constrained to the layout its logical axes give under the mesh set with `jax.set_mesh`; unchanged when no
  mesh is set, so single-device code paths compile exactly as before."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or math.prod(mesh.shape.values()) == 1:
    return x
  return jax.lax.with_sharding_constraint(x, spec_for(logical, x.shape, dict(mesh.shape)))
