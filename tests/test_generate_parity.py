"""Greedy generation equals transformers' `generate` token for token on every family's tiny model."""

import numpy as np
import pytest

from rmas_jax.generation.decode_state import choose_tokens
from rmas_jax.generation.sampler import SamplingConfig, bucket, generate
from rmas_jax.weights.hf_checkpoint import load_hf_model
from tiny_models import left_padded_batch, make_hf_model, tiny_configs

torch = pytest.importorskip("torch")
NEW = 12


@pytest.fixture(scope="module", params=list(tiny_configs()))
def pair(request, tmp_path_factory):
  directory = str(tmp_path_factory.mktemp(request.param))
  hf = make_hf_model(request.param, directory, seed=7)
  hf.generation_config.eos_token_id = None  # run the full length on both sides
  hf.generation_config.pad_token_id = 0
  return hf, load_hf_model(directory)


def hf_greedy(hf, ids, mask):
  with torch.no_grad():
    out = hf.generate(
      input_ids=torch.tensor(ids),
      attention_mask=torch.tensor(mask),
      max_new_tokens=NEW,
      do_sample=False,
      min_new_tokens=NEW,
    )
  return out[:, ids.shape[1] :].numpy()


def test_greedy_single(pair):
  hf, ours = pair
  ids, mask = left_padded_batch(seed=8, lengths=(9,))
  expected = hf_greedy(hf, ids, mask)[0].tolist()
  assert generate(ours, [ids[0].tolist()], max_new_tokens=NEW) == [expected]


def test_greedy_left_padded_batch(pair):
  hf, ours = pair
  ids, mask = left_padded_batch(seed=9, lengths=(10, 4, 7))
  expected = hf_greedy(hf, ids, mask).tolist()
  prompts = [row[m.astype(bool)].tolist() for row, m in zip(ids, mask, strict=True)]
  assert generate(ours, prompts, max_new_tokens=NEW) == expected


def test_stop_token_ends_one_example_only(pair):
  _, ours = pair
  prompts = [[5, 6, 7], [9, 10, 11, 12]]
  free = generate(ours, prompts, max_new_tokens=6)
  stop = free[0][1]
  stopped = generate(ours, prompts, max_new_tokens=6, stop_ids=[stop])
  assert stopped[0] == free[0][: free[0].index(stop) + 1]
  if stop not in free[1]:
    assert stopped[1] == free[1]


def test_bucket_sizes():
  assert [bucket(n) for n in (1, 16, 17, 100, 128, 129)] == [16, 16, 32, 128, 128, 256]


def test_sampling_filters():
  """top-k=1 and a tiny top-p both reduce sampling to argmax; temperature sampling follows the softmax."""
  import jax
  import jax.numpy as jnp

  logits = jnp.array([[0.1, 2.0, 0.5, 1.9], [3.0, 0.0, 2.9, -1.0]])
  key = jax.random.key(0)
  argmax = np.array([1, 0])
  for k, p in ((1, 1.0), (0, 1e-3)):
    np.testing.assert_array_equal(choose_tokens(logits, key, False, 1.0, k, p), argmax)
  draws = jax.vmap(lambda k: choose_tokens(logits[:1], k, False, 1.0, 0, 1.0))(jax.random.split(key, 4000))
  freq = np.bincount(np.asarray(draws)[:, 0], minlength=4) / 4000
  np.testing.assert_allclose(freq, np.asarray(jax.nn.softmax(logits[0])), atol=0.03)
  assert SamplingConfig().greedy


def test_generation_from_embeddings_equals_from_ids(pair):
  """The final decoder starts from input vectors; fed the token embeddings it must act as from the ids."""
  import jax.numpy as jnp

  from rmas_jax.generation.sampler import generate_from_embeddings, left_pad

  _, ours = pair
  prompts = [[5, 6, 7, 8], [9, 10]]
  ids, mask = left_pad(prompts, 16)
  embeds = ours.embed(jnp.asarray(ids))
  got = generate_from_embeddings(ours, embeds, jnp.asarray(mask), max_new_tokens=8)
  assert got == generate(ours, prompts, max_new_tokens=8)
