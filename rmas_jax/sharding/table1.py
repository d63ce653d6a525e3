"""The paper's Table 1 systems and the `config.json` fields of their models, so the planner needs no network.

Values are the text-model fields of each hub repository's `config.json` (the Qwen3.5 ones as
`tests/test_qwen3_5.py` checks them); a model not listed here is read from a local HF directory or the HF cache.
"""

from __future__ import annotations

# (label, --config spec) of the paper's Table 1 systems.
TABLE1: tuple[tuple[str, str], ...] = (
  ("Sequential (light)", "configs/sequential.py:light"),
  ("Sequential (scaled)", "configs/sequential.py:scaled"),
  ("Mixture", "configs/mixture.py:paper"),
  ("Distillation", "configs/distillation.py:paper"),
  ("Deliberation", "configs/deliberation.py:paper"),
)

_LLAMA3_ROPE = dict(
  rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)


def _qwen3_5(hidden: int, layers: int, inter: int, heads: int, kv: int, value_heads: int, tie: bool) -> dict:
  return dict(
    model_type="qwen3_5_text",
    hidden_size=hidden,
    num_hidden_layers=layers,
    intermediate_size=inter,
    num_attention_heads=heads,
    num_key_value_heads=kv,
    head_dim=256,
    linear_num_key_heads=16,
    linear_num_value_heads=value_heads,
    linear_key_head_dim=128,
    linear_value_head_dim=128,
    linear_conv_kernel_dim=4,
    full_attention_interval=4,
    vocab_size=248320,
    rms_norm_eps=1e-6,
    rope_parameters=dict(rope_type="default", rope_theta=10_000_000, partial_rotary_factor=0.25),
    tie_word_embeddings=tie,
  )


HUB_CONFIGS: dict[str, dict] = {
  "Qwen/Qwen3-1.7B": dict(
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
    max_position_embeddings=40960,
  ),
  "meta-llama/Llama-3.2-1B-Instruct": dict(
    model_type="llama",
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    tie_word_embeddings=True,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    rope_scaling=_LLAMA3_ROPE,
  ),
  "meta-llama/Llama-3.2-3B-Instruct": dict(
    model_type="llama",
    hidden_size=3072,
    intermediate_size=8192,
    num_hidden_layers=28,
    num_attention_heads=24,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=128256,
    tie_word_embeddings=True,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    rope_scaling=_LLAMA3_ROPE,
  ),
  "Qwen/Qwen2.5-Math-1.5B-Instruct": dict(
    model_type="qwen2",
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    vocab_size=151936,
    tie_word_embeddings=True,
    rope_theta=10000.0,
    max_position_embeddings=4096,
  ),
  "Qwen/Qwen2.5-Coder-3B-Instruct": dict(
    model_type="qwen2",
    hidden_size=2048,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
    vocab_size=151936,
    tie_word_embeddings=True,
    rope_theta=1e6,
    max_position_embeddings=32768,
  ),
  "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": dict(
    model_type="qwen2",
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    vocab_size=151936,
    tie_word_embeddings=False,
    rope_theta=10000.0,
    max_position_embeddings=131072,
  ),
  "BioMistral/BioMistral-7B": dict(
    model_type="mistral",
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=32000,
    tie_word_embeddings=False,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    sliding_window=4096,
    max_position_embeddings=32768,
  ),
  "google/gemma-3-4b-it": dict(
    model_type="gemma3_text",
    hidden_size=2560,
    intermediate_size=10240,
    num_hidden_layers=34,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    vocab_size=262208,
    rope_theta=1e6,
    rope_local_base_freq=10000.0,
    rope_scaling=dict(rope_type="linear", factor=8.0),
    sliding_window=1024,
    query_pre_attn_scalar=256,
    max_position_embeddings=131072,
  ),
  "Qwen/Qwen3.5-2B": _qwen3_5(2048, 24, 6144, 8, 2, 16, tie=True),
  "Qwen/Qwen3.5-4B": _qwen3_5(2560, 32, 9216, 16, 4, 32, tie=True),
  "Qwen/Qwen3.5-9B": _qwen3_5(4096, 32, 12288, 16, 4, 32, tie=False),
}
