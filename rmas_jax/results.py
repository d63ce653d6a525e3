"""Result files are written whole or not at all, and never over an existing one."""

from __future__ import annotations

import json
import os
import tempfile


def write_json_new(path: str, payload) -> None:
  """Writes `payload` as JSON to a new file `path` atomically; raises FileExistsError if `path` exists."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
  try:
    # mkstemp makes the file private (0600); a result is for reading, so it gets what open() would give it.
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, "w") as f:
      json.dump(payload, f, indent=2, default=str)
      f.write("\n")
    os.link(tmp, path)  # fails if `path` exists, unlike a rename
  finally:
    os.unlink(tmp)


def _umask() -> int:
  mask = os.umask(0)  # reading the umask means setting it; put it straight back
  os.umask(mask)
  return mask


def write_benchmark(name: str, payload, *, overwrite: bool) -> str:
  """Writes `benchmarks/results/<name>.json` atomically; an existing file is replaced only with `overwrite`,
  otherwise the new result gets a timestamped name. Returns the path written."""
  import datetime

  os.makedirs("benchmarks/results", exist_ok=True)
  path = f"benchmarks/results/{name}.json"
  if os.path.exists(path) and not overwrite:
    path = path.replace(".json", f"-{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
  with open(path + ".tmp", "w") as f:
    json.dump(payload, f, indent=2)
  os.replace(path + ".tmp", path)
  return path
