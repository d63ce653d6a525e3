"""Scale-out: the logical-axis rules, the per-device memory plan, 8 fake CPU devices (a child process, since the
device count is fixed when JAX starts) training, asking and restoring checkpoints across mesh shapes like one device
does, and two real processes over loopback training like one."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from rmas_jax.config_lib import load_config, validate
from rmas_jax.plan import main as plan_main
from rmas_jax.plan import plan_system
from rmas_jax.sharding.mesh import check_mesh_settings, mesh_shape, parse_mesh
from rmas_jax.sharding.rules import backbone_axes, path_keys, spec_for, system_axes
from rmas_jax.weights.build import abstract_model
from rmas_jax.weights.tiny import tiny_arch

ROOT = os.path.join(os.path.dirname(__file__), "..")
QUESTIONS = [
  (f"What is {a} + {b}?", str(a + b)) for a, b in ((2, 3), (4, 4), (9, 2), (3, 3), (10, 2), (6, 1), (8, 5), (2, 6))
]


def short_questions(path) -> str:
  with open(path, "w") as f:
    f.writelines(json.dumps(dict(question=q, answer=a)) + "\n" for q, a in QUESTIONS)
  return str(path)


def test_spec_for_keeps_dividing_axes_and_uses_each_mesh_axis_once():
  sizes = {"data": 2, "fsdp": 4, "tensor": 2}
  assert spec_for(("batch", "length", "act_embed"), (8, 5, 64), sizes) == P(("data", "fsdp"))
  assert spec_for(("batch",), (6,), sizes) == P("data")  # 6 rows: fsdp (x4) no longer divides, data (x2) does
  assert spec_for(("batch",), (3,), sizes) == P()
  assert spec_for(("embed", "heads"), (64, 24), sizes) == P("fsdp", "tensor")
  assert spec_for(("embed", "kv_heads"), (64, 3), sizes) == P("fsdp")  # 3 heads do not split over tensor=2
  assert spec_for(("embed", "embed"), (64, 64), sizes) == P("fsdp")  # fsdp taken by the first dimension
  assert spec_for(("heads", "embed"), (64, 64), {"data": 1, "fsdp": 1, "tensor": 1}) == P()


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral", "gemma3"])
@pytest.mark.parametrize("scan", [True, False])
def test_every_backbone_leaf_gets_axes_of_its_rank(family, scan):
  state = nnx.state(abstract_model(tiny_arch(family, 64), scan_layers=scan))
  by_name = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    axes = backbone_axes(path, len(leaf.shape))
    names = [k for k in path_keys(path) if isinstance(k, str)]
    assert len(axes) == len(leaf.shape)
    assert (axes[0] == "layers") == (scan and names[0] == "layers")  # stacked layers lead with the layer axis
    by_name["/".join(names[-2:])] = axes[1:] if axes[0] == "layers" else axes
  # projection weights are [out, in] (HF's layout)
  assert by_name["q_proj/weight"] == ("heads", "embed") and by_name["o_proj/weight"] == ("embed", "heads")
  assert by_name["k_proj/weight"] == ("kv_heads", "embed") and by_name["down_proj/weight"] == ("embed", "mlp")
  assert by_name["embed_tokens/embedding"] == ("vocab", "embed")
  assert all(v == ("norm",) for k, v in by_name.items() if k.endswith("norm/weight"))


def test_link_leaves_are_links_and_backbones_are_backbones():
  sizes = {"data": 1, "fsdp": 4, "tensor": 1}
  link = ("outer", "a_to_b", "proj1", "kernel")
  backbone = ("agents", "a", "backbone", "layers", "mlp", "up_proj", "weight")
  assert system_axes(link, 2) == ("link_in", "link_out")
  assert system_axes(("agents", "a", "inner", "proj1", "bias"), 1) == ("link_out",)
  assert system_axes(backbone, 3) == ("layers", "mlp", "embed")
  assert spec_for(system_axes(link, 2), (64, 64), sizes) == P()  # links replicated by default


def test_mesh_settings_are_checked_and_resolved():
  config = load_config("configs/tiny.py")
  assert mesh_shape(config, device_count=8) == (1, 1, 1)
  config.mesh.fsdp = -1
  config.mesh.tensor = 2
  assert mesh_shape(config, device_count=8) == (1, 4, 2)
  config.mesh.data = -1
  with pytest.raises(ValueError, match="at most one"):
    check_mesh_settings(config)
  config.mesh.data, config.mesh.distributed = 1, "sometimes"
  with pytest.raises(ValueError, match="config.mesh.distributed"):
    validate(config)
  assert parse_mesh("2x4x1") == (2, 4, 1)
  with pytest.raises(ValueError, match="DATAxFSDPxTENSOR"):
    parse_mesh("2x4")


def test_plan_splits_parameters_by_fsdp_and_tensor(capsys):
  config = load_config("configs/distillation.py:paper")  # Qwen3.5-9B + 4B, shapes only
  _, rows = plan_system(config, [(1, 1, 1), (1, 8, 1), (1, 4, 2)], "bfloat16")
  one, fsdp8, mixed = rows
  assert one.params / 2 > 13e9  # 8.95 B + 4.21 B parameters in bf16
  # Everything but norms and the tiny DeltaNet vectors splits 8 ways.
  assert one.params / 8 <= fsdp8.params < one.params / 8 * 1.01
  assert one.params / 8 <= mixed.params < one.params / 8 * 1.01
  assert fsdp8.links == one.links  # links replicated
  assert plan_main(["--config", "configs/sequential.py:light", "--mesh", "1x1x1", "--mesh", "2x2x2",
                    "--mesh", "1x8x2", "--dtype", "bfloat16"]) == 0  # fmt: skip
  out = capsys.readouterr().out
  assert "Qwen/Qwen3-1.7B" in out and "1.72 B params" in out
  assert [line.split()[0] for line in out.splitlines() if line.strip().startswith(("1x1x1", "2x2x2", "1x8x2"))] == [
    "1x1x1", "2x2x2", "1x8x2"]  # fmt: skip


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# One inner and one outer step of the tiny two-agent system on short questions (a 256-slot prompt bucket); one latent
# step keeps the compiled step small (the latent loop runs sharded in the worker's `ask`).
TRAIN = dict(examples=8, batch_size=4, inner_steps=1, outer_steps=1, rounds=1, latent_steps=1, prompt_bucket=256,
             target="final", target_tokens=32, inner_tokens=512, checkpoint_every=1)  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The 8-device worker and a two-process `train.py` run, started together (compiling is single-threaded, so the
  three processes share the cores), each with the same data and `config.train` overrides."""
  tmp = tmp_path_factory.mktemp("scale_out")
  data = short_questions(tmp / "q.jsonl")
  base = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  base.pop("XLA_FLAGS", None)
  worker = [sys.executable, os.path.join(ROOT, "tests", "sharding_worker.py"), data, json.dumps(TRAIN), str(tmp),
            str(tmp / "worker.json")]  # fmt: skip
  cli = [sys.executable, "train.py", "--config=configs/tiny.py:custom", f"--config.train.data_path={data}",
         f"--workdir={tmp / 'two'}", "--config.mesh.data=2", "--config.mesh.fsdp=2"]  # fmt: skip
  cli += [f"--config.train.{k}={v}" for k, v in TRAIN.items()]
  port = _free_port()
  spawn = lambda cmd, env: subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True)  # noqa: E731  # fmt: skip
  procs = [spawn(worker, base)]
  for i in range(2):  # two processes of two fake devices each, over loopback (gloo collectives)
    flags = "--xla_force_host_platform_device_count=2 --xla_cpu_collective_call_terminate_timeout_seconds=900"
    env = dict(base, XLA_FLAGS=flags, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(i))  # fmt: skip
    procs.append(spawn(cli, env))
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=1200))
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err[-3000:]
  with open(tmp / "worker.json") as f:
    worker_result = json.load(f)
  with open(tmp / "two" / "metrics.jsonl") as f:
    two = [json.loads(line) for line in f]
  return dict(worker=worker_result, two=two, stdout=[o for o, _ in outs[1:]], two_dir=tmp / "two", one_dir=tmp / "one")


