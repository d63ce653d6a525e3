"""The 8-device half of `test_sharding.py`, run in a child process: fake CPU devices must be configured before JAX
starts, and the test process's JAX has started already.

`python tests/sharding_worker.py DATA.jsonl TRAIN_JSON WORKDIR OUT.json` trains the tiny `custom` system (with the
`config.train` overrides of TRAIN_JSON) on one device and on a (data=2, fsdp=2, tensor=2) mesh with links sharded
over (tensor, fsdp), restores the sharded checkpoint onto a (1, 2, 4) mesh and onto one device, asks questions with
both systems, runs one backbone forward with 8-way tensor parallelism, and evaluates the questions as `eval.py` does
on a config mesh; it writes what it saw (losses, shardings, differences, CPU seconds per phase) to OUT.json.
"""

import json
import os
import sys
import time

# 8 fake devices; collectives wait for slow peers (a loaded CI machine) instead of aborting after 40 s.
FLAGS = " --xla_force_host_platform_device_count=8 --xla_cpu_collective_call_terminate_timeout_seconds=900"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + FLAGS).strip()

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_default_matmul_precision", "float32")

import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from rmas_jax.config_lib import load_config  # noqa: E402
from rmas_jax.evaluation.runner import evaluate  # noqa: E402
from rmas_jax.links.recursive_link import LinkParam  # noqa: E402
from rmas_jax.patterns.ask import ask  # noqa: E402
from rmas_jax.patterns.from_config import load_system  # noqa: E402
from rmas_jax.sharding.mesh import activate, make_mesh, use_mesh  # noqa: E402
from rmas_jax.sharding.rules import RULES, use_rules, with_rule  # noqa: E402
from rmas_jax.training.trainer import restore_links, train  # noqa: E402
from rmas_jax.weights.pretrained import load_pretrained  # noqa: E402

QUESTIONS = ["What is 2 + 3?", "What is 7 times 6?"]


def config_for(data_path: str, train: dict):
  c = load_config("configs/tiny.py:custom")
  c.train.update(data_path=data_path, **train)
  return c


def links_of(system) -> dict:
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(
    nnx.state(system, LinkParam))}  # fmt: skip


def max_diff(a: dict, b: dict) -> float:
  assert a.keys() == b.keys()
  return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def close_fraction(a: dict, b: dict, atol: float = 1e-6) -> float:
  """The fraction of elements of `a` and `b` within `atol` of each other."""
  close = sum(int(np.sum(np.abs(a[k] - b[k]) <= atol)) for k in a)
  return close / sum(a[k].size for k in a)


def metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def spec_of(state, *path) -> str:
  node = state
  for p in path:
    node = node[p]
  return str(node.get_value().sharding.spec)


def answer(loaded) -> list[str]:
  out = ask(loaded.system, loaded.tokenizers, QUESTIONS, rounds=1, steps=2, max_new_tokens=4, prompts=loaded.prompts)
  return [a.text for a in out.answers]


