"""Paper-size backbones built abstractly (`nnx.eval_shape`, no memory): parameter counts equal the published ones."""

import math

import jax
import pytest

from rmas_jax.weights.build import abstract_model
from rmas_jax.weights.hf_config import arch_from_hf

# config.json values of the published checkpoints, and their parameter counts as published.
FULL_SIZE = {
  "Llama-3.2-1B": (
    dict(
      model_type="llama",
      hidden_size=2048,
      intermediate_size=8192,
      num_hidden_layers=16,
      num_attention_heads=32,
      num_key_value_heads=8,
      vocab_size=128256,
      tie_word_embeddings=True,
      rope_theta=500000.0,
      rope_scaling=dict(
        rope_type="llama3",
        factor=32.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
      ),
    ),
    1_235_814_400,
  ),
  "Qwen2.5-1.5B": (
    dict(
      model_type="qwen2",
      hidden_size=1536,
      intermediate_size=8960,
      num_hidden_layers=28,
      num_attention_heads=12,
      num_key_value_heads=2,
      vocab_size=151936,
      tie_word_embeddings=True,
      rope_theta=1e6,
    ),
    1_543_714_304,
  ),
  "Qwen3-1.7B": (
    dict(
      model_type="qwen3",
      hidden_size=2048,
      intermediate_size=6144,
      num_hidden_layers=28,
      num_attention_heads=16,
      num_key_value_heads=8,
      head_dim=128,
      vocab_size=151936,
      tie_word_embeddings=True,
      rope_theta=1e6,
    ),
    # "1.7B"; the hub's safetensors count (2,031,739,904) adds a stored copy of the tied embedding as lm_head
    1_720_574_976,
  ),
  "Mistral-7B-v0.1": (
    dict(
      model_type="mistral",
      hidden_size=4096,
      intermediate_size=14336,
      num_hidden_layers=32,
      num_attention_heads=32,
      num_key_value_heads=8,
      vocab_size=32000,
      tie_word_embeddings=False,
      rope_theta=10000.0,
      sliding_window=4096,
    ),
    7_241_732_096,
  ),
  "gemma-3-1b": (
    dict(
      model_type="gemma3_text",
      hidden_size=1152,
      intermediate_size=6912,
      num_hidden_layers=26,
      num_attention_heads=4,
      num_key_value_heads=1,
      head_dim=256,
      vocab_size=262144,
      rope_theta=1e6,
      rope_local_base_freq=10000.0,
      sliding_window=512,
      query_pre_attn_scalar=256,
    ),
    999_885_952,
  ),
}


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_published_parameter_counts(name):
  config, published = FULL_SIZE[name]
  cfg = arch_from_hf(config)
  leaves = jax.tree.leaves(abstract_model(cfg))
  assert sum(math.prod(x.shape) for x in leaves) == published == cfg.num_params
