"""The round loop of a sequential system of heterogeneous tiny agents against the release's algorithm written
out by hand (§2.3 of the reference: uncached rollouts, one example at a time)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rmas_jax.latent.rollout import latent_rollout_uncached
from rmas_jax.patterns.graph import SEQUENTIAL, Edge, Pattern
from rmas_jax.patterns.system import build_system, run_rounds, slot_order
from rmas_jax.prompts.slots import SegmentedPrompt, assemble_embeddings, layout
from tiny_models import tiny_agent

STEPS, ROUNDS = 3, 4
LENGTHS = (7, 3)  # two examples of different prompt lengths: left padding in play


@pytest.fixture(scope="module")
def system():
  backbones = {
    "planner": tiny_agent("llama3", 48),
    "critic": tiny_agent("gemma3", 64),
    "solver": tiny_agent("qwen2", 32),
  }
  return build_system(SEQUENTIAL, backbones, seed=1)


def prompt(rng, n, slots):
  cuts = sorted(rng.choice(np.arange(1, n), size=len(slots), replace=False)) if slots else []
  ids = rng.integers(3, 128, n)
  return SegmentedPrompt(segments=tuple(tuple(int(x) for x in s) for s in np.split(ids, cuts)), slots=slots)


@pytest.fixture(scope="module")
def prompts():
  """prompts[round][role] -> one SegmentedPrompt per example."""
  rng = np.random.default_rng(0)
  out = []
  for r in range(ROUNDS):
    out.append({role: [prompt(rng, n + r % 2, slot_order(SEQUENTIAL, role, r == 0)) for n in LENGTHS]
                for role in SEQUENTIAL.roles})  # fmt: skip
  return out


def layouts(prompts, rounds, examples=slice(None), length=32):
  return [{role: layout(ps[role][examples], slot_order(SEQUENTIAL, role, r == 0), STEPS, length)
           for role in SEQUENTIAL.roles} for r, ps in enumerate(prompts[:rounds])]  # fmt: skip


def run_system(system, lays):
  first, last = lays[0], lays[-1] if len(lays) > 1 else None
  middle = jax.tree.map(lambda *x: jnp.stack(x), *lays[1:-1]) if len(lays) > 2 else None
  graphdef, state = nnx.split(system)
  fn = jax.jit(lambda s, f, m, la: run_rounds(nnx.merge(graphdef, s), f, m, la, steps=STEPS))
  return fn(state, first, middle, last)


def reference(system, prompts, example, rounds):
  """The release's sequential loop, one example, no padding, no cache, links composed by hand."""
  agents, outer = system.agents, system.outer

  def embed(role, r, latents):
    p = prompts[r][role][example]
    lay = layout([p], slot_order(SEQUENTIAL, role, r == 0), STEPS, p.length(STEPS))
    model = agents[role].backbone
    return assemble_embeddings(model.embed(lay.ids), lay, jnp.stack(latents)[:, None] if latents else None)

  def rollout(role, embeds):
    agent = agents[role]
    hs = latent_rollout_uncached(agent.backbone, agent.inner, embeds, jnp.ones(embeds.shape[:2], bool), STEPS)
    return agent.inner(hs)[0]

  fb = None
  for r in range(rounds):
    z12 = outer["planner_to_critic"](rollout("planner", embed("planner", r, [] if fb is None else [fb])))
    z23 = outer["critic_to_solver"](rollout("critic", embed("critic", r, [z12])))
    if r < rounds - 1:
      fb = outer["solver_to_planner"](rollout("solver", embed("solver", r, [z23])))
  return embed("solver", rounds - 1, [z23])[0]


@pytest.mark.parametrize("rounds", [1, ROUNDS])  # one round alone; round 1, two scanned rounds, the last
def test_rounds_match_the_release_algorithm(system, prompts, rounds):
  out = run_system(system, layouts(prompts, rounds))
  for ex in range(len(LENGTHS)):
    expected = reference(system, prompts, ex, rounds)
    got = np.asarray(out.embeds[ex])[np.asarray(out.mask[ex])]
    np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-4, atol=1e-4)


def test_example_independent_of_batch_mates(system, prompts):
  both = run_system(system, layouts(prompts, 3))
  alone = run_system(system, layouts(prompts, 3, slice(1, 2)))
  np.testing.assert_allclose(np.asarray(both.embeds[1]), np.asarray(alone.embeds[0]), rtol=1e-5, atol=1e-5)


def test_gradient_reaches_the_first_rounds_links(system, prompts):
  """Through later frozen agents and rounds, the planner's inner link gets a gradient from the decoder's input."""
  lays = layouts(prompts, 2)
  graphdef, links, rest = nnx.split(system, nnx.All(nnx.Param, nnx.PathContains("planner")), ...)

  def loss(links):
    sysm = nnx.merge(graphdef, links, rest)
    return jnp.sum(run_rounds(sysm, lays[0], None, lays[1], steps=STEPS, remat=True).embeds ** 2)

  grads = jax.jit(jax.grad(loss))(links)
  inner = [g for p, g in jax.tree_util.tree_leaves_with_path(grads) if "inner" in jax.tree_util.keystr(p)]
  assert inner and all(np.isfinite(np.asarray(g)).all() for g in inner)
  assert max(float(jnp.abs(g).max()) for g in inner) > 0


def test_pattern_validation():
  with pytest.raises(ValueError, match="goes backwards within a round"):
    Pattern("bad", ("a", "b"), (Edge("b", "a", "x"),), decoder="b")
  with pytest.raises(ValueError, match="decoder 'c'"):
    Pattern("bad", ("a", "b"), (), decoder="c")
  assert SEQUENTIAL.thinks("solver", final_round=False) and not SEQUENTIAL.thinks("solver", final_round=True)
