"""`eval.py` on tiny agents: the result file holds what it should, an interrupted evaluation resumes from its
records, a finished result is never overwritten, and every method runs."""

import json
import os
import subprocess
import sys

import pytest

from rmas_jax.config_lib import load_config
from rmas_jax.evaluation.runner import evaluate
from rmas_jax.patterns.from_config import load_system

CONFIG = "configs/tiny.py:distillation"


@pytest.fixture(scope="module")
def setup():
  config = load_config(CONFIG)
  config.eval.limit = 3
  config.eval.batch_size = 2
  config.eval.agent_tokens = 8
  config.generation.max_new_tokens = 8
  return config, load_system(config, progress=False)


@pytest.mark.parametrize("method", ["recursive_mas", "single", "text_mas", "recursive_text_mas", "moa"])
def test_methods_write_their_result(setup, tmp_path, method):
  config, loaded = setup
  config = config.copy_and_resolve_references()
  config.eval.method = method
  result = evaluate(config, str(tmp_path), loaded=loaded, progress=False)
  rounds = 1 if method in ("single", "text_mas") else config.inference.rounds
  path = tmp_path / "eval" / f"gsm_symbolic-{method}-r{rounds}.json"
  stored = json.loads(path.read_text())
  assert stored["n"] == 3 and len(stored["records"]) == 3 and stored["accuracy"] == result["accuracy"]
  assert {"question", "gold", "output", "extracted", "correct", "tokens", "seconds"} <= set(stored["records"][0])
  assert stored["versions"]["jax"] and stored["config"]["eval"]["method"] == method
  # Tokens other agents may write: text rounds 8 per thinking agent and round; moa 8 per agent and layer.
  per_agent = {"recursive_text_mas": 8 * 3, "text_mas": 8, "moa": 8 * 2 * rounds}.get(method, 0)
  assert 1 <= stored["decoded_tokens_per_question"] <= 8 + per_agent
  if method == "recursive_mas":
    assert stored["links"].startswith("untrained")


def test_resume_and_never_overwrite(setup, tmp_path):
  config, loaded = setup
  first = evaluate(config, str(tmp_path / "a"), loaded=loaded, progress=False)
  # Interrupted after one record: that record (here made recognisable) is kept, the rest are computed.
  partial = tmp_path / "b" / "eval" / "gsm_symbolic-recursive_mas-r2.partial.jsonl"
  partial.parent.mkdir(parents=True)
  kept = dict(first["records"][0], output="KEPT", correct=True, pass_at_k=True)
  partial.write_text(json.dumps(kept) + "\n")
  resumed = evaluate(config, str(tmp_path / "b"), loaded=loaded, progress=False)
  assert resumed["records"][0]["output"] == "KEPT"
  assert [r["output"] for r in resumed["records"][1:]] == [r["output"] for r in first["records"][1:]]
  assert not partial.exists()
  final = tmp_path / "b" / "eval" / "gsm_symbolic-recursive_mas-r2.json"
  before = final.read_text()
  again = evaluate(config, str(tmp_path / "b"), loaded=loaded, progress=False)
  assert final.read_text() == before and again["records"][0]["output"] == "KEPT"


def test_eval_command_bad_input_is_one_line(tmp_path):
  cmd = [sys.executable, "eval.py", f"--config={CONFIG}", f"--workdir={tmp_path}", "--config.eval.method=nope"]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: config.eval.method: 'nope'; expected one of")


def test_report_table_hand_checked(tmp_path):
  from rmas_jax import report

  (tmp_path / "eval").mkdir()
  common = dict(dataset="gsm_symbolic", rounds=2, n=10, links="")
  for method, acc, tokens, seconds in (("recursive_text_mas", 0.5, 400.0, 4.0), ("recursive_mas", 0.6, 100.0, 2.0)):
    result = dict(common, method=method, accuracy=acc, decoded_tokens_per_question=tokens, seconds_per_question=seconds)
    (tmp_path / "eval" / f"gsm_symbolic-{method}-r2.json").write_text(json.dumps(result))
  assert report.main([str(tmp_path)]) == 0
  table = (tmp_path / "eval" / "report.md").read_text()
  ours = next(line for line in table.splitlines() if "| recursive_mas |" in line)
  assert ours.endswith("| 0.600 | 100.0 | 2.00 | 2.00× | 75.0% |")
  assert (tmp_path / "eval" / "report-seconds.png").exists()
  assert report.main([str(tmp_path / "nothing")]) == 2
