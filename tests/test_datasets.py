"""Example loading: gsm_symbolic splits, local files with field maps, benchmark conversions, hub errors."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from rmas_jax.evaluation import datasets as ds
from rmas_jax.evaluation.datasets import DatasetUnavailableError, Example, gsm_symbolic_bucket, load_examples


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _write_parquet(path, rows):
  import pyarrow as pa
  import pyarrow.parquet as pq

  pq.write_table(pa.Table.from_pylist(rows), str(path))
  return str(path)


def test_gsm_symbolic_splits_are_disjoint_and_deterministic():
  train = load_examples("gsm_symbolic", split="train", limit=400)
  test = load_examples("gsm_symbolic", split="test", limit=200)
  assert len(train) == 400 and len(test) == 200
  assert not {e.question for e in train} & {e.question for e in test}
  assert {gsm_symbolic_bucket(e.question) for e in train} == {"train"}
  assert {gsm_symbolic_bucket(e.question) for e in test} == {"test"}
  assert len({e.question for e in train}) == len(train)
  assert load_examples("gsm_symbolic", split="test", limit=200) == test
  # A smaller limit is a prefix of a larger one; another seed is another set.
  assert load_examples("gsm_symbolic", split="test", limit=20) == test[:20]
  other = load_examples("gsm_symbolic", split="test", limit=20, seed=1)
  assert not {e.question for e in other} & {e.question for e in test[:20]}
  e = train[0]
  assert e.task == "math" and e.id.startswith("gsm_symbolic/train/0/")
  assert "####" in e.meta["answer_cot"] and e.meta["answer_cot"].rstrip().endswith(e.answer)
  assert all(not x.answer.startswith("-") for x in train + test)


def test_gsm_symbolic_rejects_bad_split():
  with pytest.raises(ValueError, match="split='validation'"):
    load_examples("gsm_symbolic", split="validation")


def test_local_jsonl_with_field_map(tmp_path):
  rows = [{"problem": f"What is {i}+{i}?", "solution": str(2 * i), "uid": f"q{i}", "level": i} for i in range(5)]
  path = _write_jsonl(tmp_path / "mine.jsonl", rows)
  examples = load_examples(path, fields={"question": "problem", "answer": "solution", "id": "uid"}, limit=3)
  assert [e.id for e in examples] == ["mine/q0", "mine/q1", "mine/q2"]
  # Every field of the record rides along in meta, mapped ones included (prompts may name any of them).
  assert examples[2] == Example("mine/q2", "What is 2+2?", "4", "math", rows[2])
  named = load_examples("arith", path=path, fields={"question": "problem", "answer": "solution"}, task="qa")
  assert named[0].id == "arith/0" and named[0].task == "qa"


def test_local_parquet_with_options_becomes_choice(tmp_path):
  rows = [
    {"q": "Largest planet?", "opts": {"A": "Mars", "B": "Jupiter", "C": "Venus", "D": "Earth"}, "gold": "B"},
    {"q": "Smallest planet?", "opts": {"A": "Mercury", "B": "Jupiter", "C": "Venus", "D": "Earth"}, "gold": "A"},
  ]
  path = _write_parquet(tmp_path / "mc.parquet", rows)
  examples = load_examples(path, fields={"question": "q", "answer": "gold", "options": "opts"}, task="choice")
  assert examples[0].answer == "B" and examples[0].task == "choice"
  assert examples[0].question == (
    "Largest planet?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth\n\nChoose the correct option (A/B/C/D)."
  )
  assert examples[1].meta["letters"] == "ABCD"
  assert len(load_examples(path, fields={"question": "q", "answer": "gold", "options": "opts"}, limit=1)) == 1


def test_local_json_answer_text_maps_to_letter(tmp_path):
  # The layout of LatentMAS data/medqa.json: a list of options and the answer as option text.
  rows = [{"query": "Drug of choice?", "options": ["Aspirin", "Heparin", "Warfarin", "Insulin"], "answer": "Heparin"}]
  path = tmp_path / "medqa.json"
  path.write_text(json.dumps(rows))
  [example] = load_examples(
    "medqa", path=str(path), fields={"question": "query", "answer": "answer", "options": "options"}
  )
  assert example.answer == "B" and example.task == "choice" and example.id == "medqa/0"


def test_missing_column_names_column_file_and_columns(tmp_path):
  path = _write_jsonl(tmp_path / "x.jsonl", [{"prompt": "hi", "target": "1"}])
  with pytest.raises(ValueError) as err:
    load_examples(path)
  msg = str(err.value)
  assert "'question'" in msg and path in msg and "['prompt', 'target']" in msg and "\n" not in msg


def test_file_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.jsonl: no such file"):
    load_examples(str(tmp_path / "nope.jsonl"))
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n")
  with pytest.raises(ValueError, match="empty"):
    load_examples(str(empty))
  with pytest.raises(ValueError, match="single file has no splits"):
    load_examples(_write_jsonl(tmp_path / "one.jsonl", [{"question": "q", "answer": "a"}]), split="test")
  with pytest.raises(ValueError, match="unknown dataset 'mystery'"):
    load_examples("mystery")
  with pytest.raises(ValueError, match="champ ships in a PyPI package"):
    load_examples("champ", path="x.jsonl")
  with pytest.raises(ValueError, match="one split, 'test'"):
    load_examples("humaneval", split="train")


def test_pypi_sets():
  champ = load_examples("champ")
  assert len(champ) == 270 and {e.task for e in champ} == {"math"}
  by_id = {e.id: e for e in champ}
  # "C(10, 5), or equivalently 252" keeps the value; a closed form stays as it is.
  assert by_id["champ/P_Combinatorics_2"].answer == "252"
  assert by_id["champ/P_Combinatorics_3"].answer == "2^floor(n/2)*floor(n/2)!"
  humaneval = load_examples("humaneval", limit=5)
  assert [e.id for e in humaneval][:2] == ["humaneval/HumanEval/0", "humaneval/HumanEval/1"]
  first = humaneval[0]
  assert first.task == "code" and "def check(candidate)" in first.answer
  assert first.meta["entry_point"] == "has_close_elements" and "def has_close_elements" in first.question


def test_gpqa_local_copy_shuffles_by_id(tmp_path):
  rows = [
    {
      "Question": f"Q{i}?",
      "Correct Answer": f"right{i}",
      "Incorrect Answer 1": f"w1-{i}",
      "Incorrect Answer 2": f"w2-{i}",
      "Incorrect Answer 3": f"w3-{i}",
      "Record ID": f"rec{i}",
    }
    for i in range(12)
  ]
  path = _write_parquet(tmp_path / "gpqa.parquet", rows)
  examples = load_examples("gpqa", path=path)
  assert examples == load_examples("gpqa_diamond", path=path)
  for e in examples:
    assert e.task == "choice"
    assert e.meta["options"]["ABCD".index(e.answer)] == e.meta["correct_text"]
    assert f"{e.answer}. {e.meta['correct_text']}\n" in e.question
  assert len({e.answer for e in examples}) > 1
  assert [e.answer for e in load_examples("gpqa", path=path, seed=1)] != [e.answer for e in examples]


def test_mbppplus_local_copy(tmp_path):
  row = {
    "task_id": 2,
    "prompt": "Write a function to find the shared elements of two lists.",
    "test_list": [f"assert set(similar_elements((3, 4), ({i}, 4))) == set((4,))" for i in range(4)],
    "test": "def check(): pass",
    "code": "def similar_elements(a, b): return tuple(set(a) & set(b))",
  }
  [example] = load_examples("mbppplus", path=_write_jsonl(tmp_path / "mbpp.jsonl", [row]))
  assert example.task == "code" and example.id == "mbppplus/2" and example.answer == "def check(): pass"
  assert example.meta["fn_name"] == "similar_elements"
  assert example.question.count("\nassert set(") == 3


def test_hub_offline_gives_clear_error_quickly(monkeypatch):
  # A hub id nobody has cached, so the result does not depend on this machine's cache (conftest sets offline mode).
  spec = dataclasses.replace(ds.HUB_DATASETS["math500"], hub_id="rmas-jax-tests/no-such-dataset")
  monkeypatch.setitem(ds.HUB_DATASETS, "math500", spec)
  start = time.monotonic()
  with pytest.raises(DatasetUnavailableError) as err:
    load_examples("math500")
  assert time.monotonic() - start < 10
  msg = str(err.value)
  assert "could not be reached" in msg and "path=" in msg and "\n" not in msg


def test_hub_unreachable_fails_fast_without_offline_mode(monkeypatch):
  monkeypatch.setattr(ds, "_hub_offline", lambda: False)
  monkeypatch.setattr(ds, "_hub_endpoint", lambda: "http://127.0.0.1:9")
  for var in ds._PROXY_VARS:
    monkeypatch.delenv(var, raising=False)
  start = time.monotonic()
  with pytest.raises(DatasetUnavailableError, match="cannot connect to 127.0.0.1:9"):
    load_examples("gpqa")
  assert time.monotonic() - start < 5


# Rows shaped like OpenAI evals' medmcqa samples.jsonl: chat messages in, the option label and text as the gold.
MEDMCQA_ROWS = [
  {"input": [{"role": "system", "content": "Answer the multiple choice question."},
             {"role": "user", "content": "Loss of cells in an organ is called?\na) Hyperplasia\nb) Hypertrophy\n"
                                         "c) Atrophy\nd) Dysplasia\nAnswer:"}],
   "ideal": "c) Atrophy", "subject": {"name": "pathology"}},
  {"input": [{"role": "user", "content": "Which organ makes insulin?\n(A) Liver\n(B) Pancreas\n(C) Spleen\nAnswer:"}],
   "ideal": "(B) Pancreas", "subject": {"name": "physiology"}},
]  # fmt: skip


def test_nested_field_paths_and_labelled_choice_answers(tmp_path):
  path = _write_jsonl(tmp_path / "samples.jsonl", MEDMCQA_ROWS)
  fields = {"question": "input[-1].content", "answer": "ideal", "subject": "subject.name"}
  first, second = load_examples(path, fields=fields, task="choice")
  assert first.question.startswith("Loss of cells") and first.question.endswith("Answer:")
  assert (first.answer, first.meta["letters"], first.task) == ("C", "ABCD", "choice")
  assert (second.answer, second.meta["letters"]) == ("B", "ABC")  # three options written as "(A) ..." lines
  # Every record field rides along (prompts may name any), and an extra field-map name lands under its own name.
  assert first.meta["input"] == MEDMCQA_ROWS[0]["input"] and first.meta["ideal"] == "c) Atrophy"
  assert first.meta["subject"] == "pathology"
  # A gold outside the written options, or a gold that is no option label, is one line naming the row.
  bad = _write_jsonl(tmp_path / "bad.jsonl", [dict(MEDMCQA_ROWS[1], ideal="d) Kidney")])
  with pytest.raises(ValueError, match=r"bad.jsonl: row 0: answer 'd\) Kidney' is not among the options A/B/C"):
    load_examples(bad, fields=fields, task="choice")
  word = _write_jsonl(tmp_path / "word.jsonl", [dict(MEDMCQA_ROWS[1], ideal="Pancreas")])
  with pytest.raises(ValueError, match="expected an option letter"):
    load_examples(word, fields=fields, task="choice")


def test_field_path_errors_name_file_row_and_what_is_there(tmp_path):
  path = _write_jsonl(tmp_path / "samples.jsonl", MEDMCQA_ROWS)
  cases = {
    "input[5].content": r"samples.jsonl: row 0: fields\['question'\]='input\[5\].content': input has 2 items, no \[5\]",
    "input[-1].text": r"row 0: .*'text' not found in input\[-1\]; keys present: \['content', 'role'\]",
    "ideal[0]": r"row 0: .*ideal is a str, not a list",
    "prompt": r"column 'prompt' .* not found in row 0; columns present: \['ideal', 'input', 'subject'\]",
  }
  for question, message in cases.items():
    with pytest.raises(ValueError, match=message) as err:
      load_examples(path, fields={"question": question, "answer": "ideal"})
    assert "\n" not in str(err.value)
  with pytest.raises(ValueError, match=r"fields\['question'\]: 'input\[\]' is not a field path"):
    load_examples(path, fields={"question": "input[]", "answer": "ideal"})
  with pytest.raises(ValueError, match=r"fields\['answer'\]: 3; expected a column name"):
    load_examples(path, fields={"question": "input[-1].content", "answer": 3})


def test_context_field_goes_before_the_question(tmp_path):
  rows = [{"q": "Who wrote it?", "a": "Ann", "passages": ["Ann wrote the book.", "Bob read it."]}]
  [example] = load_examples(_write_jsonl(tmp_path / "ctx.jsonl", rows), fields={"question": "q", "answer": "a",
                                                                                  "context": "passages"}, task="qa")
  assert example.question == "Context:\nAnn wrote the book.\n\nBob read it.\n\nQuestion:\nWho wrote it?"
  assert example.meta["context"] == "Ann wrote the book.\n\nBob read it." and example.answer == "Ann"


def test_jsonl_is_streamed_with_a_line_cap_and_names_bad_lines(tmp_path, monkeypatch):
  good = [{"question": f"q{i}", "answer": str(i)} for i in range(3)]
  path = tmp_path / "data.jsonl"
  path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in good) + b'{"question": "\xff", "answer": "1"}\n')
  # Reading stops at the limit: the bad fourth line is never read.
  assert [e.answer for e in load_examples(str(path), limit=3)] == ["0", "1", "2"]
  with pytest.raises(ValueError, match=r"data.jsonl:4: not UTF-8 \(byte 0xff") as err:
    load_examples(str(path))
  assert "\n" not in str(err.value)
  monkeypatch.setattr(ds, "MAX_LINE_BYTES", 40)
  long = _write_jsonl(tmp_path / "long.jsonl", [good[0], {"question": "x" * 100, "answer": "1"}])
  with pytest.raises(ValueError, match=r"long.jsonl:2: a line longer than 40 bytes"):
    load_examples(long)
  latin = tmp_path / "latin.json"
  latin.write_bytes(b'[{"question": "caf\xe9",\n "answer": "1"}]')
  with pytest.raises(ValueError, match=r"latin.json:1: not UTF-8 \(byte 0xe9\)"):
    load_examples(str(latin))
  monkeypatch.setattr(ds, "MAX_JSON_BYTES", 10)
  size = latin.stat().st_size
  with pytest.raises(ValueError, match=rf"latin.json: {size} bytes; a .json file is parsed whole, at most 10 bytes"):
    load_examples(str(latin))


def test_describe_source_tells_copies_apart(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  a = _write_jsonl(tmp_path / "a" / "samples.jsonl", MEDMCQA_ROWS)
  b = _write_jsonl(tmp_path / "b" / "samples.jsonl", MEDMCQA_ROWS[:1])
  da, db = ds.describe_source(a), ds.describe_source(b)
  assert da["path"] != db["path"] and da["sha256"] != db["sha256"] and "registry" not in da
  copy = ds.describe_source("medqa", path=a)
  assert copy["registry"] == "medqa" and copy["sha256"] == da["sha256"] and "hub_id" not in copy
  hub = ds.describe_source("medqa")
  assert hub["hub_id"] == "GBaker/MedQA-USMLE-4-options" and "sha256" not in hub
  gsm = ds.describe_source("gsm_symbolic", limit=5, seed=3)
  assert gsm["generator"].startswith("reasoning-gym ") and (gsm["split"], gsm["seed"], gsm["limit"]) == ("test", 3, 5)


def test_train_fields_map_a_training_file(tmp_path):
  from rmas_jax.config_lib import load_config
  from rmas_jax.training.trainer import training_examples

  config = load_config("configs/tiny.py")
  config.train.data_path = _write_jsonl(tmp_path / "samples.jsonl", MEDMCQA_ROWS)
  config.train.fields = {"question": "input[-1].content", "answer": "ideal"}
  config.task = "choice"
  examples = training_examples(config)
  assert [e.answer for e in examples] == ["C", "B"] and examples[0].meta["ideal"] == "c) Atrophy"
