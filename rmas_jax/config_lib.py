"""Checks a run configuration before anything expensive happens; every problem is one line naming the field."""

from __future__ import annotations

from rmas_jax.patterns.graph import PATTERNS
from rmas_jax.sharding.mesh import check_mesh_settings
from rmas_jax.weights.build import DTYPES
from rmas_jax.weights.errors import ModelLoadError
from rmas_jax.weights.pretrained import resolve


def validate(config) -> None:
  """Raises ValueError naming the first bad field of `config`."""
  if not config.get("style"):
    raise ValueError("config.style: empty; expected sequential, mixture, distillation or deliberation")
  if not config.get("pattern") and config.style not in PATTERNS:
    raise ValueError(f"config.style: {config.style!r} is not built in ({', '.join(PATTERNS)}); declare config.pattern")
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
  inference = config.get("inference")
  if inference is not None:
    for key in ("rounds", "latent_steps", "num_samples", "chunk"):
      if inference[key] < 1:
        raise ValueError(f"config.inference.{key}: {inference[key]}; expected >= 1")
  check_mesh_settings(config)


def load_config(spec: str):
  """A config from `path/to/style.py[:preset]` (the same spelling `--config` takes)."""
  import importlib.util
  import os

  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"{path}: no such config file")
  module_spec = importlib.util.spec_from_file_location(f"rmas_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path}: defines no get_config()")
  config = module.get_config(preset or None)
  validate(config)
  return config


def apply_overrides(config, assignments) -> None:
  """Applies `key.sub=value` strings to `config` in place; values are Python literals (`true`/`false` too) or else
  plain strings."""
  import ast

  for item in assignments:
    key, eq, raw = item.partition("=")
    if not eq or not key:
      raise ValueError(f"override {item!r}: expected KEY=VALUE, e.g. generation.greedy=False")
    if raw.lower() in ("true", "false"):  # the shell-style spelling of a bool, as absl's flags accept it
      value = raw.lower() == "true"
    else:
      try:
        value = ast.literal_eval(raw)
      except (ValueError, SyntaxError):
        value = raw
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      if part not in node:
        raise ValueError(f"override {item!r}: config has no field {key!r}")
      node = node[part]
    if leaf not in node:
      raise ValueError(f"override {item!r}: config has no field {key!r}")
    try:
      node[leaf] = value
    except TypeError as e:
      raise ValueError(f"override {item!r}: {e}") from None


def entry_check(config, workdir: str | None, purpose: str) -> str | None:
  """What is wrong with a `train.py` / `eval.py` invocation, as one line, or None."""
  if config is None:
    return "--config is required, e.g. --config configs/sequential.py"
  if not workdir:
    return f"--workdir is required ({purpose} go there)"
  try:
    validate(config)
  except ValueError as e:
    return str(e)
  return None
