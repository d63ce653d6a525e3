"""Trained links for `ask --workdir` and `serve --workdir`: checked before the models load, restored after, and
described in one line (which step, latest or best, and where the links came from when `links_source.json` says)."""

from __future__ import annotations

import inspect
import json
import os

CHECKPOINTS = ("latest", "best")
BEST_DIR = "checkpoints_best"  # where training keeps the best links (`train.eval_every`); the trainer's name for it
SOURCE_FILE = "links_source.json"  # written beside checkpoints/ by `python -m rmas_jax convert from-release`


def check_links_dir(workdir: str, which: str = "latest", flag: str = "--workdir") -> None:
  """Fails early (before any model loads) when `workdir` cannot hold trained links.

  Raises:
    ValueError: one line: `workdir` is missing, is a file, or has no `checkpoints/`; or `which` is unknown.
  """
  if which not in CHECKPOINTS:
    raise ValueError(f"--checkpoint {which!r}: expected one of {', '.join(CHECKPOINTS)}")
  if not os.path.exists(workdir):
    raise ValueError(f"{flag} {workdir}: no such directory")
  if not os.path.isdir(workdir):
    raise ValueError(f"{flag} {workdir}: is a file, not a directory")
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise ValueError(f"{flag} {workdir}: holds no checkpoints/ (train into it with `python train.py --config ... "
                     f"--workdir {workdir}`)")  # fmt: skip
  if which == "best" and not os.path.isdir(os.path.join(workdir, _best_dir())):
    raise ValueError(f"{flag} {workdir}: holds no {_best_dir()}/ (training keeps the best links only with "
                     "train.eval_every); use --checkpoint latest")  # fmt: skip


def _best_dir() -> str:
  from rmas_jax.training import trainer

  return getattr(trainer, "BEST_DIR", BEST_DIR)


def load_trained_links(config, system, workdir: str, which: str = "latest", flag: str = "--workdir") -> str:
  """Restores `workdir`'s trained links into `system`; returns the line that says which links these are.

  Damaged checkpoints are passed over (the checkpoint store logs which) and the newest intact one is used.

  Args:
    config: the run config the links were trained with (its link design must match the checkpoint's).
    system: the freshly built system; its links are replaced.
    workdir: the run directory (`workdir/checkpoints`).
    which: "latest" or "best" (best needs a `restore_links` that takes `which`).
    flag: the option's name, for messages.

  Returns:
    e.g. `trained links: step 7 (latest) of runs/seq/checkpoints; from the release (outer ..., task math)`.

  Raises:
    ValueError: no checkpoint there, none intact, or one of another link design (one line each).
  """
  from rmas_jax.training.trainer import restore_links

  check_links_dir(workdir, which, flag)
  kwargs = {}
  if "which" in inspect.signature(restore_links).parameters:
    kwargs["which"] = which
  elif which != "latest":
    raise ValueError(f"--checkpoint {which}: this version restores the latest checkpoint only")
  step = restore_links(config, system, workdir, **kwargs)
  directory = os.path.join(workdir, "checkpoints" if which == "latest" else _best_dir())
  if step is None:
    raise ValueError(f"{flag} {workdir}: no complete link checkpoint under {directory}")
  line = f"trained links: step {step} ({which}) of {directory}"
  source = describe_source(workdir)
  return f"{line}; {source}" if source else line


def describe_source(workdir: str) -> str | None:
  """Where `workdir`'s links came from, per its `links_source.json`, in a few words; None without that file."""
  path = os.path.join(workdir, SOURCE_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    return f"{SOURCE_FILE} cannot be read ({type(e).__name__})"
  if not isinstance(record, dict):
    return f"{SOURCE_FILE} is not a JSON object"
  kind = record.get("kind") or "unknown source"
  details = [f"{key} {record[key]}" for key in ("outer", "task") if record.get(key)]
  return f"from {'the release' if kind == 'release' else kind}" + (f" ({', '.join(details)})" if details else "")
