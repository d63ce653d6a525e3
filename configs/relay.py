"""The latent relay: the mechanism proof that trained links carry information between agents.

A reader agent alone sees a note (`{context}`); an answerer sees only the question and the reader's latent
thoughts, never the note. The fact asked for (a random four-digit code) can reach the answerer only through the
links, so fresh links sit at chance and training must raise it. Both agents are real pretrained models from the
registry. Records are jsonl with `context`, `question` and `answer`
(`python -m rmas_jax.evaluation.relay_data --out DIR` writes new ones); scoring is exact match (`task = "exact"`).

`configs/relay.py` (default): the recall variant, SmolLM2 reader and SmolLM2 answerer;
`:sum`: the context gives two counts and the answer is their sum, so the answerer must use the relayed numbers;
`:mixed`: the recall variant with a Qwen2.5-Coder answerer (two model families).
Other files: `--config.train.data_path=... --config.eval.path=...`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from base import style_config  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(os.path.dirname(HERE), "data", "relay")

PRESETS = {
  "default": [("reader", "smollm2-135m-instruct"), ("answerer", "smollm2-135m-instruct")],
  "sum": [("reader", "smollm2-135m-instruct"), ("answerer", "smollm2-135m-instruct")],
  "mixed": [("reader", "smollm2-135m-instruct"), ("answerer", "qwen2.5-coder-0.5b-instruct")],
}

PATTERN = dict(name="relay", roles=["reader", "answerer"], decoder="answerer",
               edges=[dict(src="reader", dst="answerer", slot="note")])  # fmt: skip

# Only the reader's prompt names {context}; the answerer's names {question} and its slot, never the context.
# Short turns keep every prompt within 64 slots (latents included), half the cost of the next bucket.
SYSTEM = "You are a helpful assistant."
PROMPTS = {
  "recall": dict(
    reader=dict(system=SYSTEM, first="Note: {context}\nWhat is the four-digit number in the note?"),
    answerer=dict(system=SYSTEM, first="A teammate read a note and passed on its number: {note}\n{question} "
                                       "Reply with the number only."),  # fmt: skip
  ),
  "sum": dict(
    reader=dict(system=SYSTEM, first="Note: {context}\nWhat are the two numbers in the note?"),
    answerer=dict(system=SYSTEM, first="A teammate read a note and passed on its numbers: {note}\n{question} "
                                       "Reply with the number only."),  # fmt: skip
  ),
}


def get_config(preset: str | None = None):
  c = style_config("relay", PRESETS, preset, "configs/relay.py")
  variant = "sum" if preset == "sum" else "recall"
  c.pattern = PATTERN
  c.prompts = PROMPTS[variant]
  c.task = "exact"
  c.inference.rounds = 1
  c.inference.latent_steps = 8
  c.generation.max_new_tokens = 12
  # The relay's recipe (README, "The latent relay"): links scaled to the receiver's token norm, an outer link that
  # starts by passing the reader's latents on, an inner objective that tells tokens apart, and a small outer rate
  # (1e-3 scrambled the identity start within tens of Adam steps; 1e-4 let the fact through).
  # (`:mixed` crosses widths, 576 -> 896, where no identity exists: its outer link starts as the release's do.)
  c.links.update(scale_to_embeddings=True, outer_init="torch" if preset == "mixed" else "identity")
  c.train.update(
    data_path=os.path.join(DATA, variant, "train.jsonl"),
    examples=2000,
    inner_objective="contrastive",
    inner_steps=80,
    outer_steps=150,
    batch_size=8,
    inner_lr=1e-2,
    outer_lr=1e-4,
    rounds=1,
    latent_steps=8,
    target_tokens=8,
    inner_tokens=96,  # the reader's prompt and its restating of the note (`gold_reader`)
    prompt_bucket=64,
    checkpoint_every=25,
    eval_every=10,
    eval_examples=32,
  )
  c.eval.update(dataset="relay", path=os.path.join(DATA, variant, "test.jsonl"), split="", limit=200, batch_size=25,
                rounds=1, latent_steps=8)  # fmt: skip
  return c
