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


def style_config(style: str, presets: dict, preset: str | None, source: str) -> ml_collections.ConfigDict:
  """The config of `style` with the agents of `presets[preset or "default"]`, a list of (role, model)."""
  preset = preset or "default"
  if preset not in presets:
    raise ValueError(f"{source}: unknown preset {preset!r}; expected one of {sorted(presets)}")
  c = base_config()
  c.style = style
  c.preset = preset
  c.agents = [{"role": role, "model": model} for role, model in presets[preset]]
  return c
