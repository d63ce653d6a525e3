"""Prefix caches reused across rounds: a role's opening, shared by the rounds it recurs in, is prefilled once per
question and every round starts from a copy of its cache. The re-prefilling path (`prefix_reuse=False`: every
round prefills its whole prompt, the layouts without a prefix block) is the reference, for the decoder's input
(which holds the last round's latents), every turn's latents, the link gradients of both training modes, the
decoded tokens, and a hybrid Qwen3.5 agent (whose cache also carries recurrent state).

Tolerances: the two paths do the same maths in a different order (the prefix block's keys are computed by one
call and attended by the next; padding sits mid-sequence instead of in front), so fp32 rounding differs, and
only that: the shared cache against prefilling the same block again each round is compared bitwise.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rmas_jax.generation.sampler import SamplingConfig, bucket, generate_text
from rmas_jax.links.recursive_link import LinkParam
from rmas_jax.models.kv_cache import repeat_rows
from rmas_jax.patterns.ask import layouts_by_round
from rmas_jax.patterns.graph import DISTILLATION, SEQUENTIAL
from rmas_jax.patterns.system import GoldResponse, build_system, run_rounds, slot_order, think_round
from rmas_jax.patterns.traced import run_rounds_traced
from rmas_jax.prompts.slots import MIN_PREFIX, SegmentedPrompt, layout, role_layouts
from rmas_jax.training.objectives import rollout_loss
from rmas_jax.weights.tiny import byte_tokenizer, load_tiny
from tiny_models import tiny_agent

STEPS = 3
OPENINGS = (20, 31)  # two examples whose shared openings differ in length: both blocks are padded


def stack(lays):
  return jax.tree.map(lambda *x: jnp.stack(x), *lays) if lays else None


def split(lays):
  """(first, middle, last) as `run_rounds` takes them."""
  return lays[0], stack(lays[1:-1]), lays[-1] if len(lays) > 1 else None


def make_prompts(pattern, rounds, seed=0):
  """`[round][role]` -> per example a prompt that opens the same way in every round (for the first role, round 1
  opens differently: its block can only cover rounds 2..R), then some round-dependent tokens of round-dependent
  length, the slots, a tail."""
  rng = np.random.default_rng(seed)
  toks = lambda n: tuple(int(x) for x in rng.integers(3, 128, n))  # noqa: E731
  opening = {(role, b): toks(n) for role in pattern.roles for b, n in enumerate(OPENINGS)}
  out = []
  for r in range(rounds):
    per_role = {}
    for i, role in enumerate(pattern.roles):
      slots = slot_order(pattern, role, r == 0)
      rows = []
      for b in range(len(OPENINGS)):
        head = toks(25) if (i == 0 and r == 0) else opening[role, b]
        segments = (head + toks(2 + (r + b) % 3),) + tuple(toks(1 + (r + j) % 2) for j in range(len(slots)))
        rows.append(SegmentedPrompt(segments=segments, slots=slots))
      per_role[role] = rows
    out.append(per_role)
  return out


@pytest.fixture(scope="module")
def system():
  backbones = {
    "planner": tiny_agent("llama3", 48),
    "critic": tiny_agent("gemma3", 64),
    "solver": tiny_agent("qwen2", 32),
  }
  return build_system(SEQUENTIAL, backbones, seed=1)


@pytest.fixture(scope="module")
def rounds_fn(system):
  graphdef, _ = nnx.split(system)
  return jax.jit(lambda s, f, m, la: run_rounds(nnx.merge(graphdef, s), f, m, la, steps=STEPS))


def real_slots(x, mask):
  """Each example's vectors at its real slots, in order: where the two layouts put them differs."""
  x, mask = np.asarray(x), np.asarray(mask)
  return [x[b][mask[b]] for b in range(mask.shape[0])]