def test_eight_devices_train_ask_and_restore_like_one(runs):
  r = runs["worker"]
  assert r["devices"] == 8 and r["weights_equal"]
  # Backbones FSDP x tensor, norms replicated, links (here) over (tensor, fsdp); shards are a quarter of q_proj.
  assert r["specs"] == {"q_proj": "P(None, 'tensor', 'fsdp')", "down_proj": "P(None, 'fsdp', 'tensor')",
                        "embedding": "P('tensor', 'fsdp')", "norm": "P()",
                        "link_kernel": "P('tensor', 'fsdp')"}  # fmt: skip
  layers, dout, din = r["q_proj_shape"]
  assert r["q_proj_shard_shape"] == [layers, dout // 2, din // 2]
  assert r["trained_link_spec"] == "P('tensor', 'fsdp')"  # the step keeps the links' layout
  one, mesh = r["one_device"], r["mesh_222"]
  assert [m["stage"] for m in one] == [m["stage"] for m in mesh] == ["inner", "outer"]
  np.testing.assert_allclose([m["loss"] for m in mesh], [m["loss"] for m in one], rtol=1e-5)
  np.testing.assert_allclose([m["grad_norm"] for m in mesh], [m["grad_norm"] for m in one], rtol=1e-4)
  # AdamW divides by the gradient's own scale, so a last-bit difference in a near-zero gradient can move a weight by
  # up to the learning rate (5e-4) in either direction; all but a few elements agree to 1e-6.
  assert r["links_diff_222"] < 1e-3 and r["links_close_222"] > 0.99
  assert r["ask_equal"], r["ask_texts"]
  # The checkpoint written with sharded links, read onto a (1, 2, 4) mesh (replicated links) and onto one device.
  assert r["restored_step_124"] == r["restored_step_one"] == 2
  assert r["restored_link_spec"] == "P()"
  assert r["restore_diff_124"] == r["restore_diff_one"] == 0.0  # the very values the mesh run saved
  assert r["forward_diff_118"] < 1e-5
  # eval.py's path: config.mesh -> activate -> evaluate with the mesh run's links answers like one device.
  assert r["activated"] == {"data": 1, "fsdp": 2, "tensor": 4}
  assert r["eval_links"].startswith("trained") and r["eval_equal"]


def test_two_processes_over_loopback_train_like_one(runs):
  one, two = runs["worker"]["one_device"], runs["two"]
  assert [(m["step"], m["stage"]) for m in two] == [(m["step"], m["stage"]) for m in one] == [(0, "inner"),
                                                                                             (1, "outer")]  # fmt: skip
  np.testing.assert_allclose([m["loss"] for m in two], [m["loss"] for m in one], rtol=1e-5)
  np.testing.assert_allclose([m["grad_norm"] for m in two], [m["grad_norm"] for m in one], rtol=1e-4)
  summaries = [[line for line in out.splitlines() if line.startswith("{")] for out in runs["stdout"]]
  assert len(summaries[0]) == 1 and json.loads(summaries[0][0])["steps"] == 2
  assert summaries[1] == []  # only process 0 reports (gloo's own connection lines aside)
  assert sorted(os.listdir(runs["two_dir"] / "checkpoints")) == ["1", "2", "rmas_checkpoint_run.json"]
