"""Loaders: both config.json shapes, weight round trips (single file and sharded), and bad input."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy
import transformers
from flax import nnx

from rmas_jax.models.arch import RopeSpec
from rmas_jax.weights import registry
from rmas_jax.weights.errors import ModelLoadError
from rmas_jax.weights.hf_checkpoint import load_hf_model
from rmas_jax.weights.hf_config import arch_from_hf
from rmas_jax.weights.key_maps import hf_name
from rmas_jax.weights.pretrained import load_pretrained
from tiny_models import random_model, tiny_configs

LLAMA3_SCALING = dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)


def test_llama_old_and_v5_config_shapes_agree():
  old = dict(
    model_type="llama",
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rope_theta=500_000.0,
    max_position_embeddings=131072,
    rope_scaling=dict(rope_type="llama3", **LLAMA3_SCALING),
    tie_word_embeddings=True,
  )
  v5 = transformers.LlamaConfig(**old).to_dict()
  assert "rope_parameters" in v5 and v5.get("rope_theta") is None
  a, b = arch_from_hf(old), arch_from_hf(v5)
  assert a == b
  assert a.rope_global == RopeSpec(theta=500_000.0, rope_type="llama3", **LLAMA3_SCALING)


def test_gemma3_old_and_v5_config_shapes_agree():
  old = dict(
    model_type="gemma3_text",
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=7,
    num_attention_heads=4,
    num_key_value_heads=1,
    head_dim=16,
    rope_theta=1_000_000.0,
    rope_local_base_freq=10_000.0,
    rope_scaling=dict(rope_type="linear", factor=8.0),
    sliding_window=512,
    sliding_window_pattern=6,
    query_pre_attn_scalar=16,
    max_position_embeddings=32768,
  )
  v5 = transformers.Gemma3TextConfig(**old).to_dict()
  a, b = arch_from_hf(old), arch_from_hf(v5)
  assert a == b
  assert a.layer_types == ("sliding_attention",) * 5 + ("full_attention", "sliding_attention")
  assert a.rope_global == RopeSpec(theta=1e6, rope_type="linear", factor=8.0) and a.rope_local == RopeSpec(1e4)
  assert a.scale == 16**-0.5 and a.norm_offset and a.embed_scale and a.tie_embeddings


def write_checkpoint(model, config: dict, directory: str, shards: int = 1) -> dict[str, np.ndarray]:
  """Saves our model's weights under HF names (the inverse map), split over `shards` files."""
  tensors = {}
  for path, value in nnx.to_flat_state(nnx.state(model)):
    array = np.asarray(value.get_value())
    stacked = path[0] == "layers" and not isinstance(path[1], int)
    layers = range(array.shape[0]) if stacked else [None]
    for i in layers:
      a = array[i] if i is not None else array
      tensors[hf_name(path, "model.", i)] = np.ascontiguousarray(a)
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f)
  names = sorted(tensors)
  if shards == 1:
    safetensors.numpy.save_file(tensors, os.path.join(directory, "model.safetensors"))
  else:
    weight_map = {}
    for s, chunk in enumerate(np.array_split(np.array(names), shards)):
      fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
      safetensors.numpy.save_file({n: tensors[n] for n in chunk}, os.path.join(directory, fname))
      weight_map.update({n: fname for n in chunk})
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
      json.dump({"metadata": {}, "weight_map": weight_map}, f)
  return tensors


@pytest.mark.parametrize("name", ["llama_tied_bias", "qwen2", "gemma3"])
@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("scan", [True, False])
def test_weight_round_trip(tmp_path, name, shards, scan):
  cls_name, kwargs = tiny_configs()[name]
  config = getattr(transformers, cls_name)(**kwargs).to_dict()
  model = random_model(name, scan)
  write_checkpoint(model, config, str(tmp_path), shards)
  loaded = load_hf_model(str(tmp_path), scan_layers=scan)
  for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(loaded)), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture
def tiny_dir(tmp_path):
  cls_name, kwargs = tiny_configs()["qwen2"]
  config = getattr(transformers, cls_name)(**kwargs).to_dict()
  tensors = write_checkpoint(random_model("qwen2"), config, str(tmp_path))
  return str(tmp_path), config, tensors


def test_unsupported_architecture(tiny_dir):
  directory, config, _ = tiny_dir
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(dict(config, model_type="bert"), f)
  with pytest.raises(ModelLoadError, match=r"config\.json: unsupported architecture model_type='bert'"):
    load_hf_model(directory)


