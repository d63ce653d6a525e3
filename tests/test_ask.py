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
  assert record["latent_steps"] == 5 * 4
  assert 1 <= record["decoded_tokens"] <= 12
  assert record["rounds_s"] > 0 and record["decode_s"] > 0


def test_ask_bad_input_is_one_line():
  result = ask("--rounds", "0")
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr.strip().splitlines() == ["error: --rounds, --latent-steps and --max-new-tokens must be >= 1"]
