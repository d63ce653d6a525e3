"""Per-device memory of a system on a mesh, before paying for the devices:
`python -m rmas_jax.plan --config configs/<style>.py[:<preset>] --mesh DxFxT [--mesh ...]`, or `--table1` for every
system of the paper's Table 1.

Every shape comes from `jax.eval_shape` (backbones, links, optimizer state, caches: nothing is allocated and no
weights are read) and every layout from the rules of `rmas_jax.sharding`, evaluated for the mesh's axis sizes only,
so a 64-device plan runs on a laptop. The columns, per device:

* params: backbone weights (each distinct model once: roles naming one model share its weights), in `--dtype`;
* links: RecursiveLink weights (fp32, replicated by the rules);
* optimizer: the links' gradients plus AdamW moments of the larger link group (one group trains per stage);
* kv cache: the largest thinking agent's cache of one latent rollout at the training shapes (`train.batch_size`
  rows, `train.prompt_bucket + train.latent_steps - 1` slots; Qwen3.5 agents add their DeltaNet states);
* activations: an estimate for the outer training step with `train.remat`: the thinking agent being recomputed
  keeps its layer-boundary residuals plus one layer's internals; the decoder's answer pass keeps every layer's
  internals (attention probabilities in fp32, MLP activations; a Gated DeltaNet layer's per-chunk fp32 states) and
  the fp32 logits of the gold answer. It is an upper-end estimate (XLA may fuse some of these away).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from rmas_jax.config_lib import load_config
from rmas_jax.links.recursive_link import inner_link, outer_link
from rmas_jax.patterns.from_config import pattern_of
from rmas_jax.patterns.system import link_key
from rmas_jax.sharding.mesh import parse_mesh
from rmas_jax.sharding.rules import (
  AXES,
  CACHE_KV,
  CACHE_ROWS,
  CACHE_SLOTS,
  backbone_axes,
  link_axes,
  shard_shape,
  spec_for,
)
from rmas_jax.sharding.table1 import HUB_CONFIGS, TABLE1
from rmas_jax.weights.build import abstract_model, resolve_dtype
from rmas_jax.weights.errors import ModelLoadError

DEFAULT_MESHES = ("1x1x1", "1x8x1", "2x4x1", "1x4x2")
GIB = 1024**3
# Cache fields and their logical axes (KVCache and Qwen3.5's HybridCache).
_CACHE_AXES = {
  "k": CACHE_KV,
  "v": CACHE_KV,
  "conv": ("layers", "cache_batch", None, None),
  "state": ("layers", "cache_batch", "cache_heads", None, None),
  "valid": CACHE_SLOTS,
  "pos": CACHE_SLOTS,
  "next_pos": CACHE_ROWS,
  "end": (),
}


def arch_of(spec: str):
  """The architecture a model spec names, without weights: the Table 1 table, a local HF directory, a tiny spec,
  or a `config.json` already in the HF cache."""
  from rmas_jax.weights.hf_config import arch_from_dir, arch_from_hf
  from rmas_jax.weights.tiny import is_tiny, parse, tiny_arch

  if spec in HUB_CONFIGS:
    return arch_from_hf(HUB_CONFIGS[spec], where=spec)
  if is_tiny(spec):
    family, hidden, _ = parse(spec)
    return tiny_arch(family, hidden)
  if os.path.isdir(spec):
    return arch_from_dir(spec)
  try:
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(spec, "config.json")
  except Exception:  # noqa: BLE001 - not a hub id, or no huggingface_hub: the error below says what to do
    path = None
  if isinstance(path, str):
    return arch_from_dir(os.path.dirname(path))
  raise ModelLoadError(f"{spec}: no architecture known offline; pass an HF checkpoint directory (with config.json)")


def _bytes(leaves_with_axes, sizes: dict[str, int]) -> int:
  """Per-device bytes of `(shape_struct, logical axes)` pairs under mesh axis `sizes`."""
  total = 0
  for leaf, axes in leaves_with_axes:
    spec = spec_for(axes, leaf.shape, sizes)
    total += math.prod(shard_shape(leaf.shape, spec, sizes)) * np.dtype(leaf.dtype).itemsize
  return total


def _with_axes(tree, axes_fn) -> list:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(leaf, axes_fn(path, len(leaf.shape))) for path, leaf in flat]


def _cache_axes(path, ndim: int):
  name = str(getattr(path[-1], "name", getattr(path[-1], "key", "")))
  axes = _CACHE_AXES.get(name, (None,) * ndim)
  return axes if len(axes) == ndim else (None,) * ndim


@dataclasses.dataclass
class AgentShapes:
  role: str
  model: str
  params: list  # (shape struct, logical axes)
  count: int
  cfg: object


@dataclasses.dataclass
class Row:
  """One system on one mesh: bytes per device."""

  mesh: str
  devices: int
  params: int
  links: int
  optimizer: int
  kv_cache: int
  activations: int

  @property
  def total(self) -> int:
    return self.params + self.links + self.optimizer + self.kv_cache + self.activations


def plan_system(config, meshes: Sequence[tuple[int, int, int]], dtype: str | None = None) -> tuple[list, list[Row]]:
  """Per-device memory of `config`'s system on each mesh shape.

  Returns:
    The agents (role, model, parameter count) and one `Row` per mesh.
  """
  dtype = resolve_dtype(dtype or config.dtype)
  t = config.train
  pattern = pattern_of(config)
  models = {a["role"]: a["model"] for a in config.agents}
  agents: dict[str, AgentShapes] = {}
  by_model: dict[str, AgentShapes] = {}
  for role in pattern.roles:
    spec = models[role]
    if spec not in by_model:
      cfg = arch_of(spec)
      state = nnx.state(abstract_model(cfg, dtype, scan_layers=True))
      leaves = _with_axes(state, backbone_axes)
      by_model[spec] = AgentShapes(role, spec, leaves, sum(math.prod(x.shape) for x, _ in leaves), cfg)
    agents[role] = by_model[spec]

  width = {role: agents[role].cfg.hidden_size for role in pattern.roles}
  form, design = config.links.form, config.links.design

  def make_links():
    rngs = nnx.Rngs(0)
    inner = {r: inner_link(width[r], form=form, design=design, rngs=rngs) for r in pattern.roles}
    outer = {link_key(e.src, e.dst): outer_link(width[e.src], width[e.dst], form=form, design=design, rngs=rngs)
             for e in pattern.edges}  # fmt: skip
    return nnx.state(nnx.Dict(inner)), nnx.state(nnx.Dict(outer))

  inner_state, outer_state = jax.eval_shape(make_links)
  inner_leaves, outer_leaves = _with_axes(inner_state, link_axes), _with_axes(outer_state, link_axes)

  batch, prompt, steps = t.batch_size, t.prompt_bucket, t.latent_steps
  thinkers = [r for r in pattern.roles if pattern.thinks(r, final_round=False)]
  caches = {}
  for role in thinkers:
    cfg = agents[role].cfg
    model = abstract_model(cfg, dtype, scan_layers=True)
    cache = jax.eval_shape(lambda m=model: m.init_cache(batch, prompt + steps - 1))
    caches[role] = _with_axes(cache, _cache_axes)

  rows = []
  for shape in meshes:
    sizes = dict(zip(AXES, shape, strict=True))
    params = sum(_bytes(a.params, sizes) for a in by_model.values())
    inner_b, outer_b = _bytes(inner_leaves, sizes), _bytes(outer_leaves, sizes)
    links = inner_b + outer_b
    optimizer = links + 2 * max(inner_b, outer_b)  # gradients of every link + AdamW's two moments of one group
    kv = max((_bytes(c, sizes) for c in caches.values()), default=0)
    rows.append(Row("x".join(map(str, shape)), math.prod(shape), params, links, optimizer, kv,
                    _activations(agents, pattern, t, sizes, dtype)))  # fmt: skip
  table = [(a.role if a.role == r else f"{r} (= {a.role})", a.model, a.count) for r, a in agents.items()]
  return table, rows


def _activations(agents: dict[str, AgentShapes], pattern, t, sizes: dict[str, int], dtype) -> int:
  """Estimated activation bytes per device of the outer training step (see the module docstring)."""
  item = np.dtype(dtype).itemsize
  rows = math.prod(shard_shape((t.batch_size,), spec_for(("batch",), (t.batch_size,), sizes), sizes))

  def split(n: int, name: str) -> int:
    return math.prod(shard_shape((n,), spec_for((name,), (n,), sizes), sizes))

  def layer(cfg, tokens: int, keys: int) -> int:  # one layer's internals kept for its backward pass
    probs = 2 * rows * split(cfg.num_heads, "heads") * tokens * keys * 4
    mlp = 3 * rows * tokens * split(cfg.intermediate_size, "mlp") * item
    return probs + mlp + 4 * rows * tokens * cfg.hidden_size * item

  def every_layer(cfg, tokens: int, keys: int) -> int:  # all layers' internals (no remat)
    attention = getattr(cfg, "num_attention_layers", cfg.num_layers)  # Qwen3.5: only its full-attention layers
    total = cfg.num_layers * layer(cfg, tokens, keys) - (cfg.num_layers - attention) * (
      2 * rows * split(cfg.num_heads, "heads") * tokens * keys * 4
    )
    if attention < cfg.num_layers:  # Gated DeltaNet layers keep an fp32 state per chunk instead of probabilities
      chunks = -(-tokens // cfg.chunk_size)
      heads = split(cfg.linear_num_value_heads, "heads")
      total += (
        (cfg.num_layers - attention) * rows * heads * chunks * cfg.linear_key_head_dim * (cfg.linear_value_head_dim * 4)
      )
    return total

  slots = t.prompt_bucket + t.latent_steps - 1
  thinking = 0
  for role in pattern.roles:
    if not pattern.thinks(role, final_round=False):
      continue
    cfg = agents[role].cfg
    residuals = cfg.num_layers * rows * t.prompt_bucket * cfg.hidden_size * item
    one = layer(cfg, t.prompt_bucket, slots)
    thinking = max(thinking, residuals + one if t.remat else every_layer(cfg, t.prompt_bucket, slots))
  cfg = agents[pattern.decoder].cfg
  tokens = t.prompt_bucket + t.target_tokens
  decoder = every_layer(cfg, tokens, tokens)
  decoder += 2 * rows * t.target_tokens * split(cfg.vocab_size, "vocab") * 4
  return thinking + decoder


def _gib(n: int) -> str:
  return f"{n / GIB:8.2f}"


def format_plan(label: str, config, table, rows: list[Row], dtype: str) -> str:
  """The plan of one system as a text table (GiB per device)."""
  t = config.train
  out = [f"{label}  [{dtype}; train batch {t.batch_size}, prompt {t.prompt_bucket}, latent steps {t.latent_steps}, "
         f"answer {t.target_tokens}, remat {t.remat}]"]  # fmt: skip
  for role, model, count in table:
    out.append(f"  {role:<26} {model:<44} {count / 1e9:6.2f} B params")
  out.append(f"  {'mesh DxFxT':<11}{'devices':>8}{'params':>9}{'links':>9}{'optimizer':>10}{'kv cache':>9}"
             f"{'activ.':>9}{'total':>9}   (GiB per device)")  # fmt: skip
  for r in rows:
    out.append(f"  {r.mesh:<11}{r.devices:>8}{_gib(r.params):>9}{_gib(r.links):>9}{_gib(r.optimizer):>10}"
               f"{_gib(r.kv_cache):>9}{_gib(r.activations):>9}{_gib(r.total):>9}")  # fmt: skip
  return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m rmas_jax.plan", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
  parser.add_argument("--config", action="append", default=[], help="configs/<style>.py[:preset] (repeatable)")
  parser.add_argument("--table1", action="store_true", help="every system of the paper's Table 1")
  parser.add_argument("--mesh", action="append", default=[], help=f"DATAxFSDPxTENSOR (repeatable; default "
                      f"{' '.join(DEFAULT_MESHES)})")  # fmt: skip
  parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="backbone dtype (default: config.dtype)")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field, e.g. --set train.batch_size=16 (repeatable)")  # fmt: skip
  args = parser.parse_args(argv)
  from rmas_jax.config_lib import apply_overrides

  try:
    meshes = [parse_mesh(m) for m in (args.mesh or DEFAULT_MESHES)]
    specs = [(s, s) for s in args.config] + (list(TABLE1) if args.table1 else [])
    if not specs:
      raise ValueError("give --config configs/<style>.py[:preset] or --table1")
    blocks = []
    for label, spec in specs:
      config = load_config(spec)
      apply_overrides(config, args.set)
      table, rows = plan_system(config, meshes, args.dtype)
      blocks.append(format_plan(f"{label} ({spec})" if label != spec else spec, config, table, rows,
                                args.dtype or config.dtype))  # fmt: skip
  except (ValueError, ModelLoadError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print("\n\n".join(blocks))
  return 0


if __name__ == "__main__":
  sys.exit(main())
