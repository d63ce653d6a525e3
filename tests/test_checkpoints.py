"""CheckpointStore: round trips, retention, refusal of non-finite state, crash leftovers and mismatched runs."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from rmas_jax.training.checkpoints import CheckpointMismatchError, CheckpointStore, fingerprint_of

FP = fingerprint_of({"agents": ["planner", "solver"], "link": {"hidden": 8}})


def _links(seed: int = 0) -> dict:
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return {
    "inner": {"w": jax.random.normal(k1, (8, 16), jnp.float32), "b": jax.random.normal(k2, (16,), jnp.float32)},
    "outer": {"w": jax.random.normal(k3, (16, 8), jnp.float32)},
  }


def _trained(seed: int = 0):
  """Links and an adamw state after one update, so that moments and count are not their initial values."""
  links = _links(seed)
  opt = optax.adamw(1e-3)
  opt_state = opt.init(links)
  grads = jax.tree.map(lambda x: 0.1 * x + 0.01, links)
  updates, opt_state = opt.update(grads, opt_state, links)
  return optax.apply_updates(links, updates), opt_state


def _templates(links):
  """Abstract templates, as a trainer resuming without live arrays would build them."""
  abstract_links = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), links)
  return abstract_links, jax.eval_shape(optax.adamw(1e-3).init, abstract_links)


def _assert_bit_identical(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tobytes() == y.tobytes()


def _config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"style": "sequential", "train": {"lr": 1e-3, "steps": 10}})


def test_round_trip_after_restart_is_bit_identical(tmp_path):
  links, opt_state = _trained()
  meta = {"data_position": {"epoch": 1, "index": np.int64(37)}, "config": _config()}
  with CheckpointStore(tmp_path / "run", fingerprint=FP) as store:
    assert store.latest_step() is None
    assert store.save(5, links, opt_state, meta)
    assert store.latest_step() == 5

  # A new object on the same directory stands for the process restarting.
  with CheckpointStore(tmp_path / "run", fingerprint=FP) as store:
    assert store.latest_step() == 5
    links_template, opt_template = _templates(links)
    got_links, got_opt, got_meta = store.restore(links_template=links_template, opt_state_template=opt_template)
  _assert_bit_identical(got_links, links)
  _assert_bit_identical(got_opt, opt_state)
  assert got_meta["step"] == 5
  assert got_meta["data_position"] == {"epoch": 1, "index": 37}
  assert got_meta["config"] == _config().to_dict()
  assert got_meta["fingerprint"] == FP
  assert set(got_meta["versions"]) >= {"jax", "flax", "optax", "orbax-checkpoint"}
  assert got_meta["wall_time"] > 0


def test_nnx_state_links_round_trip_into_concrete_template(tmp_path):
  model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  opt_state = optax.adamw(1e-3).init(nnx.to_pure_dict(state))
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    assert store.save(1, state, opt_state, {})
    template = nnx.state(nnx.Linear(4, 3, rngs=nnx.Rngs(1)), nnx.Param)
    before = nnx.to_pure_dict(template)
    got, _, _ = store.restore(1, links_template=template, opt_state_template=opt_state)
  assert isinstance(got, nnx.State)
  _assert_bit_identical(nnx.to_pure_dict(got), nnx.to_pure_dict(state))
  _assert_bit_identical(nnx.to_pure_dict(template), before)  # the template is not filled in place


def test_optimizer_state_without_arrays_round_trips(tmp_path):
  links = _links()
  opt_state = optax.sgd(1e-2).init(links)  # leafless: orbax alone would refuse to write it
  assert not jax.tree.leaves(opt_state)
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    assert store.save(1, links, opt_state, {})
    got_links, got_opt, _ = store.restore(links_template=links, opt_state_template=optax.sgd(1e-2).init(links))
  _assert_bit_identical(got_links, links)
  assert jax.tree_util.tree_structure(got_opt) == jax.tree_util.tree_structure(opt_state)


def test_keep_two_keeps_the_last_two(tmp_path):
  links, opt_state = _trained()
  with CheckpointStore(tmp_path, fingerprint=FP, keep=2) as store:
    for step in (1, 2, 3):
      assert store.save(step, links, opt_state, {"data_position": step})
    assert store.steps() == [2, 3]
  assert not (tmp_path / "1").exists()


def test_non_finite_state_is_never_written(tmp_path, caplog):
  links, opt_state = _trained()
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    assert store.save(1, links, opt_state, {})
    nan_links = {**links, "outer": {"w": links["outer"]["w"].at[0, 0].set(jnp.nan)}}
    inf_opt = jax.tree.map(lambda x: x.at[...].set(jnp.inf) if x.ndim == 1 else x, opt_state)
    with caplog.at_level(logging.WARNING, logger="rmas_jax.training.checkpoints"):
      assert not store.save(2, nan_links, opt_state, {})
      assert not store.save(3, links, inf_opt, {})
    assert store.latest_step() == 1
  assert "['outer']['w'] holds NaN or inf" in caplog.text
  assert not (tmp_path / "2").exists() and not (tmp_path / "3").exists()


def test_unfinished_saves_are_ignored_and_cleaned(tmp_path):
  links, opt_state = _trained()
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    store.save(1, links, opt_state, {})
    store.save(2, links, opt_state, {})
  # What a save killed before its rename leaves: a temporary step directory, here without its commit file and
  # with an item missing.
  shutil.copytree(tmp_path / "2", tmp_path / "3.orbax-checkpoint-tmp")
  os.remove(tmp_path / "3.orbax-checkpoint-tmp" / "commit_success.txt")
  shutil.rmtree(tmp_path / "3.orbax-checkpoint-tmp" / "opt_state")
  # And a step-named directory that no finished orbax save made (no commit file): restored never.
  os.makedirs(tmp_path / "4" / "links")

  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    assert store.latest_step() == 2
    got, _, meta = store.restore(links_template=links, opt_state_template=opt_state)
  assert meta["step"] == 2
  _assert_bit_identical(got, links)
  assert not (tmp_path / "3.orbax-checkpoint-tmp").exists()


def test_kill_during_save_leaves_the_previous_checkpoint(tmp_path):
  # A child process saves step 1, then SIGKILLs itself during step 2 just before orbax renames the finished
  # temporary directory into place: the latest possible moment for a crash to leave a half checkpoint.
  script = textwrap.dedent(f"""
    import os, signal
    import jax.numpy as jnp, optax
    from orbax.checkpoint._src.path import atomicity
    from rmas_jax.training.checkpoints import CheckpointStore

    links = {{"w": jnp.ones((4, 4), jnp.float32)}}
    opt_state = optax.adamw(1e-3).init(links)
    store = CheckpointStore({str(tmp_path)!r}, fingerprint={FP!r})
    store.save(1, links, opt_state, {{}})

    async def die(*args, **kwargs):
      os.kill(os.getpid(), signal.SIGKILL)

    atomicity.on_commit_callback = die
    store.save(2, {{"w": links["w"] + 1}}, opt_state, {{}})
  """)
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, timeout=120)
  assert proc.returncode == -9, proc.stderr.decode()[-2000:]
  assert (tmp_path / "2.orbax-checkpoint-tmp").is_dir()

  links = {"w": jnp.ones((4, 4), jnp.float32)}
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    assert store.latest_step() == 1
    got, _, _ = store.restore(links_template=links, opt_state_template=optax.adamw(1e-3).init(links))
  _assert_bit_identical(got, links)
  assert not (tmp_path / "2.orbax-checkpoint-tmp").exists()


def test_template_mismatch_is_one_clear_line(tmp_path):
  links, opt_state = _trained()
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    store.save(1, links, opt_state, {})
    wider = {**links, "outer": {"w": jnp.zeros((16, 9), jnp.float32)}}
    more = {**links, "extra": {"w": jnp.zeros((2,), jnp.float32)}}
    expected = {
      "wider": "['outer']['w'] has shape (16, 8) in the checkpoint, (16, 9) in the template",
      "more": "1 template entries not in the checkpoint, e.g. ['extra']['w']",
    }
    for name, template in (("wider", wider), ("more", more)):
      with pytest.raises(CheckpointMismatchError) as e:
        store.restore(links_template=template, opt_state_template=optax.adamw(1e-3).init(template))
      message = str(e.value)
      assert "\n" not in message
      assert str(tmp_path) in message and "different link structure" in message
      assert expected[name] in message


def test_fingerprint_mismatch_refuses_the_directory(tmp_path):
  links, opt_state = _trained()
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    store.save(1, links, opt_state, {})
  other = fingerprint_of({"agents": ["planner", "critic", "solver"], "link": {"hidden": 8}})
  with pytest.raises(CheckpointMismatchError) as e:
    CheckpointStore(tmp_path, fingerprint=other)
  assert "\n" not in str(e.value)
  assert str(tmp_path) in str(e.value) and "different run" in str(e.value)
  # Without the run file, the latest checkpoint's own fingerprint still refuses it.
  os.remove(tmp_path / "rmas_checkpoint_run.json")
  with pytest.raises(CheckpointMismatchError):
    CheckpointStore(tmp_path, fingerprint=other)
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    assert store.latest_step() == 1


def test_fingerprint_ignores_key_order():
  assert fingerprint_of({"a": 1, "b": [1, 2]}) == fingerprint_of({"b": [1, 2], "a": 1})
  assert fingerprint_of(_config()) == fingerprint_of(_config().to_dict())
  assert fingerprint_of({"a": 1}) != fingerprint_of({"a": 2})


def test_no_lingering_non_daemon_threads(tmp_path):
  links, opt_state = _trained()
  before = set(threading.enumerate())
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    store.save(1, links, opt_state, {})
    store.restore(links_template=links, opt_state_template=opt_state)
  # Orbax runs each sync step on a fresh asyncio loop whose executor threads are told to stop but not joined, so
  # they may still be winding down here; what would hang pytest at exit is one that never ends.
  for thread in threading.enumerate():
    if thread not in before and not thread.daemon:
      thread.join(timeout=10)
  lingering = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
  assert not lingering, lingering
