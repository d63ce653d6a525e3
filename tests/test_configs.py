"""Style configs validate, and the entry points check a config before anything runs."""

import glob
import importlib.util
import os
import re
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


# One validation pass: every entry point says what is wrong in one line naming the field, and exits 2.

from rmas_jax import config_lib  # noqa: E402


def _tiny():
  return config_lib.load_config("configs/tiny.py")


@pytest.mark.parametrize(("field", "value", "expected"), [
  ("train.batch_size", 0, "config.train.batch_size: 0; expected a whole number >= 1"),
  ("train.inner_steps", -1, "config.train.inner_steps: -1; expected a whole number >= 0"),
  ("train.outer_steps", -5, "config.train.outer_steps: -5; expected a whole number >= 0"),
  ("train.checkpoint_every", 0, "config.train.checkpoint_every: 0; expected a whole number >= 1"),
  ("train.keep", 0, "config.train.keep: 0; expected a whole number >= 1"),
  ("train.examples", 0, "config.train.examples: 0; expected a whole number >= 1"),
  ("train.clip", 0.0, "config.train.clip: 0.0; expected a number in (0, inf)"),
  ("train.b2", 1.0, "config.train.b2: 1.0; expected a number in [0, 1)"),
  ("train.inner_lr", float("nan"), "config.train.inner_lr: nan; expected a number in [0, inf)"),
  ("train.warmup", -1, "config.train.warmup: -1"),
  ("train.mode", "both", "config.train.mode: 'both'; expected one of rollout, teacher_forced"),
  ("eval.batch_size", 0, "config.eval.batch_size: 0; expected a whole number >= 1"),
  ("eval.limit", -1, "config.eval.limit: -1; expected a whole number >= 0"),
  ("eval.num_samples", 0, "config.eval.num_samples: 0; expected a whole number >= 1"),
  ("eval.method", "guess", "config.eval.method: 'guess'; expected one of recursive_mas"),
  ("eval.scoring", "loose", "config.eval.scoring: 'loose'; expected one of strict, official"),
  ("generation.top_p", 5.0, "config.generation.top_p: 5.0; expected a number in (0, 1]"),
  ("generation.top_p", 0.0, "config.generation.top_p: 0.0; expected a number in (0, 1]"),
  ("generation.top_k", -1, "config.generation.top_k: -1; expected a whole number >= 0"),
  ("generation.temperature", -1.0, "config.generation.temperature: -1.0; expected a number > 0"),
  ("generation.max_new_tokens", 0, "config.generation.max_new_tokens: 0; expected a whole number >= 1"),
  ("inference.chunk", 0, "config.inference.chunk: 0; expected a whole number >= 1"),
  ("tools.python_timeout_s", 0.0, "config.tools.python_timeout_s: 0.0; expected a number in (0, inf)"),
  ("tools.names", ["python", "shell"], "config.tools.names: ['python', 'shell']; expected a list drawn from"),
  ("task", "poetry", "config.task: 'poetry'; expected one of math, choice, code, reasoning"),
  ("seed", -1, "config.seed: -1; expected a whole number >= 0"),
  ("links.design", "3-layer", "config.links.design: '3-layer'; expected one of 1-layer"),
])  # fmt: skip
def test_every_numeric_and_choice_field_is_range_checked(field, value, expected):
  config = _tiny()
  *parents, leaf = field.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value
  with pytest.raises(ValueError) as e:
    config_lib.validate(config)
  assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def test_temperature_zero_is_greedy_only_and_new_fields_are_checked_where_present():
  config = _tiny()
  config.generation.update(greedy=True, temperature=0.0)
  config_lib.validate(config)
  config.generation.greedy = False
  with pytest.raises(ValueError, match=r"^config.generation.temperature: 0 samples nothing"):
    config_lib.validate(config)
  config = _tiny()
  # Fields the config does not have are not required; given, they are checked.
  config.train.update(eval_every=5, warmup=0.1)
  config.eval.checkpoint = "best"
  config_lib.validate(config)
  for field, value, expected in (("train.warmup", 1.5, "config.train.warmup: 1.5"),
                                 ("eval.checkpoint", "worst", "config.eval.checkpoint: 'worst'; expected one of"),
                                 ("train.eval_every", -1, "config.train.eval_every: -1")):  # fmt: skip
    bad = _tiny()
    section, leaf = field.split(".")
    bad[section][leaf] = value
    with pytest.raises(ValueError, match="^" + re.escape(expected)):
      config_lib.validate(bad)
  del config.train["eval_every"]
  config_lib.validate(config)


