"""Checks a run configuration before anything expensive happens; every problem is one line naming the field."""

from __future__ import annotations

from rmas_jax.weights.build import DTYPES
from rmas_jax.weights.errors import ModelLoadError
from rmas_jax.weights.pretrained import resolve


def validate(config) -> None:
  """Raises ValueError naming the first bad field of `config`."""
  if not config.get("style"):
    raise ValueError("config.style: empty; expected sequential, mixture, distillation or deliberation")
  if config.dtype not in DTYPES:
    raise ValueError(f"config.dtype: {config.dtype!r}; expected one of {sorted(DTYPES)}")
  if not config.agents:
    raise ValueError("config.agents: empty; expected a list of {role, model}")
  roles = set()
  for i, agent in enumerate(config.agents):
    if not agent.get("role") or not agent.get("model"):
      raise ValueError(f"config.agents[{i}]: expected both 'role' and 'model', got {dict(agent)}")
    if agent["role"] in roles:
      raise ValueError(f"config.agents[{i}].role: {agent['role']!r} appears twice")
    roles.add(agent["role"])
    try:
      resolve(agent["model"])
    except ModelLoadError as e:
      raise ValueError(f"config.agents[{i}].model: {e}") from None
  if config.generation.max_new_tokens < 1:
    raise ValueError(f"config.generation.max_new_tokens: {config.generation.max_new_tokens}; expected >= 1")
