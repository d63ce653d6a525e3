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
def test_entry_points_say_what_is_wrong_in_one_line(script, tmp_path):
  def run(*args):
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)

  missing = run("--config", "configs/sequential.py")
  assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: --workdir is required")
  bad = run("--config", "configs/sequential.py:nope", f"--workdir={tmp_path}")
  assert bad.returncode != 0 and "unknown preset 'nope'" in bad.stderr
  wrong = run("--config", "configs/tiny.py", f"--workdir={tmp_path}", "--config.dtype=float16")
  assert wrong.returncode == 2 and wrong.stderr.strip().splitlines()[-1].startswith("error: config.dtype: 'float16'")
