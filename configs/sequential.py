"""Sequential style: planner -> critic -> solver, the solver's thoughts looping back to the planner.

`--config configs/sequential.py` runs the real small agents shipped on PyPI (CPU-sized);
`--config configs/sequential.py:light` and `:scaled` name the paper's Table 1 light and scaled systems by HF hub id
(the scaled solver is a hybrid Qwen3.5, `rmas_jax.models.qwen3_5`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from base import style_config  # noqa: E402

PRESETS = {
  "default": [
    ("planner", "smollm2-135m-instruct"),
    ("critic", "gemma3-270m"),
    ("solver", "qwen2.5-coder-0.5b-instruct"),
  ],
  "light": [
    ("planner", "Qwen/Qwen3-1.7B"),
    ("critic", "meta-llama/Llama-3.2-1B-Instruct"),
    ("solver", "Qwen/Qwen2.5-Math-1.5B-Instruct"),
  ],
  "scaled": [
    ("planner", "google/gemma-3-4b-it"),
    ("critic", "meta-llama/Llama-3.2-3B-Instruct"),
    ("solver", "Qwen/Qwen3.5-4B"),
  ],
}


def get_config(preset: str | None = None):
  return style_config("sequential", PRESETS, preset, "configs/sequential.py")
