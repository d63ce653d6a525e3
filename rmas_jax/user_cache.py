"""Where rmas-jax keeps what it fetches or builds once: models, tokenizers, compiled programs."""

import os


def cache_root() -> str:
  """The user cache directory of rmas-jax (`$RMAS_JAX_CACHE`, else `~/.cache/rmas_jax`)."""
  return os.environ.get("RMAS_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rmas_jax")
