"""Evaluates a system: `python eval.py --config configs/sequential.py --workdir DIR`.

The backbones, their loaders and text generation exist (see README); the links and the recursion and evaluation
loops are the next layers of the system and are not written yet. Until they are, this command checks the
config and says so, with a non-zero exit, instead of pretending to evaluate.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from rmas_jax.config_lib import validate

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<style>.py[:preset]", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints and metrics go")


def main(argv):
  del argv
  config = _CONFIG.value
  if config is None:
    print("error: --config is required, e.g. --config configs/sequential.py", file=sys.stderr)
    return 2
  try:
    validate(config)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  agents = ", ".join(f"{a['role']}={a['model']}" for a in config.agents)
  print(f"config ok: {config.style} ({agents})", file=sys.stderr)
  print(
    "error: evaluation of a system is not implemented yet; only the backbones are (see README, Status)", file=sys.stderr
  )
  return 2


if __name__ == "__main__":
  app.run(main)
