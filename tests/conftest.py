"""Test set-up: fp32 matmuls everywhere so tolerances mean what they say."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "float32")

import rmas_jax.runtime  # noqa: E402

# No persistent compilation cache inside the test process: an in-process test that turned it on (the web app's
# engine does) left every later test reading executables back from disk, and reading one back crashed the process
# with a segmentation fault (jax compilation_cache.get_executable_and_time, under test_training). Commands the
# tests start as subprocesses still use it.
rmas_jax.runtime.enable_compilation_cache = lambda: ""


import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops each module's compiled programs and traced functions when it ends: the whole suite in one process
  otherwise keeps every executable it ever built (over 13 GB by the last modules)."""
  yield
  jax.clear_caches()
  gc.collect()
