"""What every analysis command shares: its command line, loading the system (trained links when a run directory is
given), and result files that are written whole and never over an existing one."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from collections.abc import Callable, Sequence

from rmas_jax.results import write_json_new

DEFAULT_OUT = "benchmarks/results/analysis"


def parser(
  description: str, *, workdir_help: str = "a training run whose link checkpoint to use"
) -> argparse.ArgumentParser:
  """The common arguments: `--config`, `--workdir`, `--out`, `--set KEY=VALUE`, `--seed`, `--name`."""
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--config", required=True, help="configs/<style>.py[:preset]")
  p.add_argument("--workdir", default="", help=f"{workdir_help} (default: fresh links)")
  p.add_argument("--out", default=DEFAULT_OUT, help=f"where the JSON and PNG files go (default {DEFAULT_OUT})")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config field, e.g. --set eval.limit=10 (repeatable)")  # fmt: skip
  p.add_argument("--seed", type=int, default=0, help="seed of every random choice the study makes")
  p.add_argument("--name", default="", help="suffix of the result files (e.g. the style)")
  return p


def command(build_parser: Callable[[], argparse.ArgumentParser], run: Callable, argv: Sequence[str] | None) -> int:
  """A study's `main`: parses `argv`, runs, and turns a ValueError (bad input) into one `error:` line and exit 2."""
  args = build_parser().parse_args(argv)
  try:
    run(args)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


def ints(text: str) -> list[int]:
  """`"8,16,32"` -> `[8, 16, 32]`."""
  return [int(x) for x in text.split(",") if x.strip()]


def floats(text: str) -> list[float]:
  """`"0.5,1,2"` -> `[0.5, 1.0, 2.0]`."""
  return [float(x) for x in text.split(",") if x.strip()]


def load_config_with(spec: str, overrides: Sequence[str], seed: int | None = None):
  """The config `spec` with `--set` overrides (and `seed`, when given) applied, validated."""
  from rmas_jax.config_lib import apply_overrides, load_config, validate

  config = load_config(spec)
  if seed is not None:
    config.seed = seed
  apply_overrides(config, overrides)
  validate(config)
  return config


def load_with_links(config, workdir: str, *, scan_layers: bool | None = None, progress: bool = False):
  """`(loaded, links)`: the config's system, with the latest checkpoint of `workdir` restored when given; `links`
  says which (`trained (step N)` or `fresh (seed S)`)."""
  from rmas_jax.patterns.from_config import load_system

  loaded = load_system(config, progress=progress, scan_layers=scan_layers)
  if not workdir:
    return loaded, f"fresh (seed {config.seed})"
  from rmas_jax.training.trainer import restore_links

  step = restore_links(config, loaded.system, workdir)
  if step is None:
    raise ValueError(f"--workdir {workdir}: no link checkpoint under {workdir}/checkpoints")
  return loaded, f"trained ({workdir}, step {step})"


def result_stem(out_dir: str, name: str) -> str:
  """`out_dir/name`, or `out_dir/name-<timestamp>` when a file of that stem exists (results are never replaced)."""
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.join(out_dir, name)
  taken = lambda s: any(f.startswith(os.path.basename(s) + ".") for f in os.listdir(out_dir))  # noqa: E731
  if taken(stem):
    stem = f"{stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
  while taken(stem):  # two runs within one second
    stem += "x"
  return stem


def write_json(path: str, payload) -> str:
  """Writes `payload` to the new file `path` (FileExistsError if it exists); returns the path."""
  write_json_new(path, payload)
  return path


def save_figure(fig, path: str, dpi: int = 120) -> str:
  """Saves a matplotlib figure to the new file `path` atomically (FileExistsError if it exists); closes it."""
  import matplotlib.pyplot as plt

  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".png")
  os.close(fd)
  try:
    fig.savefig(tmp, dpi=dpi)
    os.link(tmp, path)
  finally:
    os.unlink(tmp)
    plt.close(fig)
  return path


def pyplot():
  """matplotlib's pyplot on the file-only backend."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt
