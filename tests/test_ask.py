"""`python -m rmas_jax ask`: the sequential system of the three real PyPI agents answers end to end; on tiny agents,
bad values and too long questions are one line, and `--workdir` answers with a training run's links and says so."""

import json
import os
import shutil
import subprocess
import sys

import pytest

QUESTION = "Tom has 3 apples and buys 5 more. How many apples does he have?"


def ask(*extra):
  cmd = [sys.executable, "-m", "rmas_jax", "ask", "--config", "configs/sequential.py", "--question", QUESTION, *extra]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_ask_answers_and_accounts_for_itself():
  result = ask("--rounds", "2", "--latent-steps", "4", "--max-new-tokens", "12")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip()
  record = json.loads(result.stderr.strip().splitlines()[-1])
  # round 1: planner, critic and solver think; round 2: planner and critic think, the solver writes
  assert record["latent_steps"] == {"round 1": {"planner": 4, "critic": 4, "solver": 4}, "round 2": {"planner": 4,
                                                                                                 "critic": 4}}
  assert record["latent_steps_total"] == 5 * 4
  assert 1 <= record["decoded_tokens"]["round 2"]["solver"] <= 12
  assert record["wall_s"]["latent_rounds"] > 0 and record["wall_s"]["decode"] > 0 and record["compile_s"] > 0


def test_ask_bad_input_is_one_line():
  result = ask("--rounds", "0")
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr.strip().splitlines() == ["error: --rounds must be >= 1, got 0"]


# Tiny agents (configs/tiny.py): bad values, long questions and trained links.

TINY_TRAIN = ("train.inner_steps=2", "train.outer_steps=0")  # the run's design: ask must name the same to read it


def ask_tiny(*extra, question="What is 2 + 3?"):
  cmd = [sys.executable, "-m", "rmas_jax", "ask", "--config", "configs/tiny.py", "--question", question,
         "--max-new-tokens", "4", "--latent-steps", "2", "--rounds", "1", *extra]  # fmt: skip
  return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def _one_error_line(result) -> str:
  assert result.returncode == 2 and result.stdout == "", result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), lines[-20:]
  return lines[0]


@pytest.mark.parametrize(("overrides", "expected"), [
  (["generation.greedy=False", "generation.temperature=-1.0"], "config.generation.temperature: -1.0; expected"),
  (["generation.greedy=True", "generation.temperature=-0.5"], "config.generation.temperature: -0.5; expected"),
  (["generation.top_p=5"], "config.generation.top_p: 5.0; expected a number in (0, 1]"),
  (["generation.top_k=-1"], "config.generation.top_k: -1; expected a whole number >= 0"),
  (["generation.steps=3"], "config.generation has no field 'steps'"),
])  # fmt: skip
def test_ask_edge_values_are_one_line(overrides, expected):
  line = _one_error_line(ask_tiny(*[f"--set={o}" for o in overrides]))
  assert expected in line


def test_ask_a_100kb_question_is_one_line_not_an_allocation():
  line = _one_error_line(ask_tiny(question="How many apples? " * 6000))  # 102 KB
  assert line.startswith("error: the question is too long: ") and "context is 4096" in line


def test_ask_workdir_errors_come_before_any_model_loads(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("")
  assert _one_error_line(ask_tiny("--workdir", str(a_file))) == f"error: --workdir {a_file}: is a file, not a directory"
  line = _one_error_line(ask_tiny("--workdir", str(tmp_path)))
  assert line.startswith(f"error: --workdir {tmp_path}: holds no checkpoints/")
  assert _one_error_line(ask_tiny("--checkpoint", "best")).startswith("error: --checkpoint needs --workdir")
  (tmp_path / "checkpoints").mkdir()
  line = _one_error_line(ask_tiny("--workdir", str(tmp_path), "--checkpoint", "best"))
  assert line.startswith(f"error: --workdir {tmp_path}: holds no checkpoints_best/")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny run of two inner steps, a checkpoint after each."""
  workdir = tmp_path_factory.mktemp("run") / "run"
  cmd = [sys.executable, "train.py", "--config", "configs/tiny.py", f"--workdir={workdir}",
         *[f"--config.{o}" for o in TINY_TRAIN], "--config.train.checkpoint_every=1", "--config.train.examples=8"]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2", "rmas_checkpoint_run.json"]
  return workdir


def test_ask_workdir_answers_with_the_trained_links_and_says_so(trained):
  result = ask_tiny("--workdir", str(trained), *[f"--set={o}" for o in TINY_TRAIN])
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"note: trained links: step 2 (latest) of {trained / 'checkpoints'}" in result.stderr
  assert "not implemented" not in result.stderr and "freshly initialised" not in result.stderr
  json.loads(result.stderr.strip().splitlines()[-1])  # the accounting line still closes stderr


def test_ask_workdir_passes_over_a_damaged_latest_and_names_the_links_source(trained, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  chunk = max((p for p in (workdir / "checkpoints" / "2" / "links").rglob("*") if p.parent.name == "d"),
              key=lambda p: p.stat().st_size)  # fmt: skip
  data = bytearray(chunk.read_bytes())
  data[len(data) // 2 : len(data) // 2 + 8] = b"\x7f" * 8  # loads as other numbers without the content hashes
  chunk.write_bytes(bytes(data))
  (workdir / "links_source.json").write_text(json.dumps({"kind": "release", "outer": "repos/outer", "task": "math"}))
  result = ask_tiny("--workdir", str(workdir), *[f"--set={o}" for o in TINY_TRAIN])
  assert result.returncode == 0, result.stderr[-3000:]
  damaged = [line for line in result.stderr.splitlines() if "damaged" in line]
  assert len(damaged) == 1 and "step 2 is damaged" in damaged[0] and "using step 1" in damaged[0]
  assert (f"note: trained links: step 1 (latest) of {workdir / 'checkpoints'}; from the release (outer repos/outer, "
          "task math)") in result.stderr  # fmt: skip
  assert (workdir / "checkpoints" / "2").is_dir()  # a reader moves nothing aside
