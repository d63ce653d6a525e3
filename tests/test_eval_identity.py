"""Evaluations that must never mix, on tiny agents: every result and partial file carries what it measured (data,
task and field map, method settings, links), results of different data never share a file, and a resume or a
finished result with a different identity is refused in one line. Also: local files take `config.task` and
`eval.fields`, too-long prompts are skipped questions, a torn last line of a partial file is dropped."""

import json
import os

import jax
import pytest

from rmas_jax.config_lib import load_config
from rmas_jax.evaluation import runner
from rmas_jax.evaluation.identity import (
  IdentityMismatchError,
  check_same,
  fresh_link_digest,
  link_digest,
  name_key,
)
from rmas_jax.evaluation.runner import eval_examples, evaluate
from rmas_jax.patterns.from_config import load_system

CONFIG = "configs/tiny.py:distillation"


@pytest.fixture(scope="module")
def base():
  config = load_config(CONFIG)
  config.eval.limit = 0
  config.eval.batch_size = 2
  config.eval.agent_tokens = 8
  config.generation.max_new_tokens = 8
  return config


@pytest.fixture(scope="module")
def loaded(base):
  return load_system(base, progress=False)


def _config(base, **eval_settings):
  config = base.copy_and_resolve_references()
  config.eval.update(eval_settings)
  return config


