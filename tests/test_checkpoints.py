"""CheckpointStore: round trips, retention, refusal of non-finite state, crash leftovers and mismatched runs."""

from __future__ import annotations

import json
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

from rmas_jax.training.checkpoints import (
  CheckpointDamagedError,
  CheckpointMismatchError,
  CheckpointStore,
  fingerprint_of,
)

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


def test_a_mismatch_names_the_fields_that_differ(tmp_path):
  # The run file keeps what the fingerprint hashes, so the refusal says what to set instead of only "different".
  links, opt_state = _trained()
  fields = {"agents": ["planner", "critic"], "train": {"inner_steps": 3, "batch_size": 2}}
  with CheckpointStore(tmp_path, fingerprint=fingerprint_of(fields), fields=fields) as store:
    store.save(1, links, opt_state, {})
  wanted = {"agents": ["planner", "critic"], "train": {"inner_steps": 30, "batch_size": 2}}
  with pytest.raises(CheckpointMismatchError) as e:
    CheckpointStore(tmp_path, fingerprint=fingerprint_of(wanted), fields=wanted)
  assert "\n" not in str(e.value)
  assert "train.inner_steps: 3 there, 30 now" in str(e.value) and "batch_size" not in str(e.value)


def test_an_older_run_file_gains_the_fields_when_it_matches(tmp_path):
  links, opt_state = _trained()
  fields = {"agents": ["planner"], "train": {"rounds": 2}}
  with CheckpointStore(tmp_path, fingerprint=fingerprint_of(fields)) as store:  # written without fields
    store.save(1, links, opt_state, {})
  with CheckpointStore(tmp_path, fingerprint=fingerprint_of(fields), fields=fields):
    pass
  with open(tmp_path / "rmas_checkpoint_run.json") as f:
    assert json.load(f)["fields"] == fields


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


# Verification on restore: damaged checkpoints are detected, reported in one line and passed over.


def _two_steps(tmp_path):
  """Steps 1 and 2 with different links (so a fallback is visible), and their abstract templates."""
  first, second = _trained(0), _trained(1)
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    assert store.save(1, *first, {"data_position": 1})
    assert store.save(2, *second, {"data_position": 2})
  return first, second, _templates(first[0])


def _data_files(step_dir):
  """The array data files (orbax's `d/` chunks) under `step_dir`, smallest first."""
  files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
  return sorted(files, key=lambda p: p.stat().st_size)


