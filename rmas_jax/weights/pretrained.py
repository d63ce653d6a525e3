"""One entry point for every way a model can be named: registry name, GGUF file, HF directory, HF hub id, or a
tiny random model (`tiny:<family>:<hidden>`, for tests)."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from rmas_jax.models.transformer import CausalLM
from rmas_jax.weights import registry
from rmas_jax.weights.build import build_model
from rmas_jax.weights.errors import ModelLoadError
from rmas_jax.weights.gguf_io import GGUFCheckpoint
from rmas_jax.weights.hf_checkpoint import download_hub_model, load_hf_model
from rmas_jax.weights.tiny import is_tiny, load_tiny, parse
from rmas_jax.weights.tokenizer import tokenizer_from_dir, tokenizer_from_gguf

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclasses.dataclass
class Pretrained:
  """A loaded model with what is needed to talk to it.

  Attributes:
    model: the decoder.
    tokenizer: a transformers fast tokenizer (its `chat_template` set where one is known), or None.
    spec: what the user asked for.
    source: the file or directory the weights came from.
  """

  model: CausalLM
  tokenizer: Any
  spec: str
  source: str


def resolve(spec: str) -> tuple[str, str]:
  """Classifies a model spec as `(kind, location)` with kind in registry, gguf, hf_dir, hub, tiny."""
  if is_tiny(spec):
    parse(spec)
    return "tiny", spec
  if spec in registry.REGISTRY:
    return "registry", spec
  if os.path.isdir(spec):
    return "hf_dir", spec
  if spec.endswith(".gguf") or os.path.isfile(spec):
    return "gguf", spec
  if _HUB_ID.match(spec) and not os.path.exists(spec):
    return "hub", spec
  raise ModelLoadError(
    f"unknown model {spec!r}: not a registry name ({', '.join(registry.REGISTRY)}), a GGUF file, "
    "an HF checkpoint directory, a hub id like org/name, or tiny:<family>:<hidden>"
  )


def _load_gguf(path, spec, dtype, scan_layers, with_tokenizer: bool, cache_key: str | None, progress) -> Pretrained:
  ckpt = GGUFCheckpoint(path)
  model = build_model(
    ckpt.arch, ckpt.get, ckpt.keys(), dtype=dtype, scan_layers=scan_layers, where=path, progress=progress
  )
  tokenizer = tokenizer_from_gguf(ckpt.meta, path, cache_key) if with_tokenizer else None
  return Pretrained(model=model, tokenizer=tokenizer, spec=spec, source=path)


def load_pretrained(
  spec: str,
  *,
  dtype="float32",
  scan_layers: bool | None = None,
  with_tokenizer: bool = True,
  progress: bool = True,
) -> Pretrained:
  """Loads a model (and its tokenizer) from any supported spec.

  Args:
    spec: registry name, path to a `.gguf` file, HF checkpoint directory, or HF hub id.
    dtype: `float32` or `bfloat16`.
    scan_layers: stacked, scanned layers (True) or per-layer weights (False); None: per-layer on CPU only.
    with_tokenizer: also load the tokenizer (an error if the checkpoint has none).
    progress: show download, verification and loading progress on stderr.

  Raises:
    ModelLoadError: with a one-line message naming the spec, file or field at fault.
  """
  kind, location = resolve(spec)
  if kind == "tiny":
    model, tokenizer = load_tiny(location, dtype=dtype, scan_layers=bool(scan_layers))
    return Pretrained(model=model, tokenizer=tokenizer if with_tokenizer else None, spec=spec, source="random")
  if kind == "registry":
    path = registry.fetch(location, progress=progress)
    key = registry.REGISTRY[location].sha256[:16]
    return _load_gguf(path, spec, dtype, scan_layers, with_tokenizer, key, progress)
  if kind == "gguf":
    return _load_gguf(location, spec, dtype, scan_layers, with_tokenizer, None, progress)
  directory = download_hub_model(location) if kind == "hub" else location
  tokenizer = tokenizer_from_dir(directory) if with_tokenizer else None
  model = load_hf_model(directory, dtype=dtype, scan_layers=scan_layers, progress=progress)
  return Pretrained(model=model, tokenizer=tokenizer, spec=spec, source=directory)
