"""Style configs validate, and the entry points check a config before anything runs."""

import glob
import importlib.util
import os
import subprocess
import sys

import pytest

from rmas_jax.config_lib import validate

ROOT = os.path.join(os.path.dirname(__file__), "..")
STYLE_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "[!_b]*.py")))


@pytest.mark.parametrize("path", STYLE_FILES, ids=os.path.basename)
def test_every_style_config_validates(path):
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for preset in getattr(module, "PRESETS", {None: None}):
    validate(module.get_config(preset))


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_entry_points_check_config_and_say_what_is_missing(script):
  run = lambda cfg: subprocess.run(
    [sys.executable, script, "--config", cfg],
    capture_output=True,
    text=True,  # noqa: E731
    cwd=ROOT,
    timeout=120,
  )
  result = run("configs/sequential.py")
  assert result.returncode == 2
  assert "config ok: sequential" in result.stderr and "not implemented yet" in result.stderr
  bad = run("configs/sequential.py:nope")
  assert bad.returncode != 0 and "unknown preset 'nope'" in bad.stderr
