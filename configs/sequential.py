"""Sequential style: planner -> critic -> solver, the solver's thoughts looping back to the planner.

`--config configs/sequential.py` runs the real small agents shipped on PyPI (CPU-sized);
`--config configs/sequential.py:light` names the paper's Table 1 light system by HF hub id.
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
}


def get_config(preset: str | None = None):
  return style_config("sequential", PRESETS, preset, "configs/sequential.py")
