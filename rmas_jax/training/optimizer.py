"""Only links train: the system's state splits into `LinkParam`s and everything else (frozen backbones, never
differentiated, no optimizer state), and one `optax.partition` per stage trains one link group and holds the other
at zero update."""

from __future__ import annotations

import jax
import optax
from flax import nnx

from rmas_jax.links.recursive_link import LinkParam

GROUPS = ("inner", "outer")


def split_links(system) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """`(graphdef, links, frozen)`: the links' state and the rest of the system's."""
  return nnx.split(system, LinkParam, ...)


def link_groups(links: nnx.State):
  """A pytree like `links` labelling each leaf `inner` (an agent's inner link) or `outer` (an edge's link)."""

  def label(path, _):
    head = str(getattr(path[0], "key", path[0]))
    if head == "agents":
      return "inner"
    if head == "outer":
      return "outer"
    raise ValueError(f"link parameter at {jax.tree_util.keystr(path)} belongs to neither inner nor outer links")

  return jax.tree_util.tree_map_with_path(label, links)


def warmup_steps(warmup: float, steps: int) -> int:
  """Warm-up steps of a stage of `steps`: `warmup` below 1 is a share of them (0.05: the first 5 %), else a count."""
  n = round(warmup * steps) if 0 < warmup < 1 else int(warmup)
  return min(n, max(steps - 1, 0))


def schedule(lr: float, warmup: float, steps: int) -> optax.Schedule:
  """Linear warm-up then cosine decay to 0 (the release's HF cosine schedule with 0.5 cycles), except that the
  warm-up rises from `lr / (W + 1)` at step 0 (not from 0, so the first step is not wasted) to `lr` at step W."""
  n = warmup_steps(warmup, steps)
  if n == 0:
    return optax.cosine_decay_schedule(lr, max(steps, 1))
  return optax.warmup_cosine_decay_schedule(lr / (n + 1), lr, warmup_steps=n, decay_steps=max(steps, 2),
                                            end_value=0.0)  # fmt: skip


def stage_optimizer(stage: str, train, steps: int) -> optax.GradientTransformation:
  """AdamW (β 0.9/0.95, no weight decay by default) with global-norm clipping on `stage`'s links; the other group
  gets `set_to_zero`, which keeps no state."""
  if stage not in GROUPS:
    raise ValueError(f"training stage {stage!r}: expected one of {GROUPS}")
  lr = train.inner_lr if stage == "inner" else train.outer_lr
  active = optax.chain(
    optax.clip_by_global_norm(train.clip),
    optax.adamw(schedule(lr, train.warmup, steps), b1=train.b1, b2=train.b2, weight_decay=train.weight_decay),
  )
  transforms = {g: active if g == stage else optax.set_to_zero() for g in GROUPS}
  return optax.partition(transforms, link_groups)