def _write(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _arith(tag: str, n: int = 4):
  return [{"question": f"{tag}: what is {i} + {i}?", "answer": str(2 * i)} for i in range(n)]


class Stop(Exception):
  """Stands for a kill: raised in place of running a batch."""


def _stop_after(monkeypatch, batches: int):
  """Lets `batches` batches run, then stops the evaluation; returns a function that lets it run again."""
  real = runner._run_batch
  calls = []

  def run(*args, **kwargs):
    if len(calls) == batches:
      raise Stop
    calls.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(runner, "_run_batch", run)
  return lambda: monkeypatch.setattr(runner, "_run_batch", real)


def _answers(monkeypatch, text: str, seen: list | None = None):
  """Every question gets `text` as its output (scoring and bookkeeping without running the agents)."""

  def run(method, loaded, config, batch, rounds, task):
    if seen is not None:
      seen.append(task)
    return [[text] for _ in batch], [1] * len(batch)

  monkeypatch.setattr(runner, "_run_batch", run)


def _save_links(config, system, workdir, step: int, shift: float):
  """A checkpoint at `step` whose links are the system's shifted by `shift`, as training would leave one."""
  from rmas_jax.sharding.placement import init_opt_state
  from rmas_jax.training.checkpoints import CheckpointStore
  from rmas_jax.training.optimizer import split_links, stage_optimizer
  from rmas_jax.training.trainer import StagePlan, run_fingerprint

  t = config.train
  _, links, _ = split_links(system)
  links = jax.tree.map(lambda x: x + shift, links)
  plan = StagePlan(t.inner_steps, t.outer_steps)
  stage = plan.stage(step - 1)
  opt_state = init_opt_state(stage_optimizer(stage, t, plan.steps_in(stage)), links, None)
  directory = os.path.join(workdir, "checkpoints")
  with CheckpointStore(directory, fingerprint=run_fingerprint(config), keep=t.keep) as store:
    assert store.save(step, links, opt_state, {"data_position": step * t.batch_size, "stage": stage})


def test_files_with_the_same_basename_never_share_a_result(base, loaded, tmp_path, monkeypatch):
  first = _write(tmp_path / "a" / "samples.jsonl", _arith("first"))
  second = _write(tmp_path / "b" / "samples.jsonl", _arith("second"))
  work = str(tmp_path / "run")
  resume = _stop_after(monkeypatch, 1)
  with pytest.raises(Stop):
    evaluate(_config(base, dataset=first), work, loaded=loaded, progress=False)
  resume()
  # The second file's evaluation holds only its own questions (it used to take 2 records of the first's).
  other = evaluate(_config(base, dataset=second), work, loaded=loaded, progress=False)
  assert [r["question"] for r in other["records"]] == [r["question"] for r in _arith("second")]
  assert other["resumed_from"] == 0 and other["identity"]["dataset"]["path"] == os.path.abspath(second)
  # The first one's records were kept, not lost or overwritten: resuming it computes only the rest.
  again = evaluate(_config(base, dataset=first), work, loaded=loaded, progress=False)
  assert again["resumed_from"] == 2 and [r["question"] for r in again["records"]] == [
    r["question"] for r in _arith("first")
  ]
  names = sorted(p.name for p in (tmp_path / "run" / "eval").iterdir())
  assert len(names) == 2 and all(n.startswith("samples-recursive_mas-r2-") and n.endswith(".json") for n in names)


def test_links_changed_between_kill_and_resume_are_refused(base, tmp_path, monkeypatch, capsys):
  config = _config(base, dataset=_write(tmp_path / "q.jsonl", _arith("q")))
  own = load_system(config, progress=False)  # restoring links writes into it
  work = str(tmp_path / "run")
  resume = _stop_after(monkeypatch, 1)
  with pytest.raises(Stop):
    evaluate(config, work, progress=False, loaded=own)
  resume()
  [partial] = (tmp_path / "run" / "eval").glob("*.partial.jsonl")
  kept = partial.read_text()
  # Training wrote links between the kill and the resume: the fresh links' 2 records must not join trained ones.
  _save_links(config, own.system, work, step=1, shift=0.01)
  with pytest.raises(IdentityMismatchError) as err:
    evaluate(config, work, progress=False, loaded=own)
  message = str(err.value)
  assert message.startswith(f"{partial} was made by a different evaluation: ") and "\n" not in message
  assert 'links.source: "fresh" there, "checkpoint" now' in message and message.endswith("use another --workdir")
  assert partial.read_text() == kept  # nothing lost
  # Moved away, the evaluation runs with the trained links and says so.
  partial.unlink()
  trained = evaluate(config, work, progress=False, loaded=own)
  assert trained["links"].startswith("trained (") and trained["links"].endswith("checkpoint step 1)")
  assert trained["identity"]["links"]["step"] == 1 and trained["identity"]["links"]["sha256"] == link_digest(own.system)
  # A later checkpoint: the finished result of step 1 is not handed back as if it measured these links.
  _save_links(config, own.system, work, step=2, shift=0.01)
  with pytest.raises(IdentityMismatchError, match=r"\.json was made by a different evaluation: links.sha256: .*"
                                                   r"links.step: 1 there, 2 now"):  # fmt: skip
    evaluate(config, work, progress=False, loaded=own)
  capsys.readouterr()


def test_config_task_and_fields_apply_to_local_files(base, loaded, tmp_path, monkeypatch):
  rows = [
    {"question": "Loss of cells is called?\na) Hyperplasia\nb) Hypertrophy\nc) Atrophy\nd) Dysplasia",
     "answer": "c) Atrophy"},
    {"question": "Which organ makes insulin?\na) Liver\nb) Pancreas\nc) Spleen\nd) Lung", "answer": "b) Pancreas"},
  ]  # fmt: skip
  config = _config(base, dataset=_write(tmp_path / "mc.jsonl", rows))
  config.task = "choice"
  seen = []
  _answers(monkeypatch, "The answer is \\boxed{C}.", seen)
  result = evaluate(config, str(tmp_path / "run"), loaded=loaded, progress=False)
  # Scored as multiple choice, the option letter being the gold (local files used to be scored as math always).
  assert set(seen) == {"choice"} and result["task"] == "choice" and result["identity"]["task"] == "choice"
  assert [(r["gold"], r["extracted"], r["correct"]) for r in result["records"]] == [("C", "C", True), ("B", "C", False)]
  # The same rows as chat messages with an OpenAI-evals gold, through the field map.
  chat = [{"input": [{"role": "user", "content": r["question"]}], "ideal": r["answer"]} for r in rows]
  config = _config(base, dataset=_write(tmp_path / "chat" / "samples.jsonl", chat),
                   fields={"question": "input[-1].content", "answer": "ideal"})  # fmt: skip
  config.task = "choice"
  mapped = evaluate(config, str(tmp_path / "run"), loaded=loaded, progress=False)
  assert [r["correct"] for r in mapped["records"]] == [True, False]
  assert mapped["identity"]["fields"] == {"question": "input[-1].content", "answer": "ideal"}


def test_default_split_takes_a_single_file(base, tmp_path):
  config = _config(base, dataset=_write(tmp_path / "one.jsonl", _arith("one", 2)))
  assert config.eval.split == ""  # the default is the dataset's own split, and a single file has none
  examples, source = eval_examples(config)
  assert len(examples) == 2 and source["path"] == str(tmp_path / "one.jsonl") and len(source["sha256"]) == 64
  config.eval.split = "validation"  # asked for explicitly, a split of a single file is still an error
  with pytest.raises(ValueError, match="a single file has no splits"):
    eval_examples(config)


def test_local_copies_under_a_registry_name_keep_their_own_results(base, loaded, tmp_path, monkeypatch):
  def medqa(tag):
    return [{"question": f"{tag}: drug of choice {i}?", "options": {"A": "Aspirin", "B": "Heparin"},
             "answer_idx": "B"} for i in range(2)]  # fmt: skip

  _answers(monkeypatch, "\\boxed{B}")
  work = str(tmp_path / "run")
  first = evaluate(_config(base, dataset="medqa", path=_write(tmp_path / "a" / "medqa.jsonl", medqa("first"))), work,
                   loaded=loaded, progress=False)  # fmt: skip
  second = evaluate(_config(base, dataset="medqa", path=_write(tmp_path / "b" / "medqa.jsonl", medqa("second"))),
                    work, loaded=loaded, progress=False)  # fmt: skip
  # The second copy gets its own result (it used to be handed the first one's, with exit 0).
  assert "read_back" not in second and all(r["question"].startswith("second:") for r in second["records"])
  assert first["identity"]["dataset"]["registry"] == "medqa" and first["task"] == "choice"
  assert len(list((tmp_path / "run" / "eval").glob("medqa-recursive_mas-r2-*.json"))) == 2


def test_a_finished_result_of_other_settings_is_refused(base, loaded, tmp_path, monkeypatch):
  _answers(monkeypatch, "\\boxed{0}")
  config = _config(base, dataset=_write(tmp_path / "q.jsonl", _arith("q", 2)))
  evaluate(config, str(tmp_path / "run"), loaded=loaded, progress=False)
  assert evaluate(config, str(tmp_path / "run"), loaded=loaded, progress=False)["read_back"]
  config.generation.max_new_tokens = 4
  with pytest.raises(IdentityMismatchError, match="method.generation.max_new_tokens: 8 there, 4 now; delete it"):
    evaluate(config, str(tmp_path / "run"), loaded=loaded, progress=False)
  config.generation.max_new_tokens = 8
  config.eval.batch_size = 1  # batching changes no answer: the finished result still answers this
  assert evaluate(config, str(tmp_path / "run"), loaded=loaded, progress=False)["read_back"]


def test_torn_last_line_is_dropped_and_damage_elsewhere_named(base, loaded, tmp_path, monkeypatch, capsys):
  config = _config(base, dataset=_write(tmp_path / "q.jsonl", _arith("q")))
  work = str(tmp_path / "run")
  resume = _stop_after(monkeypatch, 1)
  with pytest.raises(Stop):
    evaluate(config, work, loaded=loaded, progress=False)
  resume()
  [partial] = (tmp_path / "run" / "eval").glob("*.partial.jsonl")
  intact = partial.read_bytes()
  partial.write_bytes(intact + b'{"id": "q/2", "quest')  # killed while writing a record
  result = evaluate(config, work, loaded=loaded, progress=False)
  assert result["n"] == 4 and result["resumed_from"] == 2
  assert f"{partial}:4: dropped the last line (20 bytes)" in capsys.readouterr().err
  # A damaged line that is not the last is not a torn write: one line naming it, and nothing is changed.
  os.unlink(result_path := next((tmp_path / "run" / "eval").glob("*.json")))
  lines = intact.splitlines(keepends=True)
  partial.write_bytes(lines[0] + b"garbage\n" + lines[1])
  with pytest.raises(ValueError, match=rf"{partial}:2: not an evaluation record; the partial file is damaged"):
    evaluate(config, work, loaded=loaded, progress=False)
  assert partial.read_bytes() == lines[0] + b"garbage\n" + lines[1] and not result_path.exists()


def test_prompts_too_long_are_skipped_questions(base, loaded, tmp_path, capsys):
  rows = [
    {"question": "What is 1 + 1?", "answer": "2"},
    {"question": "word " * 60_000, "answer": "1"},  # 300 k characters: too long by the character count alone
    {"question": "word " * 1_200, "answer": "1"},  # 6000 tokens: too long once tokenised
  ]
  config = _config(base, dataset=_write(tmp_path / "long.jsonl", rows))
  result = evaluate(config, str(tmp_path / "run"), loaded=loaded, progress=False)
  first, huge, long = result["records"]
  assert (result["n"], result["answered"], result["skipped"]) == (3, 1, 2)
  assert first["skipped"] is None and first["output"] is not None
  assert "a question of 300000 characters has at least" in huge["skipped"] and "context of 4096" in huge["skipped"]
  assert len(huge["question"]) < 2100 and huge["question"].endswith("[300000 characters]")
  assert "prompt has" in long["skipped"] and not long["correct"] and long["tokens"] == 0
  assert result["accuracy"] == first["correct"] / 3  # skipped questions count as wrong
  assert "2 of 3 questions skipped" in capsys.readouterr().err
  config.eval.max_prompt_tokens = 20
  capped = evaluate(config, str(tmp_path / "capped"), loaded=loaded, progress=False)
  assert capped["skipped"] == 3 and "eval.max_prompt_tokens=20" in capped["records"][0]["skipped"]
  assert capped["decoded_tokens_per_question"] is None


def test_checkpoint_choice_reaches_restore_links(base, loaded, tmp_path, monkeypatch):
  import rmas_jax.training.trainer as trainer

  _answers(monkeypatch, "\\boxed{0}")
  config = _config(base, dataset=_write(tmp_path / "q.jsonl", _arith("q", 2)), checkpoint="best")
  asked = []

  def restore(config, system, workdir, which="latest"):
    asked.append(which)
    return None

  monkeypatch.setattr(trainer, "restore_links", restore)
  result = evaluate(config, str(tmp_path / "run"), loaded=loaded, progress=False)
  assert asked == ["best"] and result["links"].startswith("untrained")
  monkeypatch.setattr(trainer, "restore_links", lambda config, system, workdir: None)  # one without a choice
  with pytest.raises(ValueError, match="config.eval.checkpoint: 'best'; this version's training keeps no best"):
    evaluate(config, str(tmp_path / "other"), loaded=loaded, progress=False)


def test_identity_parts(base, loaded):
  # Link hashes see every bit; a freshly built system's links hash like the config's fresh links.
  sha = link_digest(loaded.system)
  assert sha == fresh_link_digest(base, loaded.system) == link_digest(load_system(base, progress=False).system)
  other = base.copy_and_resolve_references()
  other.seed = 1
  assert fresh_link_digest(other, loaded.system) != sha
  # The path of the same bytes is recorded but neither named nor compared.
  one = dict(dataset=dict(path="/a/samples.jsonl", sha256="x"), task="math", fields={}, links=dict(dir="/a"))
  moved = dict(one, dataset=dict(path="/b/samples.jsonl", sha256="x"), links=dict(dir="/b"))
  assert name_key(one) == name_key(moved)
  check_same(one, moved, "f")
  assert name_key(one) != name_key(dict(one, task="choice"))
  with pytest.raises(IdentityMismatchError, match="f: no evaluation identity"):
    check_same(None, one, "f")


def test_read_partial_keeps_a_whole_last_record_and_starts_new_files(tmp_path):
  from rmas_jax.evaluation.runner import read_partial

  identity = {"dataset": {"sha256": "x"}, "task": "math"}
  path = tmp_path / "r.partial.jsonl"
  assert read_partial(str(path), identity) == [] and json.loads(path.read_text()) == {"identity": identity}
  # Killed after a record but before its newline: the record is whole, so it is kept and the line closed.
  path.write_text(json.dumps({"identity": identity}) + "\n" + json.dumps({"id": "a", "correct": True}))
  assert read_partial(str(path), identity) == [{"id": "a", "correct": True}]
  assert path.read_text().endswith('"correct": true}\n')
  with pytest.raises(IdentityMismatchError, match='task: "math" there, "choice" now'):
    read_partial(str(path), dict(identity, task="choice"))
