"""Reading HF safetensors checkpoints (single file or sharded with an index) as numpy, without torch."""

from __future__ import annotations

import json
import os

import numpy as np
import safetensors

from rmas_jax.weights.errors import ModelLoadError


class SafetensorsCheckpoint:
  """Lazy access to the tensors of a checkpoint directory by HF name."""

  def __init__(self, directory: str):
    self.directory = directory
    index = os.path.join(directory, "model.safetensors.index.json")
    single = os.path.join(directory, "model.safetensors")
    if os.path.exists(index):
      try:
        with open(index) as f:
          weight_map = json.load(f)["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        raise ModelLoadError(f"{index}: not a valid safetensors index ({e})") from None
    elif os.path.exists(single):
      weight_map = {k: "model.safetensors" for k in self._keys_of(single)}
    else:
      raise ModelLoadError(f"{directory}: no model.safetensors or model.safetensors.index.json")
    self.weight_map: dict[str, str] = weight_map
    self._handles: dict[str, object] = {}

  @staticmethod
  def _open(path: str):
    if not os.path.exists(path):
      raise ModelLoadError(f"{path}: shard named in the index is missing")
    try:
      return safetensors.safe_open(path, framework="numpy")
    except Exception as e:  # safetensors raises its own error types for corrupt headers
      raise ModelLoadError(f"{path}: not a readable safetensors file ({e})") from None

  def _keys_of(self, path: str) -> list[str]:
    with self._open(path) as f:
      return list(f.keys())

  def keys(self) -> list[str]:
    return list(self.weight_map)

  def close(self) -> None:
    """Releases the shard files opened so far."""
    for handle in self._handles.values():
      handle.__exit__(None, None, None)
    self._handles.clear()

  def get(self, name: str) -> np.ndarray:
    """One tensor by HF name."""
    shard = self.weight_map[name]
    if shard not in self._handles:
      self._handles[shard] = self._open(os.path.join(self.directory, shard)).__enter__()
    try:
      return self._handles[shard].get_tensor(name)
    except Exception as e:
      raise ModelLoadError(f"{os.path.join(self.directory, shard)}: cannot read tensor {name!r} ({e})") from None
