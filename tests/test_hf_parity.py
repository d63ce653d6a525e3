"""Per family: our loader + decoder against HF transformers on the same tiny random checkpoint."""

import jax.numpy as jnp
import numpy as np
import pytest

from rmas_jax.weights.hf_checkpoint import load_hf_model
from tiny_models import hf_forward, left_padded_batch, make_hf_model, tiny_configs

torch = pytest.importorskip("torch")
FAMILIES = list(tiny_configs())
# The README's "within 1e-4": absolute, on values of magnitude 1.5 to 6 (measured at most 1.2e-5, Gemma 3's hidden
# state; 1e-6 for the other families).
ATOL = 1e-4


@pytest.fixture(
  scope="module",
  params=[(f, scan) for f in FAMILIES for scan in (True, False)],
  ids=lambda p: f"{p[0]}-{'scan' if p[1] else 'loop'}",
)
def pair(request, tmp_path_factory):
  family, scan = request.param
  directory = str(tmp_path_factory.mktemp(family))
  hf = make_hf_model(family, directory)
  return family, hf, load_hf_model(directory, scan_layers=scan)


def test_single_sequence(pair):
  _, hf, ours = pair
  ids, mask = left_padded_batch(lengths=(12,))
  ref_logits, ref_hidden = hf_forward(hf, ids, mask)
  out = ours(jnp.asarray(ids, jnp.int32))
  np.testing.assert_allclose(np.asarray(out.hidden), ref_hidden, rtol=0, atol=ATOL)
  np.testing.assert_allclose(np.asarray(out.logits), ref_logits, rtol=0, atol=ATOL)


def test_left_padded_batch(pair):
  _, hf, ours = pair
  ids, mask = left_padded_batch(seed=1)
  ref_logits, ref_hidden = hf_forward(hf, ids, mask)
  out = ours(jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask))
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(out.hidden)[real], ref_hidden[real], rtol=0, atol=ATOL)
  np.testing.assert_allclose(np.asarray(out.logits)[real], ref_logits[real], rtol=0, atol=ATOL)
