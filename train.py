"""Trains the RecursiveLinks of a system: `python train.py --config configs/sequential.py --workdir DIR`.

The backbones, their loaders and text generation exist (see README); the RecursiveLinks, the recursion and
the training loops are the next layers and are not written yet. Until they are, this command checks the
config and says so, with a non-zero exit, instead of pretending to run.
"""

from absl import app, flags
from ml_collections import config_flags

from rmas_jax.config_lib import preflight

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<style>.py[:preset]", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and results go")


def main(argv):
  del argv
  return preflight(_CONFIG.value, "link training")


if __name__ == "__main__":
  app.run(main)
