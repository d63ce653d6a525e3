"""Distillation style: an expert thinks first and guides a learner, which answers; from round 2 the expert reads
the learner's thoughts.

`--config configs/distillation.py` runs the PyPI agents (the larger Qwen2.5-Coder guides SmolLM2);
`:paper` names Table 1's Qwen3.5 pair (hybrid Gated DeltaNet models, `rmas_jax.models.qwen3_5`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from base import style_config  # noqa: E402

PRESETS = {
  "default": [("expert", "qwen2.5-coder-0.5b-instruct"), ("learner", "smollm2-135m-instruct")],
  "paper": [("expert", "Qwen/Qwen3.5-9B"), ("learner", "Qwen/Qwen3.5-4B")],
}


def get_config(preset: str | None = None):
  return style_config("distillation", PRESETS, preset, "configs/distillation.py")
