"""Text-watching generation: stop strings, and insertions after forgotten tokens, checked against plain greedy
generation from the prompt the model should have seen (which has no forgotten tokens in it)."""

import dataclasses

import jax.numpy as jnp
import pytest

from rmas_jax.generation.sampler import Interrupt, SamplingConfig, TextResult, bucket, generate, generate_text, left_pad
from tiny_models import random_model


class CharTokenizer:
  """One character per id, so character cuts map to token cuts exactly."""

  def decode(self, ids, skip_special_tokens=True):
    return "".join(chr(0x100 + i) for i in ids)

  def __call__(self, text, add_special_tokens=False):
    return {"input_ids": [ord(c) - 0x100 for c in text]}


TOK = CharTokenizer()
PROMPTS = [[5, 9, 17, 33, 2, 70, 11], [44, 3, 99, 12]]


def run_text(model, prompts, **kw):
  ids, mask = left_pad(prompts, bucket(max(map(len, prompts))))
  return generate_text(model, TOK, input_ids=jnp.asarray(ids), attention_mask=jnp.asarray(mask), **kw)


@pytest.fixture(scope="module", params=["mistral", "gemma3"])
def model(request):
  # mistral and gemma3 have sliding windows (5) shorter than the text, so forgotten slots must not shift them.
  return random_model(request.param, scan_layers=False)


def test_plain_text_equals_generate(model):
  plain = generate(model, PROMPTS, max_new_tokens=20)
  out = run_text(model, PROMPTS, max_new_tokens=20, chunk=6)
  assert [r.ids for r in out] == plain
  assert [r.text for r in out] == [TOK.decode(p) for p in plain]


@pytest.mark.parametrize("greedy", [True, False])
def test_ignore_eos_decodes_the_whole_budget(model, greedy):
  """A stop id the model picks as its third token ends that example; with `ignore_eos` it is never chosen and both
  examples decode exactly the budget, as HF's `min_new_tokens = max_new_tokens` does (greedy: the same tokens up to
  where the stop id was)."""
  budget, sampling = 20, SamplingConfig(greedy=greedy, temperature=0.7, seed=3)
  free = run_text(model, PROMPTS, max_new_tokens=budget, sampling=sampling)
  stop = free[0].ids[2]
  stopped = run_text(model, PROMPTS, max_new_tokens=budget, stop_ids=[stop], sampling=sampling)
  assert len(stopped[0].ids) <= 3 and stopped[0].finish == "stop_id"
  forced = dataclasses.replace(sampling, ignore_eos=True)
  for out in (run_text(model, PROMPTS, max_new_tokens=budget, stop_ids=[stop], sampling=forced, chunk=6),
              [TextResult("", ids) for ids in generate(model, PROMPTS, max_new_tokens=budget, stop_ids=[stop],
                                                       sampling=forced)]):  # fmt: skip
    assert [len(r.ids) for r in out] == [budget, budget] and all(stop not in r.ids for r in out)
    if greedy:  # (sampling draws from re-sorted logits once one is masked, so only greedy keeps the tokens)
      first = free[0].ids.index(stop)
      assert out[0].ids[:first] == free[0].ids[:first]
  assert all(r.finish == "length" for r in run_text(model, PROMPTS, max_new_tokens=budget, stop_ids=[stop],
                                                    sampling=forced))  # fmt: skip


def test_stop_string_cuts_one_example_only(model):
  plain = generate(model, PROMPTS, max_new_tokens=20)
  text0 = TOK.decode(plain[0])
  stop = text0[7:9]
  cut = text0.find(stop)
  out = run_text(model, PROMPTS, max_new_tokens=20, chunk=4, stop_strings=[stop])
  assert out[0].text == text0[:cut]
  assert out[0].ids == plain[0][: len(out[0].ids)] and len(out[0].ids) >= cut
  other = TOK.decode(plain[1])
  assert out[1].text == (other[: other.find(stop)] if stop in other else other)
  assert out[0].finish == "stop_string"


def test_insertion_after_forgotten_tokens_equals_fresh_prompt(model):
  """Cut example 0 after 3 generated tokens (it has generated more by then), insert 4 tokens, go on: the rest must
  equal greedy generation from prompt + 3 kept tokens + inserted tokens. Example 1 is never touched."""
  inserted = [7, 8, 9, 10]
  calls = []

  def watcher(i, text, cursor):
    if i == 0 and not calls:
      calls.append(text)
      return Interrupt(cut=3, insert=TOK.decode(inserted))
    return None

  new = 24
  out = run_text(model, PROMPTS, max_new_tokens=new, chunk=5, watcher=watcher, insert_room=16)
  plain = generate(model, PROMPTS, max_new_tokens=new)
  assert len(calls[0]) == 5  # the watcher saw a full chunk, so 2 generated tokens were forgotten
  kept = plain[0][:3]
  reference = generate(model, [PROMPTS[0] + kept + inserted], max_new_tokens=new - 3)[0]
  assert out[0].ids == kept + reference
  assert out[0].text == TOK.decode(kept + inserted + reference)
  assert out[0].inserted_tokens == 4 and out[0].interrupts == 1
  assert out[1].ids == plain[1]
  assert [r.finish for r in out] == ["length", "length"]
  cramped = run_text(model, PROMPTS, max_new_tokens=new, chunk=5, watcher=lambda i, t, c: None if i or c else
                     Interrupt(cut=3, insert=TOK.decode(inserted)))  # fmt: skip
  assert cramped[0].finish == "cache_full" and len(cramped[0].ids) < new  # the 8-slot insert block had no room


def test_stop_after_insertion_and_cache_room(model):
  def watcher(i, text, cursor):
    return Interrupt(cut=len(text), insert=TOK.decode([1, 2]), stop=True) if len(text) >= 2 else None

  out = run_text(model, PROMPTS, max_new_tokens=30, chunk=2, watcher=watcher, insert_room=16)
  plain = generate(model, PROMPTS, max_new_tokens=2)
  for r, p in zip(out, plain, strict=True):
    assert r.ids == p and r.text == TOK.decode(p + [1, 2]) and r.finish == "watcher"

