"""Deliberation style: a reflector thinks about the approach; a tool-caller reads its thoughts and answers, running
Python (in a sandboxed subprocess) or searching a local corpus while it writes; from round 2 the reflector reads the
tool-caller's thoughts.

`--config configs/deliberation.py` runs the PyPI agents with the Python tool. Add search with
`--set tools.names='["python","search"]' --set tools.search_corpus=passages.jsonl` (one {"title", "text"} object per
line, or a .txt file with one passage per line); search without a corpus is an error, never a dummy answer.
`:paper` names Table 1's pair of hybrid Qwen3.5 agents (`rmas_jax.models.qwen3_5`), with the public release's
inference settings (`base_release.py`) and its repositories of trained links in `release` (README, "Release
checkpoints").
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from base import style_config  # noqa: E402
from base_release import release_settings  # noqa: E402

PRESETS = {
  "default": [("reflector", "smollm2-135m-instruct"), ("tool_caller", "qwen2.5-coder-0.5b-instruct")],
  "paper": [("reflector", "Qwen/Qwen3.5-4B"), ("tool_caller", "Qwen/Qwen3.5-4B")],
}


RELEASE = dict(
  outer="RecursiveMAS/Deliberation-Outerlinks",
  roles=dict(reflector="RecursiveMAS/Deliberation-Reflector-Qwen3.5-4B",
             tool_caller="RecursiveMAS/Deliberation-Toolcaller-Qwen3.5-4B"),  # fmt: skip
)


def get_config(preset: str | None = None):
  c = style_config("deliberation", PRESETS, preset, "configs/deliberation.py")
  c.tools.enabled = True
  c.tools.names = ["python"]
  if preset == "paper":  # the release runner's defaults, and its tool budget: 5 tool rounds, 10 s per Python run
    release_settings(c, RELEASE, latent_steps=32, max_new_tokens=2000)
    c.tools.update(max_calls=5, python_timeout_s=10.0)
  return c