def test_missing_and_misshaped_tensors(tiny_dir):
  directory, _, tensors = tiny_dir
  name = "model.layers.1.mlp.up_proj.weight"
  safetensors.numpy.save_file({k: v for k, v in tensors.items() if k != name}, f"{directory}/model.safetensors")
  with pytest.raises(ModelLoadError, match=f"missing tensor '{name}'"):
    load_hf_model(directory)
  safetensors.numpy.save_file(dict(tensors, **{name: tensors[name][:, :-1]}), f"{directory}/model.safetensors")
  with pytest.raises(ModelLoadError, match=rf"'{name}' has shape \(96, 63\), expected \(96, 64\)"):
    load_hf_model(directory)


def test_corrupt_safetensors(tiny_dir):
  directory, _, _ = tiny_dir
  with open(f"{directory}/model.safetensors", "wb") as f:
    f.write(b"\x00garbage")
  with pytest.raises(ModelLoadError, match="model.safetensors: not a readable safetensors file"):
    load_hf_model(directory)


def test_missing_tokenizer(tiny_dir):
  directory, _, _ = tiny_dir
  with pytest.raises(ModelLoadError, match="no tokenizer.json"):
    load_pretrained(directory)
  assert load_pretrained(directory, with_tokenizer=False).tokenizer is None


def test_unknown_model_name():
  with pytest.raises(ModelLoadError, match="unknown model 'no-such-model'.*smollm2-135m-instruct"):
    load_pretrained("no-such-model")


def test_unreachable_hub_is_one_clear_line(monkeypatch):
  with pytest.raises(ModelLoadError, match=r"^some-org/some-model: cannot fetch from the Hugging Face hub") as e:
    load_pretrained("some-org/some-model")
  assert "\n" not in str(e.value)


def test_corrupt_and_truncated_gguf(tmp_path):
  garbage = tmp_path / "garbage.gguf"
  garbage.write_bytes(b"GGUF" + b"\x07" * 100)
  with pytest.raises(ModelLoadError, match=f"{garbage}: not a valid GGUF file"):
    load_pretrained(str(garbage))
  source = registry.fetch("smollm2-135m-instruct", progress=False)
  truncated = tmp_path / "truncated.gguf"
  with open(source, "rb") as f:
    truncated.write_bytes(f.read(20_000_000))
  with pytest.raises(ModelLoadError, match=f"{truncated}: "):
    load_pretrained(str(truncated), with_tokenizer=False)


def test_unsupported_gguf_architecture(tmp_path):
  import gguf

  path = tmp_path / "gpt2.gguf"
  writer = gguf.GGUFWriter(str(path), "gpt2")
  writer.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  with pytest.raises(ModelLoadError, match="unsupported GGUF architecture 'gpt2'"):
    load_pretrained(str(path))


def test_registry_rejects_wrong_cached_files(tmp_path, monkeypatch):
  monkeypatch.setenv("RMAS_JAX_CACHE", str(tmp_path))
  entry = registry.REGISTRY["smollm2-135m-instruct"]
  os.makedirs(registry.model_dir())
  path = os.path.join(registry.model_dir(), entry.filename)
  with open(path, "wb") as f:
    f.write(b"short")
  with pytest.raises(ModelLoadError, match=f"{path}: 5 bytes, expected {entry.size}"):
    registry.fetch(entry.name, progress=False)
  with open(path, "wb") as f:
    f.truncate(entry.size)  # right size, wrong bytes
  with pytest.raises(ModelLoadError, match=f"{path}: sha256 .* does not match"):
    registry.fetch(entry.name, progress=False)


def test_cli_bad_input_exits_nonzero_with_one_line():
  cmd = [sys.executable, "-m", "rmas_jax", "generate", "--model", "no-such-model", "--prompt", "hi", "--greedy"]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stdout == ""
  assert result.stderr.startswith("error: unknown model 'no-such-model'") and result.stderr.count("\n") == 1


def test_registry_never_refetches_a_verified_file(monkeypatch):
  path = registry.fetch("smollm2-135m-instruct", progress=False)

  def no_download(*args, **kwargs):
    raise AssertionError("a cached, verified file was fetched again")

  monkeypatch.setattr(registry.subprocess, "run", no_download)
  monkeypatch.setattr(registry, "_sha256", no_download)  # unchanged since verification: not even re-hashed
  assert registry.fetch("smollm2-135m-instruct", progress=False) == path
