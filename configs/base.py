"""Defaults shared by every collaboration style. Style files start from `base_config()` and fill `agents`."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.style = ""
  c.seed = 0
  c.dtype = "float32"  # bfloat16 on GPU/TPU; XLA's CPU backend runs bf16 matmuls several times slower
  c.agents = []  # list of {"role": str, "model": registry name | .gguf path | HF directory | hub id}
  c.generation = ml_collections.ConfigDict(dict(max_new_tokens=256, greedy=True, temperature=1.0, top_p=1.0, top_k=0))
  return c
