"""`python -m rmas_jax convert from-release | to-release`: the release's link files in and out of a workdir."""

from __future__ import annotations

import json
import sys
import zipfile


def add_convert_parser(sub) -> None:
  """Registers `convert` and its two directions on the top-level subparsers."""
  p = sub.add_parser("convert", help="import the PyTorch release's links into a workdir, or export a workdir's links")
  way = p.add_subparsers(dest="direction", required=True)
  imp = way.add_parser("from-release", help="release link files -> an rmas-jax link checkpoint in --workdir")
  imp.add_argument("--config", required=True, help="configs/<style>.py[:preset]: the agents the links must fit")
  imp.add_argument("--outer", help="the outer-links directory or hub id (default: the config's release.outer)")
  imp.add_argument("--inner", action="append", default=[], metavar="ROLE=PATH",
                   help="an inner-link file, role repository directory or hub id for ROLE (repeatable; default: the "
                        "agent's model if it is a role repository, else the config's release.roles)")  # fmt: skip
  imp.add_argument("--task", choices=["math", "code"], help="which task's links (Sequential, Distillation); default: "
                   "code for config.task=code, else math")  # fmt: skip
  imp.add_argument("--workdir", required=True, help="a new run directory: checkpoints/ and links_source.json")
  imp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
  exp = way.add_parser("to-release", help="a workdir's links -> the release's files under --out")
  exp.add_argument("--config", required=True, help="configs/<style>.py[:preset]: the config the workdir was made with")
  exp.add_argument("--workdir", required=True, help="holds checkpoints/ (the latest is exported)")
  exp.add_argument("--out", required=True, help="the release-layout directory to write (files never overwritten)")
  exp.add_argument("--task", choices=["math", "code"], help="the task the files are named for (default as above)")
  exp.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16", help="default: the release's")
  exp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")


def _pairs(items: list[str]) -> dict[str, str]:
  out = {}
  for item in items:
    role, eq, path = item.partition("=")
    if not eq or not role or not path:
      raise ValueError(f"--inner {item!r}: expected ROLE=PATH, e.g. --inner planner=repos/planner")
    if role in out:
      raise ValueError(f"--inner: role {role!r} given twice")
    out[role] = path
  return out


def run_convert(args) -> None:
  """Runs one direction; prints a one-line JSON summary on stdout. Bad input is a one-line `ValueError`."""
  from rmas_jax.config_lib import apply_overrides, load_config, validate

  config = load_config(args.config)
  apply_overrides(config, args.set)
  validate(config)
  try:
    if args.direction == "from-release":
      from rmas_jax.interop.release_import import import_release

      record = import_release(config, config_spec=args.config, outer=args.outer, inner=_pairs(args.inner),
                              task=args.task, workdir=args.workdir)  # fmt: skip
      summary = {"workdir": args.workdir, "step": record["step"], "task": record["task"], "outer": record["outer"],
                 "layout": record["layout"], "files": len(record["files"])}  # fmt: skip
    else:
      from rmas_jax.interop.release_export import export_release

      done = export_release(config, workdir=args.workdir, out=args.out, task=args.task, dtype=args.dtype)
      summary = {"out": args.out, "step": done["step"], "task": done["task"], "dtype": done["dtype"],
                 "files": len(done["files"])}  # fmt: skip
  except (OSError, zipfile.BadZipFile) as e:  # a file system fault, not a traceback: which file and why
    where = getattr(e, "filename", None) or ""
    raise ValueError(f"{where}{': ' if where else ''}{getattr(e, 'strerror', None) or e}") from None
  print(json.dumps(summary), file=sys.stdout)
