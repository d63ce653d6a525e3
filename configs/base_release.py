"""The public release's inference settings and repositories, shared by the presets that name its systems
(`sequential.py:light` and `:scaled`, and `:paper` of mixture, distillation and deliberation).

Settings are those of the release's runner (`run.py`): 3 recursion rounds, seed 42, sampling at temperature 0.6
with top-p 0.95 and no top-k; latent steps and the answer budget vary by system. `release` names the repositories
`python -m rmas_jax convert from-release` reads when `--outer` / `--inner` are not given. The release's links were
trained with the release's prompts; this project's prompts are its own (declare the release's in `config.prompts`
to reproduce its numbers).
"""

import ml_collections


def release_settings(c: ml_collections.ConfigDict, repos: dict, *, latent_steps: int, max_new_tokens: int,
                     rounds: int = 3) -> None:  # fmt: skip
  """Sets the release's decoding and recursion settings on `c` and records its repositories in `c.release`."""
  c.seed = 42
  c.inference.rounds = rounds
  c.inference.latent_steps = latent_steps
  c.generation.update(max_new_tokens=max_new_tokens, greedy=False, temperature=0.6, top_p=0.95, top_k=0)
  c.release = ml_collections.ConfigDict(dict(outer=repos["outer"], roles=dict(repos["roles"])))
