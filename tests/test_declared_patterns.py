"""Patterns and prompts declared as data: a two-agent pattern written only in a config file runs end to end, and
every style runs on tiny random agents; declaration mistakes are one-line errors naming the field."""

import json
import subprocess
import sys

import pytest

from rmas_jax import cli
from rmas_jax.config_lib import apply_overrides, load_config
from rmas_jax.patterns.declared import pattern_from_dict, template_book
from rmas_jax.prompts.records import PromptRecord, prompt_record
from rmas_jax.prompts.slots import slot

CONFIG = '''
import os, sys
sys.path.insert(0, {configs!r})
from base import base_config

def get_config(preset=None):
  c = base_config()
  c.style = "ask_answer"
  c.agents = [dict(role="asker", model="tiny:qwen2:32"), dict(role="answerer", model="tiny:llama:48")]
  c.pattern = dict(name="ask_answer", roles=["asker", "answerer"], decoder="answerer",
                   edges=[dict(src="asker", dst="answerer", slot="hint"),
                          dict(src="answerer", dst="asker", slot="echo", feedback=True)])
  c.prompts = dict(asker=dict(first="Q: {{question}}", later="Round {{round}}: {{echo}} Q: {{question}}"),
                   answerer=dict(system="Be brief.", first="{{hint}}\\nQ: {{question}}\\n{{instruction}}"))
  c.inference.latent_steps = 3
  c.generation.max_new_tokens = 6
  return c
'''


def run_ask(config: str, *extra: str):
  cmd = [sys.executable, "-m", "rmas_jax", "ask", "--config", config, "--question", "What is 2 + 3?", *extra]
  return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_user_pattern_in_a_config_file_runs(tmp_path):
  path = tmp_path / "ask_answer.py"
  path.write_text(CONFIG.format(configs="configs"))
  report = tmp_path / "report.json"
  result = run_ask(str(path), "--rounds", "3", "--report", str(report))
  assert result.returncode == 0, result.stderr[-2000:]
  record = json.loads(report.read_text())
  assert record["pattern"] == "ask_answer"
  assert record["latent_steps"] == {"round 1": {"asker": 3, "answerer": 3}, "round 2": {"asker": 3, "answerer": 3},
                                    "round 3": {"asker": 3}}  # fmt: skip
  assert record["decoded_tokens"] == {"round 3": {"answerer": record["answer"]["decoded_tokens"][0]}}
  assert 1 <= record["answer"]["decoded_tokens"][0] <= 6
  again = run_ask(str(path), "--report", str(report))
  assert again.returncode == 2 and "never overwritten" in again.stderr


@pytest.mark.parametrize("preset", ["default", "mixture", "distillation", "deliberation", "custom"])
def test_every_tiny_style_answers(preset, capsys):
  sampled = ("--num-samples", "2", "--set", "generation.greedy=False")
  argv = ["ask", "--config", f"configs/tiny.py:{preset}", "--question", "What is 2 + 3?", "--rounds", "2", *sampled]
  assert cli.main(argv) == 0  # in-process: the subprocess test above covers the command line itself
  out = capsys.readouterr()
  record = json.loads(out.err.strip().splitlines()[-1])
  assert record["num_samples"] == 2 and out.out.count("--- sample") == 2


def test_declaration_errors_name_the_field():
  good = dict(name="p", roles=["a", "b"], edges=[dict(src="a", dst="b", slot="s")], decoder="b")
  pattern = pattern_from_dict(good)
  with pytest.raises(ValueError, match=r"config.pattern: missing 'decoder'"):
    pattern_from_dict({k: v for k, v in good.items() if k != "decoder"})
  with pytest.raises(ValueError, match=r"config.pattern.edges\[0\]"):
    pattern_from_dict(dict(good, edges=[dict(src="a", to="b", slot="s")]))
  with pytest.raises(ValueError, match=r"goes backwards"):
    pattern_from_dict(dict(good, edges=[dict(src="b", dst="a", slot="s")]))
  with pytest.raises(ValueError, match=r"config.prompts: no prompt for role 'b'"):
    template_book(pattern, {"a": {"first": "{question}"}})
  with pytest.raises(ValueError, match=r"config.prompts.a.first: slots \['s'\] go to other roles"):
    template_book(pattern, {"a": {"first": "{question} {s}"}, "b": {"first": "{s}"}})
  with pytest.raises(ValueError, match=r"config.prompts.b.first: expected '}' before end of string"):
    template_book(pattern, {"a": {"first": "{question}"}, "b": {"first": "{s} {oops"}})
  book = template_book(pattern, {"a": {"first": "{question}"}, "b": {"first": "{s}|{question}|{round}/{rounds}"}})
  assert book["b"](prompt_record("Q?"), 2, 3, "math").user == f"{slot('s')}|Q?|2/3"


def test_prompts_name_record_fields():
  """A declared prompt may name any field of the data record; a record without it is one line naming both."""
  pattern = pattern_from_dict(dict(name="p", roles=["a", "b"], edges=[dict(src="a", dst="b", slot="s")], decoder="b"))
  book = template_book(pattern, {"a": {"first": "Note: {context}"}, "b": {"first": "{s} {question}"}})
  record = prompt_record({"question": "Which code?", "context": "The code is 4827.", "answer": "4827"})
  assert book["a"](record, 1, 1, "exact").user == "Note: The code is 4827."
  assert "4827" not in book["b"](record, 1, 1, "exact").user  # the decoder never sees the context
  lacking = PromptRecord({"question": "Which code?"}, "relay.jsonl record 7")
  with pytest.raises(ValueError, match=r"^relay.jsonl record 7: the prompt of role 'a' names \{context\}, which this "
                     r"record lacks \(it has question\)$"):  # fmt: skip
    book["a"](lacking, 1, 1, "exact")


def test_overrides():
  config = load_config("configs/tiny.py")
  apply_overrides(config, ["generation.greedy=False", "inference.stop_strings=['\\n\\n']", "task=code"])
  assert config.generation.greedy is False and list(config.inference.stop_strings) == ["\n\n"] and config.task == "code"
  apply_overrides(config, ["eval.warmup=true", "generation.greedy=TRUE"])  # the shell spelling of bools
  assert config.eval.warmup is True and config.generation.greedy is True
  with pytest.raises(ValueError, match="config.inference has no field 'nope'"):
    apply_overrides(config, ["inference.nope=1"])
  with pytest.raises(ValueError, match="eval.warmup=maybe"):
    apply_overrides(config, ["eval.warmup=maybe"])
