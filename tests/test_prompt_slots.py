"""Prompts with latent slots: splitting, a hand-checked layout, and batch-independent assembly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmas_jax.prompts import roles
from rmas_jax.prompts.records import prompt_record
from rmas_jax.prompts.slots import SegmentedPrompt, assemble_embeddings, layout, render_chat, segment, slot
from rmas_jax.weights.pretrained import load_pretrained
from tiny_models import random_model


@pytest.fixture(scope="module")
def smollm_tokenizer():
  return load_pretrained("smollm2-135m-instruct", progress=False).tokenizer


def test_layout_hand_checked():
  a = SegmentedPrompt(segments=((5, 6), (7,)), slots=("x",))
  b = SegmentedPrompt(segments=((8,), (), (9,)), slots=("y", "x"))
  lay = layout([a, b], ["x", "y"], latent_steps=2, length=8)
  np.testing.assert_array_equal(lay.ids, [[0, 0, 0, 5, 6, 0, 0, 7], [0, 0, 8, 0, 0, 0, 0, 9]])
  np.testing.assert_array_equal(lay.source, [[-1, -1, -1, -1, -1, 0, 0, -1], [-1, -1, -1, 1, 1, 0, 0, -1]])
  np.testing.assert_array_equal(lay.step, [[0, 0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 0, 1, 0]])
  np.testing.assert_array_equal(lay.mask, [[0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1, 1]])


def test_assemble_puts_each_latent_in_its_slot():
  a = SegmentedPrompt(segments=((1,), (2,)), slots=("x",))
  lay = layout([a], ["x"], latent_steps=3, length=5)
  latents = jnp.arange(1 * 1 * 3 * 2, dtype=jnp.float32).reshape(1, 1, 3, 2) + 100
  tokens = jnp.zeros((1, 5, 2))
  out = assemble_embeddings(tokens, lay, latents)
  np.testing.assert_array_equal(out[0], [[0, 0], [100, 101], [102, 103], [104, 105], [0, 0]])


def test_segments_round_trip_the_rendered_prompt(smollm_tokenizer):
  tok = smollm_tokenizer
  prompt = roles.critic("What is 3 + 4?")
  text = render_chat(tok, prompt.system, prompt.user)
  seg = segment(tok, text)
  assert seg.slots == ("plan",) and len(seg.segments) == 2
  before, after = text.split(slot("plan"))
  assert tok.decode(list(seg.segments[0])) == before and tok.decode(list(seg.segments[1])) == after
  assert before.startswith("<|im_start|>system\n") and after.endswith("<|im_start|>assistant\n")


def test_system_turn_merged_when_the_template_refuses_it(smollm_tokenizer):
  tok = smollm_tokenizer
  saved = tok.chat_template
  tok.chat_template = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
  )
  try:
    assert render_chat(tok, "Be brief.", "Hi") == "[user]Be brief.\n\nHi[assistant]"
  finally:
    tok.chat_template = saved


def test_later_rounds_say_which_round():
  assert "round 3 of 3" in roles.planner("q", 3, 3).user and slot("feedback") in roles.planner("q", 2, 3).user
  assert slot("feedback") not in roles.planner("q", 1, 3).user
  with pytest.raises(ValueError, match="task 'poetry'"):
    roles.solver("q", task="poetry")


def test_assembled_prompt_result_independent_of_batch_mates():
  """An example with latents in its slot gives the same states alone and left-padded among longer prompts."""
  model = random_model("qwen3", scan_layers=False)
  prompts = [
    SegmentedPrompt(segments=((5, 6, 7), (8, 9)), slots=("x",)),
    SegmentedPrompt(segments=((10,) * 9, (11, 12, 13)), slots=("x",)),
  ]
  latents = jax.random.normal(jax.random.key(0), (1, 2, 4, model.cfg.hidden_size))

  def last_state(batch, lat):
    lay = layout(batch, ["x"], latent_steps=4)
    embeds = assemble_embeddings(model.embed(lay.ids), lay, lat)
    return model(inputs_embeds=embeds, attention_mask=lay.mask, return_logits=False).hidden[:, -1]

  together = last_state(prompts, latents)
  alone = last_state(prompts[:1], latents[:, :1])
  np.testing.assert_allclose(np.asarray(together[0]), np.asarray(alone[0]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("style", ["sequential", "mixture", "distillation"])
def test_every_role_prompt_has_the_slots_its_pattern_fills(smollm_tokenizer, style):
  from rmas_jax.patterns.ask import PROMPTS
  from rmas_jax.patterns.graph import PATTERNS
  from rmas_jax.patterns.system import slot_order

  pattern = PATTERNS[style]
  assert set(PROMPTS[style]) == set(pattern.roles)
  for r in (1, 2, 3):
    for role in pattern.roles:
      p = PROMPTS[style][role](prompt_record("What is 2 + 2?"), r, 3, "math")
      seg = segment(smollm_tokenizer, render_chat(smollm_tokenizer, p.system, p.user))
      assert sorted(seg.slots) == sorted(slot_order(pattern, role, r == 1)), (style, role, r)
