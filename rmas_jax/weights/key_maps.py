"""HF tensor names to the paths of our NNX state.

Our sub-modules carry HF's names and HF's layouts (projection weights `[out, in]`), so the map is derived from the
model's own state: a stacked layer leaf `layers/<module path>/<leaf>` is HF's
`model.layers.<i>.<module path>.<leaf>`, and tensors load as they are stored.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable

import numpy as np
from tqdm.auto import tqdm

from rmas_jax.weights.errors import ModelLoadError

# Keys a checkpoint may hold that the text decoder does not use.
IGNORED_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.",
                    "model.visual.", "mtp.")  # fmt: skip
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def find_prefix(keys: Iterable[str]) -> str:
  """The prefix in front of `embed_tokens.weight` (`model.`, `language_model.model.`, `model.language_model.`)."""
  for key in keys:
    if key.endswith("embed_tokens.weight") and not key.startswith(IGNORED_PREFIXES):
      return key[: -len("embed_tokens.weight")]
  raise ModelLoadError("checkpoint has no embed_tokens.weight tensor")


def hf_name(path: tuple[str, ...], prefix: str, layer: int | None = None) -> str:
  """HF tensor name of one leaf path of our state (for stacked `layers/...` leaves, of layer `layer`)."""
  if path == ("lm_head",):  # `model.` and `model.language_model.` checkpoints keep the head at the top level
    return "language_model.lm_head.weight" if prefix == "language_model.model." else "lm_head.weight"
  if path == ("embed_tokens", "embedding"):
    return prefix + "embed_tokens.weight"
  leaf = path[-1]  # `weight`, `bias` and the names HF gives other parameters (`A_log`, `dt_bias`)
  if path[0] == "layers" and isinstance(path[1], int):  # one array per layer: the index is in the path
    layer, path = path[1], ("layers",) + path[2:]
  modules = ".".join(path[1:-1] if path[0] == "layers" else path[:-1])
  if path[0] == "layers":
    return f"{prefix}layers.{layer}.{modules}.{leaf}"
  return f"{prefix}{modules}.{leaf}"


def load_tree(
  abstract: dict,
  get: Callable[[str], np.ndarray],
  keys: list[str],
  num_layers: int,
  dtype,
  where: str,
  progress: bool = False,
) -> dict:
  """Fills a nested dict of shape structs with checkpoint tensors.

  Args:
    abstract: our state as a pure nested dict of `jax.ShapeDtypeStruct`.
    get: reads one HF-named tensor as a numpy array.
    keys: every tensor name in the checkpoint.
    num_layers: depth, for a stacked `layers` subtree.
    dtype: dtype of the returned arrays.
    where: the checkpoint, for error messages.
    progress: show a progress bar over tensors on stderr (dequantising a large GGUF takes tens of seconds).

  Returns:
    The same structure holding numpy arrays.

  Raises:
    ModelLoadError: a tensor is missing, has the wrong shape, or the checkpoint holds tensors nothing uses.
  """
  prefix = find_prefix(keys)
  available = set(keys)
  used: set[str] = set()

  def fetch(name: str, path: tuple[str, ...], shape: tuple[int, ...]) -> np.ndarray:
    if name not in available:
      raise ModelLoadError(f"{where}: missing tensor {name!r}")
    used.add(name)
    bar.update(1)
    array = np.asarray(get(name))
    if array.shape != shape:
      raise ModelLoadError(f"{where}: tensor {name!r} has shape {array.shape}, expected {shape}")
    return array.astype(dtype)

  def fill(node, path):
    if isinstance(node, dict):
      return {k: fill(v, path + (k,)) for k, v in node.items()}
    shape = tuple(node.shape)
    if path[0] == "layers" and not isinstance(path[1], int):  # stacked: one leaf holds every layer
      parts = [fetch(hf_name(path, prefix, i), path, shape[1:]) for i in range(num_layers)]
      return np.stack(parts)
    return fetch(hf_name(path, prefix), path, shape)  # a per-layer leaf carries its index in the path

  with tqdm(total=len(keys), desc=f"load {os.path.basename(where.rstrip('/'))}", unit="tensor", disable=not progress,
            file=sys.stderr, leave=False) as bar:  # fmt: skip
    tree = fill(abstract, ())
  unused = [
    k
    for k in available - used
    if not k.startswith(IGNORED_PREFIXES) and not k.endswith(IGNORED_SUFFIXES) and not _is_tied_copy(k, tree)
  ]
  if unused:
    raise ModelLoadError(f"{where}: {len(unused)} tensors this architecture does not use, e.g. {sorted(unused)[0]!r}")
  return tree


def _is_tied_copy(key: str, tree: dict) -> bool:
  # Some tied checkpoints still store lm_head.weight (a copy of the embedding).
  return key.endswith("lm_head.weight") and "lm_head" not in tree
