"""Trains the RecursiveLinks of a system: `python train.py --config configs/sequential.py --workdir DIR`.

Inner links first (each agent's own, eq. 5), then the outer links through all recursion rounds (eq. 6); backbones
stay frozen. Override any field with `--config.train.outer_steps=50` and the like. Rerunning the same command
resumes from the last checkpoint under `DIR/checkpoints`.
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
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics.jsonl and TensorBoard events go")


def main(argv):
  del argv
  config = _CONFIG.value
  problem = entry_check(config, _WORKDIR.value, "checkpoints and metrics")
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 2
  logging.getLogger("absl").setLevel(logging.WARNING)
  from rmas_jax.runtime import enable_compilation_cache
  from rmas_jax.sharding.mesh import activate, is_writer
  from rmas_jax.training.trainer import TrainingIncompleteError, train

  try:
    activate(config)  # multi-host start-up and `config.mesh`, before anything else touches JAX's devices
    enable_compilation_cache()
    summary = train(config, _WORKDIR.value)
  except (ValueError, ModelLoadError, CheckpointMismatchError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except TrainingIncompleteError as e:  # the steps ran but the last checkpoint is missing: not a finished run
    print(f"error: {e}", file=sys.stderr)
    return 1
  if is_writer():
    print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  app.run(main, flags_parser=parse_absl_flags)  # a bad config file or --config.* key: one line, exit 2
