"""The analyses the paper rests on, one command each (`python -m rmas_jax.analysis.<study> --help`):

- `gradient_stability`: Theorem 4.1 — Jacobian spectral norms of the latent and text routes against token entropy,
  and the gradient that reaches each round's links in outer training, latent vs text-style recursion.
- `complexity`: Proposition 3.1 — XLA-counted FLOPs and wall time per round of latent vs text recursion.
- `latent_length`: Figure 8 — accuracy, time and tokens against the latent thoughts length m.
- `link_design`: Table 4 — the four RecursiveLink designs, each trained briefly and evaluated.
- `representations`: Figure 7 — PCA of final answers across rounds against the gold answers.

Every command has a fixed seed and writes JSON and PNG files under `benchmarks/results/analysis/` (or `--out`),
never over an existing result.
"""
