"""RecursiveLinks against the release's PyTorch construction, and the Table 4 designs against their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rmas_jax.links.recursive_link import DESIGNS, LinkParam, RecursiveLink, inner_link, outer_link

torch = pytest.importorskip("torch")


def to_torch(linear) -> "torch.nn.Linear":
  din, dout = linear.kernel[...].shape
  t = torch.nn.Linear(din, dout)
  with torch.no_grad():
    t.weight.copy_(torch.tensor(np.asarray(linear.kernel[...]).T))
    t.bias.copy_(torch.tensor(np.asarray(linear.bias[...])))
  return t


def perturbed(link):
  """Moves every weight off its init (LayerNorm gains and biases too) so each one matters."""
  graphdef, state = nnx.split(link)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(3), len(leaves))
  leaves = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
  return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))


def torch_layernorm(ln, dim):
  t = torch.nn.LayerNorm(dim)  # eps 1e-5, the release's default
  with torch.no_grad():
    t.weight.copy_(torch.tensor(np.asarray(ln.weight[...])))
    t.bias.copy_(torch.tensor(np.asarray(ln.bias[...])))
  return t


def test_official_inner_matches_torch_construction():
  d = 24
  link = perturbed(inner_link(d, rngs=nnx.Rngs(0)))
  pre, post = torch_layernorm(link.pre_ln, d), torch_layernorm(link.post_ln, d)
  p1, p2, gelu = to_torch(link.proj1), to_torch(link.proj2), torch.nn.GELU()
  x = np.random.default_rng(0).normal(size=(5, d)).astype(np.float32) * 3
  with torch.no_grad():
    xt = torch.tensor(x)
    ref = post(xt + p2(gelu(p1(pre(xt))))).numpy()
  np.testing.assert_allclose(np.asarray(link(jnp.asarray(x))), ref, rtol=1e-5, atol=1e-5)


def test_official_outer_matches_torch_construction():
  d_in, d_out = 24, 16
  link = perturbed(outer_link(d_in, d_out, rngs=nnx.Rngs(0)))
  assert link.proj1.kernel[...].shape == (d_in, 2 * d_out)  # hidden width 2·d_out
  src, tgt = torch_layernorm(link.pre_ln, d_in), torch_layernorm(link.post_ln, d_out)
  p1, p2, w3, gelu = to_torch(link.proj1), to_torch(link.proj2), to_torch(link.residual_proj), torch.nn.GELU()
  x = np.random.default_rng(1).normal(size=(2, 3, d_in)).astype(np.float32) * 3
  with torch.no_grad():
    xt = torch.tensor(x)
    ref = tgt(p2(gelu(p1(src(xt)))) + w3(xt)).numpy()  # the residual reads the un-normalised input
  np.testing.assert_allclose(np.asarray(link(jnp.asarray(x))), ref, rtol=1e-5, atol=1e-5)


def test_torch_default_init_bounds():
  link = inner_link(256, rngs=nnx.Rngs(0))
  w = np.asarray(link.proj1.kernel[...])
  bound = 1 / np.sqrt(256)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound and abs(w.mean()) < 0.05 * bound
  np.testing.assert_array_equal(np.asarray(link.pre_ln.weight[...]), 1.0)


@pytest.mark.parametrize("design", DESIGNS)
def test_paper_designs_follow_their_formulas(design):
  """Table 4's designs; `res+2-layer` is eq. 3 (inner) and eq. 4 (outer)."""
  gelu = lambda z: 0.5 * z * (1 + jax.scipy.special.erf(z / np.sqrt(2)))  # noqa: E731
  x = jax.random.normal(jax.random.key(0), (4, 12))
  for link in (inner_link(12, form="paper", design=design, rngs=nnx.Rngs(1)),
               outer_link(12, 8, form="paper", design=design, rngs=nnx.Rngs(1))):  # fmt: skip
    lin = lambda m, z: z @ m.kernel[...] + m.bias[...]  # noqa: E731
    y = lin(link.proj1, x) if link.proj2 is None else lin(link.proj2, gelu(lin(link.proj1, x)))
    if design.startswith("res+"):
      y = y + (lin(link.residual_proj, x) if link.outer else x)
    np.testing.assert_allclose(np.asarray(link(x)), np.asarray(y), rtol=1e-6, atol=1e-6)
    assert link.pre_ln is None and link.post_ln is None


def test_links_are_their_own_fp32_variable_type():
  link = outer_link(8, 6, rngs=nnx.Rngs(0))
  links = nnx.state(link, LinkParam)
  assert jax.tree.leaves(links) and all(x.dtype == jnp.float32 for x in jax.tree.leaves(links))
  assert not jax.tree.leaves(nnx.state(link, nnx.Not(LinkParam)))
  assert link(jnp.ones((2, 8), jnp.bfloat16)).dtype == jnp.float32


def test_bad_link_arguments():
  with pytest.raises(ValueError, match="inner link maps a space to itself"):
    RecursiveLink(8, 6, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="link form 'nope'"):
    inner_link(8, form="nope", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="Table 4 designs use form='paper'"):
    inner_link(8, design="1-layer", rngs=nnx.Rngs(0))


def test_identity_outer_init_passes_its_input_on_normalised():
  """`outer_init='identity'`: a fresh outer link is `LayerNorm(h) * output_scale` (numpy re-derivation), and the
  first gradient already reaches its last MLP layer."""
  h = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32) * 4.0
  link = outer_link(8, 8, rngs=nnx.Rngs(0), output_scale=0.25, init="identity")
  want = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5) * 0.25
  np.testing.assert_allclose(np.asarray(link(jnp.asarray(h))), want, rtol=1e-5, atol=1e-6)
  graphdef, params = nnx.split(link, LinkParam)
  target = jnp.asarray(np.random.default_rng(1).normal(size=(3, 8)), jnp.float32)
  grads = jax.grad(lambda p: jnp.sum((nnx.merge(graphdef, p)(jnp.asarray(h)) - target) ** 2))(params)
  assert float(jnp.abs(grads["proj2"]["kernel"][...]).max()) > 0
  torch_init = outer_link(8, 8, rngs=nnx.Rngs(0), output_scale=0.25)
  assert not np.allclose(np.asarray(torch_init(jnp.asarray(h))), want, atol=1e-2)  # the release's init is no identity
  with pytest.raises(ValueError, match=r"needs a residual design and equal widths; this outer link is res\+2-layer, "
                                       r"8 -> 6"):  # fmt: skip
    outer_link(8, 6, rngs=nnx.Rngs(0), init="identity")
  with pytest.raises(ValueError, match="outer link init 'nope'"):
    outer_link(8, 8, rngs=nnx.Rngs(0), init="nope")
