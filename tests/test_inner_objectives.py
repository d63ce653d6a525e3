"""The inner stage's objectives: eq. 5's cosine and the contrastive option, against numpy re-derivations."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rmas_jax.links.recursive_link import inner_link
from rmas_jax.training.objectives import inner_loss, token_contrast
from tiny_models import random_model


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_contrast(out, table, target, temperature):
  logits = _unit(out) @ _unit(table).T / temperature  # [B, T, V]
  logits = logits - logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return -np.take_along_axis(logp, target[..., None], -1)[..., 0]


def test_token_contrast_is_cross_entropy_over_cosines():
  rng = np.random.default_rng(0)
  out, table = rng.normal(size=(2, 3, 6)), rng.normal(size=(11, 6))
  target = rng.integers(0, 11, size=(2, 3))
  got = token_contrast(jnp.asarray(out, jnp.float32), jnp.asarray(table, jnp.float32), jnp.asarray(target), 0.1)
  np.testing.assert_allclose(np.asarray(got), _numpy_contrast(out, table, target, 0.1), rtol=1e-5, atol=1e-5)


def test_the_mean_of_similar_tokens_meets_cosine_but_not_contrast():
  """Ten 'digits' that share most of their direction: their mean is as close by cosine as each digit is to the
  others, so eq. 5 barely tells a digit from their mean; the contrastive objective does."""
  rng = np.random.default_rng(1)
  shared = rng.normal(size=16)
  digits = shared + 0.3 * rng.normal(size=(10, 16))
  table = np.concatenate([digits, rng.normal(size=(30, 16))])  # digits and unrelated tokens
  target = np.arange(10)[None]  # [1, 10]
  exact, mean = digits[None], np.broadcast_to(digits.mean(0), (1, 10, 16))
  cos = lambda a: 1 - (_unit(a) * _unit(digits[None])).sum(-1).mean()  # noqa: E731
  assert cos(mean) < 0.1  # the mean sits within 0.1 of every digit by cosine
  ce = lambda a: float(token_contrast(jnp.asarray(a, jnp.float32), jnp.asarray(table, jnp.float32),  # noqa: E731
                                      jnp.asarray(target), 0.05).mean())
  assert ce(mean) > np.log(10) - 0.5 and ce(exact) < 0.5  # the mean is chance among the digits; the digit is not


@pytest.mark.parametrize("objective", ["cosine", "contrastive"])
def test_inner_loss_matches_a_numpy_computation(objective):
  backbone = random_model("gemma3")
  link = inner_link(backbone.cfg.hidden_size, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(2)
  ids = rng.integers(1, backbone.cfg.vocab_size, size=(2, 7))
  mask = np.ones((2, 7), bool)
  mask[1, :2] = False  # left padding
  response = np.zeros((2, 7), bool)
  response[:, 4:] = True
  got = inner_loss(backbone, link, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(response), objective=objective,
                   temperature=0.2)  # fmt: skip
  hidden = np.asarray(backbone(jnp.asarray(ids), attention_mask=jnp.asarray(mask), return_logits=False).hidden)
  out = np.asarray(link(jnp.asarray(hidden[:, :-1])))
  table = np.asarray(backbone.input_embedding_matrix())
  if objective == "cosine":
    per = 1 - (_unit(out) * _unit(table[ids[:, 1:]])).sum(-1)
  else:
    per = _numpy_contrast(out, table, ids[:, 1:], 0.2)
  pairs = mask[:, :-1] & response[:, 1:]
  np.testing.assert_allclose(float(got), per[pairs].mean(), rtol=1e-4)
  with pytest.raises(ValueError, match="inner objective 'nope'"):
    inner_loss(backbone, link, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(response), objective="nope")
