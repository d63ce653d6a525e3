"""KV-cached latent rollout equals the release's re-run-everything rollout, values and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rmas_jax.latent.rollout import latent_rollout, latent_rollout_uncached
from rmas_jax.links.recursive_link import inner_link
from rmas_jax.models.kv_cache import KVCache
from tiny_models import left_padded_batch, random_model

STEPS = 5


@pytest.fixture(scope="module", params=["llama3", "gemma3", "qwen3"])
def agent(request):
  model = random_model(request.param, scan_layers=False)
  link = inner_link(model.cfg.hidden_size, rngs=nnx.Rngs(2))
  ids, mask = left_padded_batch(seed=4, lengths=(9, 6))
  return model, link, model.embed(jnp.asarray(ids, jnp.int32)), jnp.asarray(mask)


def cached(model, link, embeds, mask, remat=False):
  cache = KVCache.init(model.cfg, embeds.shape[0], embeds.shape[1] + STEPS)
  return latent_rollout(model, link, embeds, mask, cache, STEPS, remat=remat).hidden


def rerun(model, link, embeds, mask):
  return latent_rollout_uncached(model, link, embeds, mask, STEPS)


def compiled(rollout, model, link):
  """`rollout(model, link, embeds, mask)` jit-compiled with the weights as arguments, and its gradient."""
  (mdef, mstate), (ldef, lstate) = nnx.split(model), nnx.split(link)

  def run(lstate, mstate, embeds, mask):
    return rollout(nnx.merge(mdef, mstate), nnx.merge(ldef, lstate), embeds, mask)

  return jax.jit(run), lstate, mstate


def test_cached_equals_rerun(agent):
  model, link, embeds, mask = agent
  fast, lstate, mstate = compiled(cached, model, link)
  slow, _, _ = compiled(rerun, model, link)
  fast, slow = fast(lstate, mstate, embeds, mask), slow(lstate, mstate, embeds, mask)
  assert fast.shape == (2, STEPS, model.cfg.hidden_size)
  # The README's "within 1e-4", absolute (measured at most 3.1e-6, on values up to 4).
  np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), rtol=0, atol=1e-4)


def test_gradients_through_the_rollout_equal_the_rerun(agent):
  """The outer training backpropagates through every latent step: d(loss)/d(link) agrees with the re-run."""
  model, link, embeds, mask = agent
  target = jax.random.normal(jax.random.key(5), (2, STEPS, model.cfg.hidden_size))

  def gradient(rollout):
    run, lstate, mstate = compiled(rollout, model, link)
    loss = lambda lstate: jnp.mean((run(lstate, mstate, embeds, mask) - target) ** 2)  # noqa: E731
    return jax.jit(jax.grad(loss))(lstate)

  g_fast = gradient(functools.partial(cached, remat=True))
  g_slow = gradient(rerun)
  leaves = list(zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_slow), strict=True))
  assert any(np.abs(np.asarray(a)).max() > 0 for a, _ in leaves)
  for a, b in leaves:
    # Within 1e-4 of each parameter's largest gradient entry, as the README says (measured at most 1.2e-6 of it).
    # Not elementwise-relative: entries a thousand times smaller than their array's largest carry float32 rounding
    # of the sums they come from, up to 1.5e-3 of themselves.
    scale = float(np.abs(np.asarray(b)).max())
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-4 * scale)


def test_one_step_is_the_prompt_state(agent):
  model, link, embeds, mask = agent
  one = latent_rollout(model, link, embeds, mask, KVCache.init(model.cfg, 2, embeds.shape[1]), 1).hidden
  full = model(inputs_embeds=embeds, attention_mask=mask, return_logits=False).hidden[:, -1]
  np.testing.assert_allclose(np.asarray(one[:, 0]), np.asarray(full), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="latent steps must be >= 1"):
    latent_rollout(model, link, embeds, mask, KVCache.init(model.cfg, 2, 16), 0)
