"""HF checkpoint directories and hub ids."""

from __future__ import annotations

import os

from rmas_jax.models.transformer import CausalLM
from rmas_jax.weights.build import build_model
from rmas_jax.weights.errors import ModelLoadError
from rmas_jax.weights.hf_config import arch_from_dir
from rmas_jax.weights.safetensors_io import SafetensorsCheckpoint

# adapter*.pt: a release role repository's inner links (see rmas_jax.interop.role_repos); absent elsewhere.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "adapter*.pt"]


def load_hf_model(
  directory: str, *, dtype="float32", scan_layers: bool | None = None, progress: bool = False
) -> CausalLM:
  """A `CausalLM` from an HF checkpoint directory (`config.json` plus safetensors); see `build_model`."""
  if not os.path.isdir(directory):
    raise ModelLoadError(f"{directory}: not a directory")
  cfg = arch_from_dir(directory)
  ckpt = SafetensorsCheckpoint(directory)
  try:
    return build_model(
      cfg, ckpt.get, ckpt.keys(), dtype=dtype, scan_layers=scan_layers, where=directory, progress=progress
    )
  finally:
    ckpt.close()


def download_hub_model(repo_id: str) -> str:
  """Fetches an HF hub repository's config, weights and tokenizer; returns the local directory.

  Raises:
    ModelLoadError: the hub cannot be reached or the repository does not exist (one line, with what to do).
  """
  try:
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
  except ImportError:
    raise ModelLoadError(f"{repo_id}: huggingface_hub is not installed; pip install huggingface_hub") from None
  try:
    return huggingface_hub.snapshot_download(repo_id, allow_patterns=HUB_PATTERNS)
  except RepositoryNotFoundError:
    raise ModelLoadError(f"{repo_id}: no such repository on the Hugging Face hub (or it is gated)") from None
  except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ModelLoadError(
      f"{repo_id}: cannot fetch from the Hugging Face hub ({reason}); download the checkpoint on a machine with "
      "access and pass its directory instead"
    ) from None