def test_overwritten_array_bytes_are_detected_and_the_previous_step_is_used(tmp_path, caplog):
  # One 64 x 64 kernel, so that its chunk is the largest data file and the bytes overwritten are array bytes.
  kernels = [{"w": jax.random.normal(jax.random.key(seed), (64, 64), jnp.float32)} for seed in (0, 1)]
  opt = optax.adamw(1e-3)
  links1, opt1 = kernels[0], opt.init(kernels[0])
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    assert store.save(1, links1, opt1, {"data_position": 1})
    assert store.save(2, kernels[1], opt.init(kernels[1]), {"data_position": 2})
  links_t, opt_t = jax.tree.map(jnp.zeros_like, links1), opt.init(links1)
  # Orbax's data files carry no checksum: 8 bytes overwritten in the middle of the array's chunk load as other
  # numbers (values like 1e30) without a word. Only the hashes written with the checkpoint can tell.
  path = _data_files(tmp_path / "2" / "links")[-1]
  data = bytearray(path.read_bytes())
  data[len(data) // 2 : len(data) // 2 + 8] = b"\x7f" * 8
  path.write_bytes(bytes(data))
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    with pytest.raises(CheckpointDamagedError) as e:
      store.restore(2, links_template=links_t, opt_state_template=opt_t)
    assert "\n" not in str(e.value) and "step 2 is damaged" in str(e.value)
    with caplog.at_level(logging.WARNING, logger="rmas_jax.training.checkpoints"):
      step, links, opt_state, meta = store.restore_newest(links_template=links_t, opt_state_template=opt_t)
  assert step == 1 and meta["data_position"] == 1
  _assert_bit_identical(links, links1)
  _assert_bit_identical(opt_state, opt1)
  lines = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
  assert len(lines) == 1 and "\n" not in lines[0]
  assert "step 2 is damaged" in lines[0] and "content hash" in lines[0] and "using step 1" in lines[0]
  assert (tmp_path / "2").is_dir()  # a reader leaves the directory as it is


@pytest.mark.parametrize("damage", ["truncated", "data_deleted", "meta_deleted", "meta_garbled"])
def test_torn_or_partly_deleted_latest_falls_back(tmp_path, damage, caplog):
  (links1, _), _, (links_t, opt_t) = _two_steps(tmp_path)
  step_dir = tmp_path / "2"
  if damage == "truncated":
    for path in _data_files(step_dir):
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  elif damage == "data_deleted":
    for path in _data_files(step_dir / "opt_state"):
      path.unlink()
  elif damage == "meta_deleted":
    (step_dir / "meta" / "metadata").unlink()
  else:
    (step_dir / "meta" / "metadata").write_text('{"step": 2, "fingerp')
  with caplog.at_level(logging.WARNING, logger="rmas_jax.training.checkpoints"):
    with CheckpointStore(tmp_path, fingerprint=FP) as store:
      step, links, _, _ = store.restore_newest(links_template=links_t, opt_state_template=opt_t)
  assert step == 1
  _assert_bit_identical(links, links1)
  lines = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
  assert len(lines) == 1 and "step 2 is damaged" in lines[0] and "using step 1" in lines[0]


def test_no_intact_checkpoint_is_one_line(tmp_path):
  _, _, (links_t, opt_t) = _two_steps(tmp_path)
  for step in ("1", "2"):
    for path in _data_files(tmp_path / step / "links"):
      path.write_bytes(b"")
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    with pytest.raises(CheckpointDamagedError) as e:
      store.restore_newest(links_template=links_t, opt_state_template=opt_t)
  message = str(e.value)
  assert "\n" not in message and message.startswith(f"{tmp_path}: no intact checkpoint (step 2: ")
  assert "; step 1: " in message


def test_empty_directory_restores_nothing(tmp_path):
  links, opt_state = _trained()
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    assert store.restore_newest(links_template=links, opt_state_template=opt_state) is None


def test_quarantine_moves_the_damaged_step_aside_so_it_can_be_saved_again(tmp_path, caplog):
  first, second, (links_t, opt_t) = _two_steps(tmp_path)
  (tmp_path / "2" / "meta" / "metadata").write_text("garbage")
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    with caplog.at_level(logging.WARNING, logger="rmas_jax.training.checkpoints"):
      step, *_ = store.restore_newest(links_template=links_t, opt_state_template=opt_t, quarantine=True)
    assert step == 1 and store.steps() == [1]
    assert "moved aside as damaged-2" in caplog.text
    assert store.save(2, *second, {})  # refused before: "a checkpoint for step 2 exists"
    got, _, _ = store.restore(2, links_template=links_t, opt_state_template=opt_t)
  _assert_bit_identical(got, second[0])
  assert (tmp_path / "damaged-2").is_dir()


def test_non_finite_leaf_read_back_is_damage(tmp_path, monkeypatch):
  from rmas_jax.training import checkpoints

  links, opt_state = _trained()
  bad = {**links, "outer": {"w": links["outer"]["w"].at[1, 2].set(jnp.inf)}}
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    assert store.save(1, links, opt_state, {})
    # Stands for a checkpoint whose hashes match but whose values are not finite (one written by an older store,
    # which hashed nothing): only the finiteness check can refuse it.
    with monkeypatch.context() as m:
      m.setattr(checkpoints, "_first_non_finite", lambda tree: None)
      assert store.save(2, bad, opt_state, {})
    with pytest.raises(CheckpointDamagedError, match=r"step 2 is damaged: \['links'\]\['outer'\]\['w'\] holds NaN"):
      store.restore(2, links_template=links, opt_state_template=opt_state)
    step, got, _, _ = store.restore_newest(links_template=links, opt_state_template=opt_state)
  assert step == 1
  _assert_bit_identical(got, links)


def test_opt_state_template_may_depend_on_the_step(tmp_path):
  links = _links()
  sgd, adam = optax.sgd(1e-2).init(links), optax.adamw(1e-3).init(links)
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    assert store.save(1, links, sgd, {})
    assert store.save(2, links, adam, {})
    seen = []

    def template(step):
      seen.append(step)
      return adam if step == 2 else sgd

    step, _, got, _ = store.restore_newest(links_template=links, opt_state_template=template)
  assert step == 2 and seen == [2]
  _assert_bit_identical(got, adam)


def test_restore_into_another_dtype_still_verifies(tmp_path):
  links, opt_state = _trained()
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    store.save(1, links, opt_state, {})
    half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), links)
    got, _, _ = store.restore(1, links_template=half, opt_state_template=opt_state)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(got))
  _assert_bit_identical(got, half)


def test_torn_run_file_does_not_lock_the_run_out(tmp_path, caplog):
  links, opt_state = _trained()
  with CheckpointStore(tmp_path, fingerprint=FP) as store:
    store.save(1, links, opt_state, {})
  (tmp_path / "rmas_checkpoint_run.json").write_text('{"finger')
  with caplog.at_level(logging.WARNING, logger="rmas_jax.training.checkpoints"):
    with CheckpointStore(tmp_path, fingerprint=FP) as store:
      assert store.latest_step() == 1
      assert store.save(2, links, opt_state, {})
  assert "rmas_checkpoint_run.json cannot be read" in caplog.text
  other = fingerprint_of({"another": "design"})
  with pytest.raises(CheckpointMismatchError):  # the file written anew still refuses another design
    CheckpointStore(tmp_path, fingerprint=other)
