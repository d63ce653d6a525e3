"""The latent relay's records: held-out facts never occur in training, the fact is only in the context, and the
reader's own gold text restates it."""

import json
import re

import pytest

from rmas_jax.evaluation.relay_data import main, relay_records


@pytest.mark.parametrize("variant", ["recall", "sum"])
def test_held_out_answers_never_occur_in_training_and_only_the_context_states_the_fact(variant):
  train, test = relay_records(variant, 3000, 200)
  assert not {r["answer"] for r in test} & {r["answer"] for r in train}
  assert all("gold_reader" in r for r in train) and not any("gold_reader" in r for r in test)
  for r in train + test:
    numbers = re.findall(r"\d+", r["context"])
    if variant == "recall":
      assert numbers == [r["answer"]] and len(r["answer"]) == 4
      assert r.get("gold_reader") in (None, f"The code is {r['answer']}.")
    else:
      a, b = (int(n) for n in numbers)
      assert a + b == int(r["answer"]) and r.get("gold_reader") in (None, f"The numbers are {a} and {b}.")
    assert not re.search(r"\d", r["question"])  # the answerer's side never sees a digit of the fact


def test_the_command_writes_both_files_and_never_overwrites(tmp_path, capsys):
  assert main(["--out", str(tmp_path), "--train", "5", "--test", "3"]) == 0
  rows = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
  assert len(rows) == 3 and set(rows[0]) == {"context", "question", "answer"}
  assert main(["--out", str(tmp_path)]) == 2
  assert "exists" in capsys.readouterr().err
