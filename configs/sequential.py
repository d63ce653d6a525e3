"""Sequential style: planner -> critic -> solver, the solver's thoughts looping back to the planner.

`--config configs/sequential.py` runs the real small agents shipped on PyPI (CPU-sized);
`--config configs/sequential.py:light` and `:scaled` name the paper's Table 1 light and scaled systems by HF hub id
(the scaled solver is a hybrid Qwen3.5, `rmas_jax.models.qwen3_5`), with the public release's inference settings
for MATH500 and, in `release`, its repositories of trained links (`python -m rmas_jax convert from-release` reads
them; see the README's "Release checkpoints").
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from base import style_config  # noqa: E402
from base_release import release_settings  # noqa: E402

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


# The release's repositories per preset: one of outer links, one per role (its frozen model and inner links).
RELEASE = {
  "light": dict(
    outer="RecursiveMAS/Sequential-Light-Outerlinks",
    roles=dict(planner="RecursiveMAS/Sequential-Light-Planner-Qwen3-1.7B",
               critic="RecursiveMAS/Sequential-Light-Critic-Llama3.2-1B",
               solver="RecursiveMAS/Sequential-Light-Solver-Qwen2.5-Math-1.5B"),  # fmt: skip
  ),
  "scaled": dict(
    outer="RecursiveMAS/Sequential-Scaled-Outerlinks",
    roles=dict(planner="RecursiveMAS/Sequential-Scaled-Planner-Gemma3-4B",
               critic="RecursiveMAS/Sequential-Scaled-Critic-Llama3.2-3B",
               solver="RecursiveMAS/Sequential-Scaled-Solver-Qwen3.5-4B"),  # fmt: skip
  ),
}
# The release's recommended MATH500 settings: latent steps 48 (light) and 32 (scaled); its answer budget on MATH500
# is 1000 tokens for the light system and 2000 otherwise.
LATENT_STEPS = {"light": 48, "scaled": 32}
MAX_NEW_TOKENS = {"light": 1000, "scaled": 2000}


def get_config(preset: str | None = None):
  c = style_config("sequential", PRESETS, preset, "configs/sequential.py")
  if preset in RELEASE:
    release_settings(c, RELEASE[preset], latent_steps=LATENT_STEPS[preset], max_new_tokens=MAX_NEW_TOKENS[preset])
  return c
