"""Process-wide JAX settings for the command-line entry points."""

from __future__ import annotations

import os

import jax

from rmas_jax.user_cache import cache_root


def enable_compilation_cache() -> str:
  """Turns on JAX's persistent compilation cache under the user cache directory, so a second run of the same
  command does not compile again. Returns the cache directory, or "" when `RMAS_JAX_COMPILATION_CACHE=0` turns it
  off."""
  if os.environ.get("RMAS_JAX_COMPILATION_CACHE", "1") == "0":
    return ""
  path = os.path.join(cache_root(), "jax")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  return path
