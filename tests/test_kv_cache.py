"""Cached prefill + step-by-step equals the full forward; padding and batch-mates never change a result."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rmas_jax.models.kv_cache import KVCache
from tiny_models import jitted, left_padded_batch, random_model, tiny_configs

FAMILIES = list(tiny_configs())


@pytest.fixture(
  scope="module",
  params=[(f, scan) for f in FAMILIES for scan in (True, False)],
  ids=lambda p: f"{p[0]}-{'scan' if p[1] else 'loop'}",
)
def model(request):
  m = random_model(*request.param)
  call = jitted(m)
  call.cfg, call.embed = m.cfg, m.embed
  return call


def test_cached_token_steps_equal_full_forward(model):
  ids, mask = left_padded_batch(seed=2)
  ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask)
  full = model(ids, attention_mask=mask)
  split = 6
  out = model(ids[:, :split], attention_mask=mask[:, :split], cache=KVCache.init(model.cfg, 3, 16))
  hidden, logits, cache = [out.hidden], [out.logits], out.cache
  for t in range(split, ids.shape[1]):
    out = model(ids[:, t : t + 1], attention_mask=mask[:, t : t + 1], cache=cache)
    hidden.append(out.hidden)
    logits.append(out.logits)
    cache = out.cache
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.concatenate(hidden, 1)[real], np.asarray(full.hidden)[real], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.concatenate(logits, 1)[real], np.asarray(full.logits)[real], rtol=1e-5, atol=1e-5)


def test_cached_embedding_steps_equal_full_forward(model):
  """Latent-style steps: prefill token ids, then feed vectors one at a time."""
  ids, mask = left_padded_batch(seed=3, lengths=(8, 5))
  ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask)
  extra = jax.random.normal(jax.random.key(4), (2, 5, model.cfg.hidden_size))
  embeds = jnp.concatenate([model.embed(ids), extra], axis=1)
  full_mask = jnp.concatenate([mask, jnp.ones((2, 5), mask.dtype)], axis=1)
  full = model(inputs_embeds=embeds, attention_mask=full_mask, return_logits=False)
  out = model(ids, attention_mask=mask, cache=KVCache.init(model.cfg, 2, 16), return_logits=False)
  cache, hidden = out.cache, [out.hidden]
  for t in range(5):
    out = model(inputs_embeds=extra[:, t : t + 1], cache=cache, return_logits=False)
    cache = out.cache
    hidden.append(out.hidden)
  real = np.asarray(full_mask, bool)
  np.testing.assert_allclose(np.concatenate(hidden, 1)[real], np.asarray(full.hidden)[real], rtol=1e-5, atol=1e-5)


def test_result_independent_of_batch_mates(model):
  """One prompt alone equals the same prompt left-padded among longer ones (padding never attended)."""
  ids, mask = left_padded_batch(seed=5, lengths=(4, 11, 9))
  alone = model(jnp.asarray(ids[:1, -4:], jnp.int32))
  batch = model(jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(batch.logits)[0, -4:], np.asarray(alone.logits)[0], rtol=1e-5, atol=1e-5)


def test_layer_layouts_agree():
  """Stacked-and-scanned and per-layer weights are the same function."""
  ids, mask = left_padded_batch(seed=7)
  outs = [
    random_model("gemma3", scan)(jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask))
    for scan in (True, False)
  ]
  np.testing.assert_allclose(np.asarray(outs[0].logits), np.asarray(outs[1].logits), rtol=1e-6, atol=1e-6)


def test_padding_slots_never_written_as_valid(model):
  ids, mask = left_padded_batch(seed=6, lengths=(3, 6))
  out = model(jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask), cache=KVCache.init(model.cfg, 2, 8))
  np.testing.assert_array_equal(np.asarray(out.cache.valid)[:, :6], mask.astype(bool))
  np.testing.assert_array_equal(np.asarray(out.cache.next_pos), [3, 6])
  assert int(out.cache.end) == 6


def test_bfloat16_tracks_float32():
  """bf16 weights and activations (the accelerator setting) stay close to fp32 and agree on the argmax."""
  from flax import nnx

  from rmas_jax.models.transformer import CausalLM

  m32 = random_model("qwen3")
  m16 = CausalLM(m32.cfg, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  state = jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(m32))
  nnx.update(m16, state)
  ids = jnp.asarray(left_padded_batch(seed=9, lengths=(12,))[0], jnp.int32)
  a, b = np.asarray(m32(ids).logits), np.asarray(m16(ids).logits)
  assert m16(ids).hidden.dtype == jnp.bfloat16
  np.testing.assert_allclose(b, a, atol=0.1 * np.abs(a).max())
  assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.9
