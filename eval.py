"""Evaluates a system or a baseline: `python eval.py --config configs/sequential.py --workdir DIR`.

`--config.eval.dataset=gsm_symbolic --config.eval.limit=30 --config.eval.method=recursive_mas` and the like; trained
links are loaded from `DIR/checkpoints` when present (`--config.eval.checkpoint=latest|best`). The result goes to
`DIR/eval/<dataset>-<method>-r<R>-<key>.json` (`key`: a hash of the data, task and field map); an interrupted
evaluation resumes from the records already written, and only when everything it measured is the same.
"""

import json
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from rmas_jax.config_lib import entry_check, parse_absl_flags
from rmas_jax.training.checkpoints import CheckpointMismatchError
from rmas_jax.weights.errors import ModelLoadError

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<style>.py[:preset]", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: trained links are read from DIR/checkpoints")


def main(argv):
  del argv
  config = _CONFIG.value
  problem = entry_check(config, _WORKDIR.value, "results")
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 2
  logging.getLogger("absl").setLevel(logging.WARNING)
  from rmas_jax.evaluation.datasets import DatasetUnavailableError
  from rmas_jax.evaluation.runner import evaluate
  from rmas_jax.runtime import enable_compilation_cache
  from rmas_jax.sharding.mesh import activate, single_process_only

  try:
    activate(config)  # `config.mesh`: backbones sharded over this host's devices
    single_process_only("eval.py")
    enable_compilation_cache()
    result = evaluate(config, _WORKDIR.value)
  except (ValueError, FileNotFoundError, ModelLoadError, CheckpointMismatchError, DatasetUnavailableError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  keys = ("dataset", "task", "method", "rounds", "links", "n", "skipped", "accuracy", "decoded_tokens_per_question",
          "seconds_per_question")
  print(json.dumps({k: result.get(k) for k in keys}))
  return 0


if __name__ == "__main__":
  app.run(main, flags_parser=parse_absl_flags)  # a bad config file or --config.* key: one line, exit 2
