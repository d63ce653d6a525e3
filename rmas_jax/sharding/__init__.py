"""Scale-out on JAX's own machinery: a (data, fsdp, tensor) mesh from the config, logical axis rules for backbones,
links, activations and KV caches, sharded placement at load time, and multi-host start-up.

See `mesh.py` (the mesh and `jax.distributed`), `rules.py` (logical names -> `PartitionSpec`) and `placement.py`
(weights, links, optimizer state and batches onto the mesh).
"""

from rmas_jax.sharding.mesh import (
  describe,
  is_writer,
  maybe_initialize_distributed,
  mesh_from_config,
  mesh_shape,
  parse_mesh,
  use_mesh,
)
from rmas_jax.sharding.rules import RULES, constrain, spec_for, tree_shardings, tree_specs, use_rules

__all__ = [
  "RULES",
  "constrain",
  "describe",
  "is_writer",
  "maybe_initialize_distributed",
  "mesh_from_config",
  "mesh_shape",
  "parse_mesh",
  "spec_for",
  "tree_shardings",
  "tree_specs",
  "use_mesh",
  "use_rules",
]
