"""`python -m rmas_jax ask`: the sequential system of the three real PyPI agents answers end to end."""

import json
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
