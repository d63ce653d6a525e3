"""Tiny random agents of different widths and families (nothing downloaded), for tests and smoke runs of every
style: `configs/tiny.py` (sequential), `:mixture`, `:distillation`, `:deliberation`, `:qwen3_5` (sequential, with
hybrid Qwen3.5 planner and solver), and `:custom`, a two-agent pattern and its prompts declared right here, which
runs without any code of its own."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from base import style_config  # noqa: E402

PRESETS = {
  "default": [("planner", "tiny:qwen3:64"), ("critic", "tiny:gemma3:48"), ("solver", "tiny:llama:32")],
  "mixture": [
    ("math_expert", "tiny:qwen2:32"),
    ("code_expert", "tiny:mistral:48"),
    ("science_expert", "tiny:gemma3:64"),
    ("summarizer", "tiny:llama:48"),
  ],
  "distillation": [("expert", "tiny:qwen3:64"), ("learner", "tiny:llama:32")],
  "deliberation": [("reflector", "tiny:gemma3:48"), ("tool_caller", "tiny:qwen2:32")],
  "custom": [("drafter", "tiny:mistral:48"), ("reviewer", "tiny:qwen3:32")],
  # The sequential system with hybrid Qwen3.5 (Gated DeltaNet + gated attention) planner and solver.
  "qwen3_5": [("planner", "tiny:qwen3_5:32:1"), ("critic", "tiny:qwen3:32"), ("solver", "tiny:qwen3_5:32")],
}
STYLES = {"default": "sequential", "custom": "draft_review", "qwen3_5": "sequential"}

# A pattern the code does not know: a drafter thinks, a reviewer reads the draft and answers; from round 2 the
# drafter reads the reviewer's thoughts.
CUSTOM_PATTERN = dict(
  name="draft_review",
  roles=["drafter", "reviewer"],
  edges=[dict(src="drafter", dst="reviewer", slot="draft"), dict(src="reviewer", dst="drafter", slot="review",
                                                                  feedback=True)],  # fmt: skip
  decoder="reviewer",
)
CUSTOM_PROMPTS = dict(
  drafter=dict(
    first="Draft a short solution outline.\n\nProblem:\n{question}",
    later="Round {round} of {rounds}. The reviewer said:\n{review}\nRevise the outline.\n\nProblem:\n{question}",
  ),
  reviewer=dict(first="Outline:\n{draft}\n\nProblem:\n{question}\n\n{instruction}"),
)


def get_config(preset: str | None = None):
  c = style_config(STYLES.get(preset or "default", preset), PRESETS, preset, "configs/tiny.py")
  c.inference.latent_steps = 4
  c.generation.max_new_tokens = 16
  # Byte-level tokenizers: a worked gsm_symbolic solution is hundreds of tokens, so the tiny run learns the final
  # answer line (`target="final"`) and its inner turns get room for a whole question.
  c.train.update(examples=64, inner_steps=3, outer_steps=4, rounds=2, latent_steps=3, target="final",
                 target_tokens=32, inner_tokens=1024, prompt_bucket=1024, checkpoint_every=2, warmup=2)  # fmt: skip
  if preset == "custom":
    c.pattern = CUSTOM_PATTERN
    c.prompts = CUSTOM_PROMPTS
  if preset == "deliberation":
    c.tools.enabled = True
    c.tools.names = ["python"]
  return c
