"""Several questions at once: a batch of questions of different lengths answers each as it is answered alone, a
second batch whose prompts fall in the same length buckets compiles nothing new, and `ask_batched` splits a list
into batches of one shape (the last filled up), with the tiny sequential system of `configs/tiny.py` (weights
perturbed, so the answers are not the same for every input) over three rounds with prefix reuse on."""

import jax
import pytest
from flax import nnx

from rmas_jax.config_lib import load_config
from rmas_jax.patterns.ask import ask, layouts_by_round, segmented_prompts
from rmas_jax.patterns.batched import ask_batched, batch_sizes, read_questions
from rmas_jax.patterns.from_config import load_system

ROUNDS, STEPS = 3, 4
FIRST = ["What is 2 + 3?", "A farmer has 12 cows and buys 7 more. How many cows does he have now?"]
SECOND = ["What is 10 - 4?", "Tom reads 5 pages a day for 6 days. How many pages does he read in all?"]
KW = dict(rounds=ROUNDS, steps=STEPS, max_new_tokens=12)


@pytest.fixture(scope="module")
def loaded():
  loaded = load_system(load_config("configs/tiny.py"), progress=False)
  for i, agent in enumerate(loaded.system.agents.values()):  # random tiny weights answer "\n" to everything
    state = nnx.state(agent.backbone, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(i), len(leaves))
    noisy = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)]
    nnx.update(agent.backbone, jax.tree.unflatten(treedef, noisy))
  return loaded


class Compiles:
  """Counts tracing and compiling events while `on` (jax.monitoring has no way to take a listener back)."""

  def __init__(self):
    self.on, self.events = False, []
    jax.monitoring.register_event_duration_secs_listener(self._seen)

  def _seen(self, name, seconds, **_):
    if self.on and name.startswith("/jax/core/compile/"):
      self.events.append(name)

  def during(self, fn):
    self.on, self.events = True, []
    try:
      return fn()
    finally:
      self.on = False


def shapes(loaded, questions):
  prompts = segmented_prompts(loaded.system, loaded.tokenizers, questions, rounds=ROUNDS, task="math")
  lays = layouts_by_round(loaded.system, prompts, STEPS)
  return [{role: (lay.ids.shape, lay.prefix) for role, lay in r.items()} for r in lays]


def texts(result):
  return [(a.text, a.decoded_tokens) for a in result.answers]


def test_batches_answer_as_alone_and_compile_once(loaded):
  system, toks = loaded.system, loaded.tokenizers
  assert shapes(loaded, FIRST) == shapes(loaded, SECOND)  # the premise: other lengths, the same buckets
  assert any(p for r in shapes(loaded, FIRST) for _, p in r.values())  # prefix blocks in play
  alone = {q: texts(ask(system, toks, [q], **KW))[0] for q in FIRST + SECOND}
  assert len({a[0] for a in alone.values()}) > 1  # the answers depend on the question
  compiles = Compiles()
  first = compiles.during(lambda: ask(system, toks, FIRST, **KW))
  assert texts(first) == [alone[q] for q in FIRST]
  assert "/jax/core/compile/backend_compile_duration" in compiles.events  # a new batch size compiles (and is seen)
  second = compiles.during(lambda: ask(system, toks, SECOND, **KW))
  assert texts(second) == [alone[q] for q in SECOND]
  assert compiles.events == []
  # three questions two at a time: a full batch, then one question in a batch of one (both shapes compiled above)
  many = compiles.during(lambda: ask_batched(system, toks, FIRST + SECOND[:1], batch_size=2, **KW))
  assert texts(many) == [alone[q] for q in FIRST + SECOND[:1]] and compiles.events == []
  acc = many.accounting
  assert (acc["questions"], acc["batches"], acc["rows"]) == (3, 2, 3)
  assert acc["decoded_tokens"] == {
    f"round {ROUNDS}": {"solver": sum(n for q in FIRST + SECOND[:1] for n in alone[q][1])}
  }


def test_batch_sizes_and_question_files(tmp_path):
  assert batch_sizes(37, 16) == [(16, 16), (16, 16), (5, 8)]
  assert batch_sizes(3, 4) == [(3, 4)] and batch_sizes(4, 4) == [(4, 4)] and batch_sizes(1, 16) == [(1, 1)]
  jsonl = tmp_path / "q.jsonl"
  jsonl.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n\n"What is 2 + 2?"\n')
  # a record is kept whole, so a declared prompt may name its other fields ({context})
  assert read_questions(str(jsonl)) == [{"question": "What is 1 + 1?", "answer": "2"}, "What is 2 + 2?"]
  plain = tmp_path / "q.txt"
  plain.write_text("first question\nsecond question\n")
  assert read_questions(str(plain)) == ["first question", "second question"]
  jsonl.write_text('{"answer": "2"}\n')
  with pytest.raises(ValueError, match=r"q.jsonl:1: no question"):
    read_questions(str(jsonl))
