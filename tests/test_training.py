"""Link training on tiny agents: backbones never change, each stage's optimizer touches only its link group and
keeps state only for links, the outer gradient reaches round-1 links through later frozen agents, a non-finite
step changes nothing, and a run killed with SIGKILL resumes to exactly the losses of an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rmas_jax.config_lib import load_config
from rmas_jax.patterns.from_config import load_system
from rmas_jax.training import trainer
from rmas_jax.training.batches import inner_batch, outer_batch
from rmas_jax.training.objectives import rollout_loss
from rmas_jax.training.optimizer import link_groups, split_links, stage_optimizer

CONFIG = "configs/tiny.py:distillation"


@pytest.fixture(scope="module")
def setup():
  config = load_config(CONFIG)
  loaded = load_system(config, progress=False)
  return config, loaded, trainer.training_examples(config)


def leaves_by_group(links, groups):
  out = {"inner": [], "outer": []}
  for leaf, group in zip(jax.tree.leaves(links), jax.tree.leaves(groups), strict=True):
    out[group].append(np.asarray(leaf))
  return out


def test_stage_optimizers_touch_only_their_group(setup):
  config, loaded, examples = setup
  config = config.copy_and_resolve_references()
  config.train.warmup = 0  # with a warm-up the first step's rate is 0
  graphdef, links, frozen = split_links(loaded.system)
  groups = link_groups(links)
  roles = loaded.system.pattern.roles
  batch = {r: inner_batch(loaded.tokenizers[r], examples[:2], task="math", length=96, whole=False) for r in roles}
  ob = outer_batch(loaded.system, loaded.tokenizers, examples[:2], rounds=2, steps=2, task="math", target="final",
                   target_tokens=32, min_prompt=16)  # fmt: skip
  for stage, step_fn, b in (("inner", trainer.make_inner_step, batch), ("outer", trainer.make_outer_step, ob)):
    opt = stage_optimizer(stage, config.train.copy_and_resolve_references(), 10)
    opt_state = opt.init(links)
    link_count = sum(x.size for x in jax.tree.leaves(links))
    group_count = sum(x.size for x in leaves_by_group(links, groups)[stage])
    state_count = sum(x.size for x in jax.tree.leaves(opt_state))
    assert 2 * group_count <= state_count <= 2 * group_count + 8 < 2 * link_count  # Adam moments of one group only
    fn = step_fn(graphdef, opt, list(loaded.system.pattern.roles)) if stage == "inner" else step_fn(graphdef, opt, 2)
    before = leaves_by_group(jax.tree.map(jnp.copy, links), groups)
    frozen_before = [np.asarray(x).copy() for x in jax.tree.leaves(frozen)]
    new_links, _, metrics = fn(jax.tree.map(jnp.copy, links), frozen, opt_state, b)
    after = leaves_by_group(new_links, groups)
    other = "outer" if stage == "inner" else "inner"
    assert bool(metrics["finite"])
    assert all(np.array_equal(x, y) for x, y in zip(before[other], after[other], strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(before[stage], after[stage], strict=True))
    assert all(np.array_equal(x, np.asarray(y)) for x, y in zip(frozen_before, jax.tree.leaves(frozen), strict=True))


def test_outer_gradient_reaches_first_round_links(setup):
  _, loaded, examples = setup
  graphdef, links, frozen = split_links(loaded.system)

  def grads(rounds):
    b = outer_batch(loaded.system, loaded.tokenizers, examples[:2], rounds=rounds, steps=2, task="math",
                    target="final", target_tokens=32, min_prompt=16)  # fmt: skip

    def loss(lk):
      from flax import nnx

      s = nnx.merge(graphdef, lk, frozen)
      return rollout_loss(s, b.first, b.middle, b.last, b.target, b.target_mask, steps=2)

    return jax.jit(jax.grad(loss))(links)

  def norm(g, *path):
    node = g
    for p in path:
      node = node[p]
    return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(node)))

  two = grads(2)
  # The learner -> expert feedback link acts only between round 1 and round 2: its gradient must pass through the
  # expert's round-2 rollout, the expert -> learner link and the learner's decode, all frozen agents.
  assert norm(two, "outer", "learner_to_expert") > 0
  assert norm(two, "agents", "expert", "inner") > 0 and norm(two, "agents", "learner", "inner") > 0
  one = grads(1)
  assert norm(one, "outer", "learner_to_expert") == 0  # with one round nothing is fed back


def test_per_round_credit_sums_to_the_gradient(setup):
  """Round r run by its own copy of the links: the same loss as the scanned rounds, the copies' gradients sum to the
  links' gradient, and each round's share is what reaches the links through that round (the last round's copy gets
  no feedback-link gradient: its feedback goes nowhere)."""
  from rmas_jax.training.objectives import rollout_loss_by_round

  config, loaded, examples = setup
  graphdef, links, frozen = split_links(loaded.system)
  b = outer_batch(loaded.system, loaded.tokenizers, examples[:2], rounds=3, steps=2, task="math", target="final",
                  target_tokens=32, min_prompt=16)  # fmt: skip

  def whole(links):
    system = nnx.merge(graphdef, links, frozen)
    return rollout_loss(system, b.first, b.middle, b.last, b.target, b.target_mask, steps=2, remat=False)

  def by_round(copies):
    systems = [nnx.merge(graphdef, c, frozen) for c in copies]
    return rollout_loss_by_round(systems, b.first, b.middle, b.last, b.target, b.target_mask, steps=2, remat=False)

  loss, grad = jax.jit(jax.value_and_grad(whole))(links)  # compiled: op-by-op it took minutes
  loss_r, grads_r = jax.jit(jax.value_and_grad(by_round))([links] * 3)
  np.testing.assert_allclose(float(loss_r), float(loss), rtol=1e-6)
  summed = jax.tree.map(lambda *g: sum(g), *grads_r)
  for got, want in zip(jax.tree.leaves(summed), jax.tree.leaves(grad), strict=True):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-7)
  def feedback(g):  # the largest gradient entry of the feedback link learner -> expert
    leaves = jax.tree_util.tree_flatten_with_path(g)[0]
    return max(float(np.abs(np.asarray(x)).max()) for p, x in leaves if "learner_to_expert" in jax.tree_util.keystr(p))

  assert feedback(grads_r[0]) > 0 and feedback(grads_r[1]) > 0 and feedback(grads_r[2]) == 0


def test_non_finite_step_changes_nothing(setup):
  config, loaded, _ = setup
  graphdef, links, frozen = split_links(loaded.system)
  opt = stage_optimizer("outer", config.train, 10)
  opt_state = opt.init(links)
  nan_loss = lambda lk, fr, b: jnp.sum(jax.tree.leaves(lk)[0]) * jnp.nan  # noqa: E731
  new_links, new_state, metrics = trainer._guarded_update(nan_loss, opt, links, frozen, opt_state, None)
  assert not bool(metrics["finite"])
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(links), jax.tree.leaves(new_links), strict=True))
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(opt_state), jax.tree.leaves(new_state), strict=True))


def _train_cmd(workdir):
  return [
    sys.executable,
    "train.py",
    f"--config={CONFIG}",
    f"--workdir={workdir}",
    "--config.train.outer_steps=3",
    "--config.train.examples=8",
  ]


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [(r["step"], r["loss"]) for r in map(json.loads, f)]


def test_kill_and_resume_continues_the_same_losses(tmp_path):
  whole, killed = tmp_path / "whole", tmp_path / "killed"
  first = subprocess.run(_train_cmd(whole), capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr[-2000:]
  assert [s for s, _ in _losses(whole)] == list(range(6))

  proc = subprocess.Popen(_train_cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while not (killed / "checkpoints" / "4").exists():  # step 4 is complete: orbax renames it into place last
    assert proc.poll() is None and time.time() < deadline, "the run ended before its step-4 checkpoint"
    time.sleep(0.05)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  again = subprocess.run(_train_cmd(killed), capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-2000:]
  summary = json.loads(again.stdout.strip().splitlines()[-1])
  assert 4 <= summary["resumed_from"] < 6
  assert _losses(killed) == _losses(whole)  # bit-identical float losses, each step once


def test_gold_answers_are_whole_or_left_out(setup):
  """A gold answer is never cut mid-sentence: it fits whole (worked solution, final line, end of turn) or the
  example is left out of training."""
  config, loaded, examples = setup
  from rmas_jax.training.batches import response_ids

  tok = loaded.tokenizers["learner"]  # byte-level: one id per byte
  e = examples[0]
  whole = f"{e.meta['answer_cot'].split('####')[0].strip()}\nThe answer is \\boxed{{{e.answer}}}.<|im_end|>"
  ids = response_ids(tok, e, "math", 4096)
  assert tok.decode(ids, skip_special_tokens=False) == whole
  assert response_ids(tok, e, "math", len(ids) - 1) is None  # one token short: left out, not cut
  final = response_ids(tok, e, "math", 64, target="final")
  assert tok.decode(final, skip_special_tokens=False) == f"The answer is \\boxed{{{e.answer}}}.<|im_end|>"
  kept = trainer.fitting_examples(loaded, examples[:8], rounds=2, steps=2, task="math", length=1024,
                                  target_tokens=len(ids))  # fmt: skip
  assert e in kept and all(response_ids(tok, x, "math", len(ids)) is not None for x in kept)


def test_inner_turns_are_each_roles_own_prompt_with_its_senders_gold(setup):
  """The inner loop trains each role on its own round-1 prompt, whose slots hold its senders' gold text, and on its
  own gold text; the prompts differ per question (the tiny run once trained on byte-identical turns)."""
  config, loaded, examples = setup
  from rmas_jax.training.batches import gold_text, inner_sequence, inner_turn

  system = loaded.system
  turns = [inner_turn(system, loaded.prompts, "learner", e, rounds=2, task="math") for e in examples[:2]]
  for e, turn in zip(examples[:2], turns, strict=True):
    assert e.question in turn.user and "Your role is the learner" in turn.user
    assert gold_text(e, "expert", "learner", "math") in turn.user  # the expert's gold text in the learner's slot
    assert "<<slot:" not in turn.user
  tok = loaded.tokenizers["learner"]
  seqs = [inner_sequence(tok, t, gold_text(e, "learner", "learner", "math"), 2048)
          for e, t in zip(examples, turns, strict=False)]  # fmt: skip
  assert seqs[0][0] != seqs[1][0]
  ids, marks = seqs[0]
  chat = tok.decode(ids, skip_special_tokens=False)
  assert chat.startswith("<|im_start|>system")  # the chat header is never cut
  response = tok.decode([i for i, m in zip(ids, marks, strict=True) if m], skip_special_tokens=False)
  assert response == gold_text(examples[0], "learner", "learner", "math") + "<|im_end|>"
  prompt_len = marks.index(1)
  assert inner_sequence(tok, turns[0], "x", prompt_len + 1) is None  # too long: left out, not cut from the left
  assert inner_sequence(tok, turns[0], "x", prompt_len + 2) is not None  # "x" and the end-of-turn id


def test_teacher_forced_latents_are_hidden_states_over_the_gold_response(setup):
  """The official training's latents: R_in of the agent's hidden states over the first m tokens of its gold
  response, read after its prompt. Checked against a plain forward of the unpadded [prompt | response] tokens."""
  from rmas_jax.patterns.system import _teacher_forced

  _, loaded, examples = setup
  system, steps = loaded.system, 3
  b = outer_batch(system, loaded.tokenizers, examples[:2], rounds=2, steps=steps, task="math", target="final",
                  target_tokens=32, min_prompt=16, teacher_forced=True)  # fmt: skip
  role = "expert"  # round 1: no incoming latents, so the prompt is tokens only
  lay, gold, agent = b.first[role], b.gold[role], system.agents[role]
  got = _teacher_forced(agent, agent.backbone.embed(lay.ids), lay.mask, gold, steps, remat=False)  # [B, m, d]
  for i in range(2):
    prompt = np.asarray(lay.ids[i])[np.asarray(lay.mask[i]).astype(bool)]
    response = np.asarray(gold.ids[i])[np.asarray(gold.mask[i])]
    ids = jnp.asarray(np.concatenate([prompt, response])[None])
    hidden = agent.backbone(ids, return_logits=False).hidden[0, len(prompt) : len(prompt) + steps]
    np.testing.assert_allclose(np.asarray(got[i]), np.asarray(agent.inner(hidden)), atol=1e-5, rtol=1e-5)


def test_teacher_forced_outer_loss_and_gradients(setup):
  _, loaded, examples = setup
  graphdef, links, frozen = split_links(loaded.system)
  own = dict(examples[0].meta, gold_expert="Add 2.")
  chosen = [examples[0].__class__(**{**examples[0].__dict__, "meta": own}), examples[1]]

  def loss_and_grads(rounds, teacher_forced):
    b = outer_batch(loaded.system, loaded.tokenizers, chosen, rounds=rounds, steps=2, task="math",
                    target="final", target_tokens=32, min_prompt=16, teacher_forced=teacher_forced)  # fmt: skip

    def loss(lk):
      from flax import nnx

      s = nnx.merge(graphdef, lk, frozen)
      return rollout_loss(s, b.first, b.middle, b.last, b.target, b.target_mask, steps=2, gold=b.gold)

    return b, *jax.jit(jax.value_and_grad(loss))(links)

  b, forced, g2 = loss_and_grads(2, True)
  tok = loaded.tokenizers["expert"]
  expert_gold = tok.decode(np.asarray(b.gold["expert"].ids[0])[np.asarray(b.gold["expert"].mask[0])])
  assert expert_gold.startswith("Add 2.")  # the role's own gold text, when the data has one
  assert b.gold["learner"].ids.shape == (2, 32) and bool(jnp.all(b.gold["learner"].mask[:, 0]))
  _, rolled, _ = loss_and_grads(2, False)
  assert np.isfinite(float(forced)) and abs(float(forced) - float(rolled)) > 1e-6
  total = lambda node: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(node)))  # noqa: E731
  assert total(g2["outer"]["learner_to_expert"]) > 0 and total(g2["outer"]["expert_to_learner"]) > 0
  _, _, g1 = loss_and_grads(1, True)
  assert total(g1["outer"]["learner_to_expert"]) == 0


def test_non_finite_steps_in_a_row_stop_the_run(tmp_path, monkeypatch):
  """`train.max_skipped` non-finite steps in a row end the run with an error naming them and the step a rerun
  resumes from, instead of a summary that counts skipped updates (the sequential default once skipped every outer
  step this way and exited 0). Fewer than that are skipped and the run goes on."""
  config = load_config("configs/tiny.py:custom")
  config.train.update(inner_steps=6, outer_steps=0, checkpoint_every=1, examples=8, max_skipped=3)
  real = trainer.make_inner_step
  schedule = {1, 3, 4, 5}  # the steps (calls) reported non-finite

  def flagged(*args, **kwargs):
    step_fn = real(*args, **kwargs)
    calls = iter(range(100))

    def wrapped(links, frozen, opt_state, batch):
      copies = jax.tree.map(jnp.copy, (links, opt_state))  # the step donates its inputs
      new_links, new_state, m = step_fn(copies[0], frozen, copies[1], batch)
      if next(calls) in schedule:  # as `_apply_if_finite` leaves them: nothing changes
        return links, opt_state, dict(m, finite=jnp.asarray(False))
      return new_links, new_state, m

    return wrapped

  monkeypatch.setattr(trainer, "make_inner_step", flagged)
  with pytest.raises(trainer.TrainingIncompleteError, match=r"steps 3-5 \(inner\) gave a non-finite loss or gradient "
                     r"3 times in a row .*the newest checkpoint is step 5 and a rerun resumes there"):  # fmt: skip
    trainer.train(config, str(tmp_path), progress=False)
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["finite"] for r in records] == [True, False, True, False, False, False]


def test_a_lost_final_save_is_an_error_not_a_finished_run(tmp_path, monkeypatch):
  """When the last step's checkpoint is not written (here: the store refuses it, as it does for non-finite links),
  the run raises, naming the step a rerun resumes from, instead of returning a summary (exit 0 in train.py)."""
  from rmas_jax.training.checkpoints import CheckpointStore

  config = load_config("configs/tiny.py:custom")
  config.train.update(inner_steps=2, outer_steps=0, checkpoint_every=1, examples=8)
  real_save = CheckpointStore.save
  monkeypatch.setattr(CheckpointStore, "save", lambda self, step, *a, **k: step < 2 and real_save(self, step, *a, **k))
  with pytest.raises(trainer.TrainingIncompleteError, match=r"step 2's checkpoint was not written \(the newest is "
                     r"step 1\)"):  # fmt: skip
    trainer.train(config, str(tmp_path), progress=False)