def test_layout_with_a_prefix_block_hand_checked():
  a = SegmentedPrompt(segments=((5, 6, 7), (8,)), slots=("x",))
  b = SegmentedPrompt(segments=((9,), ()), slots=("x",))
  lay = layout([a, b], ["x"], latent_steps=2, length=9, prefix=4, shared=[2, 1])
  assert lay.prefix == 4
  # the shared tokens end at slot P = 4; the rest (a token, the slot's two latents, a token) ends at T = 9
  np.testing.assert_array_equal(lay.ids, [[0, 0, 5, 6, 0, 7, 0, 0, 8], [0, 0, 0, 9, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(lay.source, [[-1, -1, -1, -1, -1, -1, 0, 0, -1], [-1, -1, -1, -1, -1, -1, -1, 0, 0]])
  np.testing.assert_array_equal(lay.step, [[0, 0, 0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0, 1]])
  np.testing.assert_array_equal(lay.mask, [[0, 0, 1, 1, 0, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0, 0, 1, 1]])
  np.testing.assert_array_equal(lay.rest().ids, np.asarray(lay.ids)[:, 4:])
  with pytest.raises(ValueError, match="shared tokens do not fit"):
    layout([a], ["x"], latent_steps=2, length=9, prefix=4, shared=[4])  # more than its first segment


def test_role_layouts_share_one_block():
  rounds = 4
  prompts = make_prompts(SEQUENTIAL, rounds)
  for i, role in enumerate(SEQUENTIAL.roles):
    per_round = [p[role] for p in prompts]
    names = [slot_order(SEQUENTIAL, role, r == 0) for r in range(rounds)]
    plain = role_layouts(per_round, names, STEPS, uses=[True] * rounds, prefix_reuse=False)
    lays = role_layouts(per_round, names, STEPS, uses=[True] * rounds)
    members = range(1 if i == 0 else 0, rounds)  # the planner's round 1 opens differently
    p = lays[-1].prefix
    assert p >= MIN_PREFIX and [lay.prefix for lay in lays] == [p if r in members else 0 for r in range(rounds)]
    rest = max(q.length(STEPS) - c for r in members for q, c in zip(per_round[r], OPENINGS, strict=True))
    for r in range(rounds):  # the block, then the bucket of the longest remainder; a round without it: its bucket
      longest = max(q.length(STEPS) for q in per_round[r])
      assert lays[r].ids.shape[1] == (p + bucket(rest) if r in members else bucket(longest))
      for field in ("ids", "source", "step"):  # the same slots in the same order
        got, want = (
          real_slots(getattr(lays[r], field), lays[r].mask),
          real_slots(getattr(plain[r], field), plain[r].mask),
        )
        for g, w in zip(got, want, strict=True):
          np.testing.assert_array_equal(g, w)
      if r in members:  # one block, the same in every round that declares it, tokens only
        for got, want in zip(lays[r].head(), lays[members[0]].head(), strict=True):
          np.testing.assert_array_equal(got, want)
        assert np.all(np.asarray(lays[r].source)[:, :p] == -1)
    # each example's whole opening is in the block, ending at its last slot
    mask = np.asarray(lays[-1].mask)[:, :p]
    assert mask.sum(axis=1).tolist() == list(OPENINGS) and mask[:, -1].all()
  # one use (one round, or a role that thinks once) saves nothing: no block
  assert role_layouts([prompts[0]["critic"]], [("plan",)], STEPS, uses=[True])[0].prefix == 0


@pytest.mark.parametrize("rounds", [1, 2, 4])  # one round (no block), round 1 + last, and two scanned middle rounds
def test_rounds_equal_the_reprefilling_path(system, rounds_fn, rounds):
  prompts = make_prompts(SEQUENTIAL, rounds)
  _, state = nnx.split(system)
  reuse = layouts_by_round(system, prompts, STEPS)
  plain = layouts_by_round(system, prompts, STEPS, prefix_reuse=False)
  assert any(lay.prefix for lay in reuse[-1].values()) == (rounds > 1)
  got, want = rounds_fn(state, *split(reuse)), rounds_fn(state, *split(plain))
  for g, w in zip(real_slots(got.embeds, got.mask), real_slots(want.embeds, want.mask), strict=True):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
  assert (got.prefix is not None) == (rounds > 1) and want.prefix is None


def test_shared_cache_is_what_prefilling_each_round_gives(system, rounds_fn):
  """Frozen backbones: the cache prefilled once is, bit for bit, the one each round would prefill again."""
  rounds = 4
  lays = layouts_by_round(system, make_prompts(SEQUENTIAL, rounds), STEPS)
  graphdef, state = nnx.split(system)

  def every_round_prefills(state):
    sysm, feedback = nnx.merge(graphdef, state), None
    for r, lay in enumerate(lays):  # `think_round` without `prefixes` prefills each block in its round
      feedback, out = think_round(sysm, lay, feedback, steps=STEPS, final=r == rounds - 1)
    return out

  want = jax.jit(every_round_prefills)(state)
  got = rounds_fn(state, *split(lays))
  np.testing.assert_array_equal(got.embeds, want.embeds)


def test_traced_turns_equal_the_reprefilling_path(system, rounds_fn):
  rounds = 3
  prompts = make_prompts(SEQUENTIAL, rounds)
  reuse = layouts_by_round(system, prompts, STEPS)
  plain = layouts_by_round(system, prompts, STEPS, prefix_reuse=False)
  got, turns = run_rounds_traced(system, reuse, steps=STEPS)
  want, ref_turns = run_rounds_traced(system, plain, steps=STEPS)
  assert [(t.round, t.role) for t in turns] == [(t.round, t.role) for t in ref_turns]
  for t, ref in zip(turns, ref_turns, strict=True):  # every turn's latents and what it sends
    np.testing.assert_allclose(t.thoughts, ref.thoughts, rtol=2e-5, atol=2e-5)
    for name in ref.sent:
      np.testing.assert_allclose(t.sent[name], ref.sent[name], rtol=2e-5, atol=2e-5)
  _, state = nnx.split(system)
  whole = rounds_fn(state, *split(reuse))  # the turn-by-turn path and the one program, both reusing
  np.testing.assert_allclose(got.embeds, whole.embeds, rtol=1e-6, atol=1e-6)
  for g, w in zip(real_slots(got.embeds, got.mask), real_slots(want.embeds, want.mask), strict=True):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("teacher_forced", [False, True])
def test_link_gradients_equal_the_reprefilling_path(system, teacher_forced):
  """`rollout_loss` (the outer training step's loss): the links' gradients agree, through three rounds (a scanned
  one) of rollouts, or two of teacher forcing (the block is read the same way; a third round only costs time)."""
  rounds, length = (2 if teacher_forced else 3), 4
  prompts = make_prompts(SEQUENTIAL, rounds)
  rng = np.random.default_rng(7)
  target = jnp.asarray(rng.integers(3, 128, (2, length)), jnp.int32)
  target_mask = jnp.asarray([[1, 1, 1, 1], [1, 1, 0, 0]], bool)
  gold = None
  if teacher_forced:
    gold = {role: GoldResponse(jnp.asarray(rng.integers(3, 128, (2, STEPS + 1)), jnp.int32), target_mask[:, :STEPS + 1])
            for role in SEQUENTIAL.roles}  # fmt: skip
  graphdef, links, rest = nnx.split(system, LinkParam, ...)

  def grads(lays):
    def loss(links):
      return rollout_loss(nnx.merge(graphdef, links, rest), *split(lays), target, target_mask, steps=STEPS, gold=gold)

    return jax.jit(jax.value_and_grad(loss))(links)

  (loss, got), (ref_loss, want) = (
    grads(layouts_by_round(system, prompts, STEPS)),
    grads(layouts_by_round(system, prompts, STEPS, prefix_reuse=False)),
  )
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  leaves, ref_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
  assert max(float(jnp.abs(g).max()) for g in ref_leaves) > 0
  scale = max(float(jnp.abs(g).max()) for g in ref_leaves)
  for g, w in zip(leaves, ref_leaves, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale)


def test_decoding_from_the_prefix_cache_writes_the_same_tokens(system, rounds_fn):
  prompts = make_prompts(SEQUENTIAL, 2)
  _, state = nnx.split(system)
  inp = rounds_fn(state, *split(layouts_by_round(system, prompts, STEPS)))
  assert inp.prefix is not None
  decoder = system.agents["solver"].backbone
  run = dict(inputs_embeds=inp.embeds, attention_mask=inp.mask, max_new_tokens=12, stop_ids=[5],
             sampling=SamplingConfig(ignore_eos=True))  # fmt: skip
  got = generate_text(decoder, byte_tokenizer(), prefix_cache=inp.prefix, **run)
  want = generate_text(decoder, byte_tokenizer(), **run)
  assert [r.ids for r in got] == [r.ids for r in want] and all(len(r.ids) == 12 for r in got)
  # several samples of one question (`ask(num_samples=2)`): each row twice, the prefix cache's rows too
  twice = dict(run, inputs_embeds=jnp.repeat(inp.embeds, 2, axis=0), attention_mask=jnp.repeat(inp.mask, 2, axis=0))
  got = generate_text(decoder, byte_tokenizer(), prefix_cache=repeat_rows(inp.prefix, 2), **twice)
  assert [r.ids for r in got] == [r.ids for r in want for _ in range(2)]


def test_hybrid_agent_reuses_its_prefix():
  """A Qwen3.5 expert (DeltaNet + attention; its cache also holds convolution and recurrent state) over three
  rounds: the scanned middle round and the last start from the prefix's cache."""
  rounds = 3
  system = build_system(DISTILLATION, {"expert": load_tiny("tiny:qwen3_5:32")[0], "learner": tiny_agent("llama3", 48)},
                        seed=3)  # fmt: skip
  prompts = make_prompts(DISTILLATION, rounds, seed=5)
  reuse = layouts_by_round(system, prompts, STEPS)
  assert reuse[-1]["expert"].prefix and reuse[0]["expert"].prefix == 0  # rounds 2..R
  graphdef, state = nnx.split(system)
  fn = jax.jit(lambda s, f, m, la: run_rounds(nnx.merge(graphdef, s), f, m, la, steps=STEPS))
  got = fn(state, *split(reuse))
  want = fn(state, *split(layouts_by_round(system, prompts, STEPS, prefix_reuse=False)))
  for g, w in zip(real_slots(got.embeds, got.mask), real_slots(want.embeds, want.mask), strict=True):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