def test_broken_config_files_are_one_line_naming_file_and_line(tmp_path):
  cases = {
    "missing.py": (None, f"{tmp_path / 'missing.py'}: no such config file"),
    "syntax.py": ("def get_config(preset=None):\n  return {\n", f"{tmp_path / 'syntax.py'}:2: syntax error"),
    "raises.py": ("def get_config(preset=None):\n  x = 1\n  return undefined\n",
                  f"{tmp_path / 'raises.py'}:3: NameError: name 'undefined' is not defined"),
    "empty.py": ("", f"{tmp_path / 'empty.py'}: defines no get_config()"),
  }  # fmt: skip
  for name, (text, expected) in cases.items():
    if text is not None:
      (tmp_path / name).write_text(text)
    with pytest.raises(ValueError) as e:
      config_lib.load_config(str(tmp_path / name))
    assert str(e.value).startswith(expected) and "\n" not in str(e.value), str(e.value)


def test_overrides_name_the_unknown_field_and_what_exists():
  config = _tiny()
  with pytest.raises(ValueError) as e:
    config_lib.apply_overrides(config, ["train.steps=50"])
  assert str(e.value).startswith("override 'train.steps=50': config.train has no field 'steps' (it has: b1, b2,")
  with pytest.raises(ValueError, match="config.train.batch_size: 0; expected a whole number >= 1"):
    config_lib.apply_overrides(config, ["train.batch_size=0"])  # the plan command validates nothing after this


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_flag_and_file_problems_are_one_line_and_exit_2(script, tmp_path):
  def one_line(*args):
    result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    return lines[0]

  work = f"--workdir={tmp_path / 'run'}"
  line = one_line("--config", "configs/tiny.py", work, "--config.train.steps=50")
  assert line.startswith("error: --config.train.steps=50: config.train has no field 'steps' (it has: b1, b2")
  assert one_line("--config", "configs/nope.py", work).startswith("error: configs/nope.py: no such config file")
  (tmp_path / "broken.py").write_text("def get_config(preset=None):\n  return dict(\n")
  line = one_line("--config", str(tmp_path / "broken.py"), work)
  assert line.startswith(f"error: {tmp_path / 'broken.py'}:2: syntax error")
  (tmp_path / "file").write_text("")
  assert one_line("--config", "configs/tiny.py", f"--workdir={tmp_path / 'file'}") == \
    f"error: --workdir {tmp_path / 'file'}: is a file, not a directory"  # fmt: skip
  missing = tmp_path / "missing.jsonl"
  field = "train.data_path" if script == "train.py" else "eval.path"
  assert one_line("--config", "configs/tiny.py", work, f"--config.{field}={missing}") == \
    f"error: config.{field}: '{missing}': no such file or directory"  # fmt: skip
  assert one_line("--config", "configs/tiny.py", work, "--config.train.batch_size=0") == \
    "error: config.train.batch_size: 0; expected a whole number >= 1"  # fmt: skip
  assert one_line("--config", "configs/tiny.py", work, "--config.train.checkpoint_every=0").startswith(
    "error: config.train.checkpoint_every: 0")
  assert one_line("--config", "configs/tiny.py", work, "--config.eval.batch_size=0").startswith(
    "error: config.eval.batch_size: 0")
  assert not (tmp_path / "run").exists()  # nothing ran


def test_plan_and_analyses_share_the_checks(tmp_path):
  (tmp_path / "broken.py").write_text("def get_config(:\n")
  for module in ("rmas_jax.plan", "rmas_jax.analysis.complexity"):
    for args, expected in ((["--config", str(tmp_path / "broken.py")], f"error: {tmp_path / 'broken.py'}:1: syntax"),
                           (["--config", "configs/tiny.py", "--set", "train.batch_size=0"],
                            "error: config.train.batch_size: 0; expected")):  # fmt: skip
      result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                              timeout=300)  # fmt: skip
      lines = result.stderr.strip().splitlines()
      assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(expected), (module, result.stderr)
