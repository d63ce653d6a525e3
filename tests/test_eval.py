"""`eval.py` on tiny agents: the result file holds what it should, an interrupted evaluation resumes from its
records, a finished result is never overwritten, and every method runs. (What keeps results of different
evaluations apart is in `test_eval_identity.py`.)"""

import json
import os
import re
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
  [path] = (tmp_path / "eval").glob(f"gsm_symbolic-{method}-r{rounds}-*.json")
  stored = json.loads(path.read_text())
  assert stored["n"] == 3 and len(stored["records"]) == 3 and stored["accuracy"] == result["accuracy"]
  assert stored["task"] == "math" and stored["skipped"] == 0 and stored["identity"]["method"]["name"] == method
  assert stored["identity"]["links"]["source"] == ("fresh" if method == "recursive_mas" else "not used")
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
  [done] = (tmp_path / "a" / "eval").glob("gsm_symbolic-recursive_mas-r2-*.json")
  # Interrupted after one record: that record (here made recognisable) is kept, the rest are computed. The partial
  # file opens with the identity of the evaluation that wrote it, the same one here.
  partial = tmp_path / "b" / "eval" / done.name.replace(".json", ".partial.jsonl")
  partial.parent.mkdir(parents=True)
  kept = dict(first["records"][0], output="KEPT", correct=True, pass_at_k=True)
  partial.write_text(json.dumps({"identity": first["identity"]}) + "\n" + json.dumps(kept) + "\n")
  resumed = evaluate(config, str(tmp_path / "b"), loaded=loaded, progress=False)
  assert resumed["records"][0]["output"] == "KEPT" and resumed["resumed_from"] == 1
  assert [r["output"] for r in resumed["records"][1:]] == [r["output"] for r in first["records"][1:]]
  assert not partial.exists()
  final = tmp_path / "b" / "eval" / done.name
  before = final.read_text()
  again = evaluate(config, str(tmp_path / "b"), loaded=loaded, progress=False)
  assert final.read_text() == before and again["records"][0]["output"] == "KEPT" and again["read_back"]


@pytest.mark.parametrize(
  "flag, message",
  [
    ("--config.eval.method=nope", r"error: config.eval.method: 'nope'; expected one of"),
    ("--config.eval.batch_size=0", r"error: config.eval.batch_size: 0; expected"),
    ("--config.eval.checkpoint=newest", r"error: config.eval.checkpoint: 'newest'; expected one of"),
    ("--config.eval.dataset=missing/samples.jsonl", r"error: .*missing/samples.jsonl'?: no such file"),
  ],
)
def test_eval_command_bad_input_is_one_line(tmp_path, flag, message):
  cmd = [sys.executable, "eval.py", f"--config={CONFIG}", f"--workdir={tmp_path}", flag]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
  assert result.returncode == 2, result.stderr[-2000:]
  assert re.match(message, result.stderr.strip().splitlines()[-1])


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
  # 6 of 10 right: Wilson 95 % (0.6 + 0.192) / 1.384 ± 1.96 · sqrt(0.024 + 0.0096) / 1.384 = 0.313–0.832
  assert ours.endswith("| 0.600 | 0.313–0.832 | 100.0 | 2.00 | 2.00× | 75.0% |")
  assert (tmp_path / "eval" / "report-seconds.png").exists()
  assert report.main([str(tmp_path / "nothing")]) == 2


def test_declared_prompts_see_every_record_field(tmp_path, monkeypatch):
  from rmas_jax.evaluation import runner
  from rmas_jax.evaluation.datasets import Example
  from rmas_jax.prompts.records import prompt_record

  config = load_config("configs/tiny.py:custom")
  config.prompts.drafter.first = "Subject: {subject}\nDraft a short solution outline.\n\nProblem:\n{question}"
  rows = [{"question": "What is 2 + 2?", "answer": "4", "subject": "arithmetic"}]
  (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  config.eval.update(dataset=str(tmp_path / "q.jsonl"), limit=0)
  config.generation.max_new_tokens = 4
  loaded = load_system(config, progress=False)
  asked = []
  real_ask = runner.ask

  def ask(system, tokenizers, questions, **kw):
    asked.extend(questions)
    return real_ask(system, tokenizers, questions, **kw)

  monkeypatch.setattr(runner, "ask", ask)
  result = evaluate(config, str(tmp_path / "run"), loaded=loaded, progress=False)
  # The records themselves reach the round loop, so the drafter's prompt holds the row's own `subject`.
  assert result["n"] == 1 and [type(x) for x in asked] == [Example]
  prompt = loaded.prompts["drafter"](prompt_record(asked[0]), 1, 2, "math")
  assert prompt.user.startswith("Subject: arithmetic\n")
  # A record without the field is one line naming the record and the field, before any batch runs.
  (tmp_path / "bare.jsonl").write_text(json.dumps({"question": "What is 3 + 3?", "answer": "6"}) + "\n")
  config.eval.dataset = str(tmp_path / "bare.jsonl")
  with pytest.raises(ValueError, match=r"record bare/0: the prompt of role 'drafter' names \{subject\}") as err:
    evaluate(config, str(tmp_path / "run"), loaded=loaded, progress=False)
  assert "\n" not in str(err.value) and len(asked) == 1


def test_result_files_are_readable_and_never_replaced(tmp_path):
  import stat

  from rmas_jax.results import write_json_new

  path = tmp_path / "r.json"
  mask = os.umask(0o022)
  try:
    write_json_new(str(path), {"a": 1})
  finally:
    os.umask(mask)
  assert stat.S_IMODE(path.stat().st_mode) == 0o644  # mkstemp's 0600 used to stay on result files
  with pytest.raises(FileExistsError):
    write_json_new(str(path), {"a": 2})
  assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["r.json"]