def main(data_path: str, train_json: str, workdir: str, out_path: str) -> None:
  config = config_for(data_path, json.loads(train_json))
  result: dict = {"devices": jax.device_count(), "cpu_s": {}}
  clock = [time.process_time()]

  def lap(name: str) -> None:  # CPU seconds per phase, to see where a slow run spends them
    now = time.process_time()
    result["cpu_s"][name], clock[0] = round(now - clock[0], 1), now

  # One device: the reference.
  base = load_system(config, progress=False, scan_layers=True)
  base_weights = {k: np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(nnx.state(base.system))}
  train(config, os.path.join(workdir, "one"), loaded=base, progress=False)
  lap("train_one")
  result["one_device"] = metrics(os.path.join(workdir, "one"))
  base_links = links_of(base.system)
  base_texts = answer(base)
  lap("ask_one")

  # (2, 2, 2) with links sharded over fsdp: backbones FSDP x tensor, batch over data x fsdp.
  link_rules = with_rule(with_rule(RULES, "link_out", "fsdp"), "link_in", "tensor")
  with use_rules(link_rules), use_mesh(make_mesh((2, 2, 2))):
    sharded = load_system(config, progress=False, scan_layers=True)
    state = nnx.state(sharded.system)
    leaves = jax.tree_util.tree_leaves_with_path(state)
    result["weights_equal"] = len(leaves) == len(base_weights) and all(
      np.array_equal(base_weights[p], np.asarray(x)) for p, x in leaves
    )
    agent = state["agents"]["reviewer"]["backbone"]
    result["specs"] = {
      "q_proj": spec_of(agent, "layers", "self_attn", "q_proj", "weight"),
      "down_proj": spec_of(agent, "layers", "mlp", "down_proj", "weight"),
      "embedding": spec_of(agent, "embed_tokens", "embedding"),
      "norm": spec_of(agent, "norm", "weight"),
      "link_kernel": spec_of(state["outer"]["drafter_to_reviewer"], "proj1", "kernel"),
    }
    kernel = agent["layers"]["self_attn"]["q_proj"]["weight"].get_value()
    result["q_proj_shard_shape"] = list(kernel.addressable_shards[0].data.shape)
    result["q_proj_shape"] = list(kernel.shape)
    train(config, os.path.join(workdir, "mesh"), loaded=sharded, progress=False)
    lap("load_train_222")
    result["mesh_222"] = metrics(os.path.join(workdir, "mesh"))
    trained = nnx.state(sharded.system, LinkParam)["outer"]["drafter_to_reviewer"]
    result["trained_link_spec"] = spec_of(trained, "proj1", "kernel")
    mesh_links = links_of(sharded.system)
    result["links_diff_222"] = max_diff(base_links, mesh_links)
    result["links_close_222"] = close_fraction(base_links, mesh_links)
    texts = answer(sharded)
    lap("ask_222")
    result["ask_equal"] = texts == base_texts
    result["ask_texts"] = [texts, base_texts]

  # The sharded checkpoint read onto another mesh shape (default rules: links replicated) and onto one device.
  with use_mesh(make_mesh((1, 2, 4))):
    other = load_system(config, progress=False, scan_layers=True)
    result["restored_step_124"] = restore_links(config, other.system, os.path.join(workdir, "mesh"))
    restored = nnx.state(other.system, LinkParam)["outer"]["drafter_to_reviewer"]
    result["restored_link_spec"] = spec_of(restored, "proj1", "kernel")
    result["restore_diff_124"] = max_diff(mesh_links, links_of(other.system))
  result["restored_step_one"] = restore_links(config, base.system, os.path.join(workdir, "mesh"))
  result["restore_diff_one"] = max_diff(mesh_links, links_of(base.system))
  lap("restore")

  # One backbone forward with 8-way tensor parallelism (2 KV heads do not split 8 ways: those stay replicated).
  model = base.system.agents["drafter"].backbone
  ids = np.arange(4 * 24, dtype=np.int32).reshape(4, 24) % 300
  want = np.asarray(jax.jit(lambda m, x: m(x).logits)(model, ids))
  with use_mesh(make_mesh((1, 1, 8))):
    placed = load_pretrained(config.agents[0]["model"], scan_layers=True, with_tokenizer=False).model
    got = jax.jit(lambda m, x: m(x).logits)(placed, ids)
    result["forward_diff_118"] = float(np.max(np.abs(np.asarray(got) - want)))
  lap("forward")

  # What eval.py does: `activate` sets config.mesh's mesh for the process, then the evaluation loads, restores the
  # mesh run's links and answers the same questions (a 2 x 4 fsdp x tensor mesh this time).
  questions = os.path.join(workdir, "eval.jsonl")
  with open(questions, "w") as f:
    f.writelines(json.dumps(dict(question=q, answer="0")) + "\n" for q in QUESTIONS)
  config.mesh.update(fsdp=2, tensor=4)
  config.eval.update(dataset=questions, split="", limit=len(QUESTIONS), batch_size=len(QUESTIONS), rounds=1,
                     latent_steps=2)  # fmt: skip
  config.generation.max_new_tokens = 4
  mesh = activate(config)
  result["activated"] = dict(mesh.shape) if mesh is not None else None
  evaluated = evaluate(config, os.path.join(workdir, "eval"), progress=False, links_from=os.path.join(workdir, "mesh"))
  result["eval_equal"] = [r["output"] for r in evaluated["records"]] == base_texts
  result["eval_links"] = evaluated["links"]
  lap("eval")

  with open(out_path, "w") as f:
    json.dump(result, f, indent=1)


if __name__ == "__main__":
  main(*sys.argv[1:5])
