"""Training teaches the links: a short run of the latent relay (`configs/relay.py`, real SmolLM2 agents from PyPI)
must bring the held-out answer loss well below what fresh links score on the same held-out records.

The held-out records are set apart from the training file by the trainer and never trained on, and the answerer
never sees the note, so the loss can fall only through the outer path: the reader's latent rollout, the outer link,
the answerer's prompt and its cross-entropy. Cutting the gradient anywhere on that path (or wiring the loss to
anything but the gold answer) leaves the held-out loss at the fresh links' value, and this test fails.
"""

import json

from rmas_jax.config_lib import load_config
from rmas_jax.training.trainer import train

STEPS = 12
MARGIN = 0.3  # nats per answer token; the fresh links' held-out loss is about 3.6 at the start of training


def test_a_short_relay_run_lowers_the_held_out_answer_loss(tmp_path):
  config = load_config("configs/relay.py")
  # The release's fresh links (random outer map, unscaled): the test is of the gradient path, not of the relay recipe
  config.links.update(scale_to_embeddings=False, outer_init="torch")
  config.train.update(inner_steps=0, outer_steps=STEPS, batch_size=8, outer_lr=1e-3, warmup=0, examples=264,
                      eval_every=STEPS, eval_examples=16, checkpoint_every=STEPS, round_credit=True)  # fmt: skip
  summary = train(config, str(tmp_path), progress=False)
  assert summary["steps"] == STEPS
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  heldout = [r for r in records if r["stage"] == "heldout_outer"]
  assert [r["step"] for r in heldout] == [0, STEPS]  # the fresh links first, on the same 16 held-out records
  fresh, trained = heldout[0]["loss"], heldout[-1]["loss"]
  assert trained < fresh - MARGIN, (fresh, trained)
  steps = [r for r in records if r["stage"] == "outer"]
  assert all(len(r["round_grad_norms"]) == 1 and r["round_grad_norms"][0] > 0 for r in steps)
  assert summary["best"]["step"] == STEPS and (tmp_path / "checkpoints_best").is_dir()
