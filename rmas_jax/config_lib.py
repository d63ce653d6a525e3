"""Checks a run configuration before anything expensive happens; every problem is one line naming the field.

Every entry point goes through here: `train.py` and `eval.py` (absl flags: `parse_absl_flags`, then `entry_check`),
`python -m rmas_jax ask` and `serve`, `python -m rmas_jax.plan` and the analyses (`load_config`, `apply_overrides`,
`validate`). What is checked: the config file (missing, a syntax error, an error raised while it runs), override keys
(unknown fields), the type and range of every numeric field, the choice fields, the data files a run reads, and the
work directory. Fields are looked up with `.get`, so a config without a field (an older file, or one that has not
gained a new field yet) is not an error; a field added to `configs/base.py` is checked once a rule names it here.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from rmas_jax.patterns.graph import PATTERNS
from rmas_jax.sharding.mesh import check_mesh_settings
from rmas_jax.weights.build import DTYPES
from rmas_jax.weights.errors import ModelLoadError
from rmas_jax.weights.pretrained import resolve

# Whole numbers: field -> the least value allowed. Counts that may be zero mean "none" or "the default" (eval.rounds
# 0 takes inference.rounds, eval.limit 0 takes every example, train.eval_every 0 never evaluates).
INT_AT_LEAST: dict[str, int] = {
  "seed": 0,
  "inference.rounds": 1,
  "inference.latent_steps": 1,
  "inference.num_samples": 1,
  "inference.chunk": 1,
  "generation.max_new_tokens": 1,
  "generation.top_k": 0,
  "tools.max_calls": 0,
  "tools.result_tokens": 1,
  "train.examples": 1,
  "train.inner_steps": 0,
  "train.outer_steps": 0,
  "train.batch_size": 1,
  "train.rounds": 1,
  "train.latent_steps": 1,
  "train.target_tokens": 1,
  "train.inner_tokens": 1,
  "train.prompt_bucket": 1,
  "train.checkpoint_every": 1,
  "train.keep": 1,
  "train.eval_every": 0,
  "train.eval_examples": 0,
  "train.max_skipped": 0,
  "eval.limit": 0,
  "eval.rounds": 0,
  "eval.latent_steps": 0,
  "eval.num_samples": 1,
  "eval.batch_size": 1,
  "eval.agent_tokens": 1,
  "eval.max_prompt_tokens": 0,
}
# Real numbers: field -> (low, high, low inclusive, high inclusive); None is unbounded. NaN and inf never pass.
FLOAT_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
  "generation.top_p": (0.0, 1.0, False, True),
  "tools.python_timeout_s": (0.0, None, False, False),
  "train.inner_lr": (0.0, None, True, False),
  "train.outer_lr": (0.0, None, True, False),
  "train.b1": (0.0, 1.0, True, False),
  "train.b2": (0.0, 1.0, True, False),
  "train.weight_decay": (0.0, None, True, False),
  "train.clip": (0.0, None, False, False),
  "train.inner_temperature": (0.0, 1.0, False, True),
}
BOOLS = ("generation.greedy", "generation.ignore_eos", "inference.prefix_reuse", "tools.enabled", "train.remat",
         "train.scan_layers", "train.scale_to_embeddings", "eval.warmup")  # fmt: skip
STRINGS = ("train.dataset", "train.data_path", "train.eval_path", "train.target", "eval.dataset", "eval.split",
           "eval.path", "eval.single_role")  # fmt: skip
CHECKPOINTS = ("latest", "best")
TOOL_NAMES = ("python", "search")


def validate(config) -> None:
  """Checks every field of `config` that this module knows, in a fixed order.

  Args:
    config: a run config (`ml_collections.ConfigDict`), as `load_config` returns it.

  Raises:
    ValueError: one line naming the first bad field, its value and what was expected.
  """
  if not config.get("style"):
    raise ValueError("config.style: empty; expected sequential, mixture, distillation or deliberation")
  if not config.get("pattern") and config.style not in PATTERNS:
    raise ValueError(f"config.style: {config.style!r} is not built in ({', '.join(PATTERNS)}); declare config.pattern")
  if config.get("dtype") not in DTYPES:
    raise ValueError(f"config.dtype: {config.get('dtype')!r}; expected one of {sorted(DTYPES)}")
  if not config.get("agents"):
    raise ValueError("config.agents: empty; expected a list of {role, model}")
  roles = set()
  for i, agent in enumerate(config.agents):
    if not isinstance(agent, Mapping) or not agent.get("role") or not agent.get("model"):
      raise ValueError(f"config.agents[{i}]: expected both 'role' and 'model', got {agent!r}")
    if agent["role"] in roles:
      raise ValueError(f"config.agents[{i}].role: {agent['role']!r} appears twice")
    roles.add(agent["role"])
    try:
      resolve(agent["model"])
    except ModelLoadError as e:
      raise ValueError(f"config.agents[{i}].model: {e}") from None
  _check_values(config)
  check_mesh_settings(config)


def _check_values(config) -> None:
  for key, low in INT_AT_LEAST.items():
    found, value = _lookup(config, key)
    if found and (not _is_int(value) or value < low):
      raise ValueError(f"config.{key}: {value!r}; expected a whole number >= {low}")
  for key, bounds in FLOAT_RANGES.items():
    found, value = _lookup(config, key)
    if found and not _in_range(value, *bounds):
      raise ValueError(f"config.{key}: {value!r}; expected a number in {_interval(*bounds)}")
  for key in BOOLS:
    found, value = _lookup(config, key)
    if found and not isinstance(value, bool):
      raise ValueError(f"config.{key}: {value!r}; expected true or false")
  for key in STRINGS:
    found, value = _lookup(config, key)
    if found and not isinstance(value, str):
      raise ValueError(f"config.{key}: {value!r}; expected a string")
  gen = config.get("generation") or {}
  if "temperature" in gen:
    temperature = gen["temperature"]
    if not _is_number(temperature) or not math.isfinite(temperature) or temperature < 0:
      raise ValueError(f"config.generation.temperature: {temperature!r}; expected a number > 0")
    if temperature == 0 and not gen.get("greedy", False):
      raise ValueError("config.generation.temperature: 0 samples nothing; expected > 0, or generation.greedy=True")
  found, warmup = _lookup(config, "train.warmup")
  # Warm-up is a share of each stage's steps (below 1) or a number of steps (a whole number; the config's float
  # field turns an int override into 2.0).
  whole = _is_number(warmup) and float(warmup).is_integer()
  if found and not (_is_number(warmup) and warmup >= 0 and (warmup < 1 or whole)):
    raise ValueError(f"config.train.warmup: {warmup!r}; expected a share in [0, 1) or a whole number of steps >= 0")
  _check_choices(config)
  _check_sequences(config)


def _check_choices(config) -> None:
  from rmas_jax.evaluation.runner import METHODS
  from rmas_jax.evaluation.scoring import MODES as SCORING
  from rmas_jax.links.recursive_link import DESIGNS, FORMS, OUTER_INITS
  from rmas_jax.prompts.roles import FINAL_INSTRUCTIONS
  from rmas_jax.training.objectives import INNER_OBJECTIVES
  from rmas_jax.training.trainer import MODES

  choices = {
    "task": tuple(FINAL_INSTRUCTIONS),
    "links.form": FORMS,
    "links.design": DESIGNS,
    "links.outer_init": OUTER_INITS,
    "train.mode": MODES,
    "train.inner_objective": INNER_OBJECTIVES,
    "eval.method": METHODS,
    "eval.scoring": SCORING,
    "eval.checkpoint": CHECKPOINTS,
  }
  for key, allowed in choices.items():
    found, value = _lookup(config, key)
    if found and value not in allowed:
      raise ValueError(f"config.{key}: {value!r}; expected one of {', '.join(map(str, allowed))}")


def _check_sequences(config) -> None:
  found, names = _lookup(config, "tools.names")
  if found:
    if isinstance(names, str) or not isinstance(names, Sequence) or any(n not in TOOL_NAMES for n in names):
      raise ValueError(f"config.tools.names: {names!r}; expected a list drawn from {', '.join(TOOL_NAMES)}")
  found, stops = _lookup(config, "inference.stop_strings")
  if found and (isinstance(stops, str) or not isinstance(stops, Sequence) or not all(
      isinstance(s, str) and s for s in stops)):  # fmt: skip
    raise ValueError(f"config.inference.stop_strings: {stops!r}; expected a list of non-empty strings")
  for key in ("train.fields", "eval.fields"):
    found, fields = _lookup(config, key)
    if found and fields:
      from rmas_jax.evaluation.datasets import field_map

      try:
        field_map(fields)
      except ValueError as e:
        raise ValueError(f"config.{key}: {str(e).removeprefix('fields')}".replace(": :", ":")) from None


def check_data_files(config, sections: Sequence[str] = ("train", "eval")) -> None:
  """Checks that the local data files the `sections` name exist (a registry name is not a file).

  Raises:
    ValueError: one line naming the field and the missing path.
  """
  from rmas_jax.evaluation.datasets import LOCAL_SUFFIXES, registry_key

  for section in sections:
    node = config.get(section) or {}
    for field in ("data_path", "path", "eval_path", "dataset"):
      value = node.get(field) if hasattr(node, "get") else None
      if not isinstance(value, str) or not value:
        continue
      if field == "dataset" and (registry_key(value) is not None or not value.lower().endswith(LOCAL_SUFFIXES)):
        continue  # a registry name, or an unknown name the loader explains itself
      if field == "dataset" and node.get("path"):
        continue  # the path replaces the download; the name only labels it
      if not os.path.exists(value):
        raise ValueError(f"config.{section}.{field}: {value!r}: no such file or directory")


def check_workdir(workdir: str, flag: str = "--workdir") -> None:
  """A work directory must be a directory or not exist yet (it is made); a file there is an error."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"{flag} {workdir}: is a file, not a directory")


def _lookup(config, key: str) -> tuple[bool, Any]:
  """`(found, value)` for a dotted key; a missing field or section is `(False, None)`."""
  node = config
  for part in key.split("."):
    if not hasattr(node, "get") or part not in node:
      return False, None
    node = node[part]
  return True, node


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool)


def _in_range(value: Any, low, high, low_in: bool, high_in: bool) -> bool:
  if not _is_number(value) or not math.isfinite(value):
    return False
  if low is not None and (value < low or (value == low and not low_in)):
    return False
  return high is None or (value < high or (value == high and high_in))


def _interval(low, high, low_in: bool, high_in: bool) -> str:
  left = ("[" if low_in else "(") + ("-inf" if low is None else f"{low:g}")
  right = ("inf" if high is None else f"{high:g}") + ("]" if high_in else ")")
  return f"{left}, {right}"


def load_config(spec: str):
  """A config from `path/to/style.py[:preset]` (the same spelling `--config` takes), validated.

  Raises:
    ValueError: one line: a missing file, a syntax error (file and line), an error raised while the file ran (file,
      line and the error), no `get_config()`, or the first bad field.
  """
  config = load_config_file(spec)
  validate(config)
  return config


def load_config_file(spec: str):
  """`load_config` without `validate` (for callers that apply overrides first)."""
  import importlib.util
  import traceback

  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    what = "is a directory" if os.path.isdir(path) else "no such config file"
    raise ValueError(f"{path}: {what}; expected configs/<style>.py[:preset]")
  module_spec = importlib.util.spec_from_file_location(f"rmas_config_{os.path.basename(path)[:-3]}", path)
  if module_spec is None or module_spec.loader is None:
    raise ValueError(f"{path}: not a Python config file; expected configs/<style>.py[:preset]")
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      raise ValueError(f"{path}: defines no get_config()")
    return module.get_config(preset or None)
  except SyntaxError as e:
    raise ValueError(f"{e.filename or path}:{e.lineno}: syntax error: {e.msg}") from None
  except ValueError as e:
    if str(e).startswith(path) or "\n" not in str(e):
      raise ValueError(str(e).strip()) from None
    raise ValueError(f"{path}: {_one_line(e)}") from None
  except Exception as e:
    # Name the config file's own line that failed, not the library frame that raised.
    frames = [f for f in traceback.extract_tb(e.__traceback__) if os.path.abspath(f.filename) == os.path.abspath(path)]
    where = f"{path}:{frames[-1].lineno}" if frames else path
    raise ValueError(f"{where}: {_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


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
      except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = raw
    problem = unknown_field(config, key)
    if problem:
      raise ValueError(f"override {item!r}: {problem}")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:
      raise ValueError(f"override {item!r}: {_one_line(e)}") from None
  if assignments:
    # Ranges now, so that a caller that does not call `validate` after its overrides (plan) still refuses them.
    _check_values(config)


def unknown_field(config, key: str) -> str | None:
  """Why `key` (dotted) names no field of `config`, with the fields that do exist there, or None."""
  node, seen = config, "config"
  for part in key.split("."):
    if not hasattr(node, "keys") or part not in node:
      if not hasattr(node, "keys"):
        return f"{seen} is a {type(node).__name__}, not a section; it has no field {part!r}"
      fields = ", ".join(sorted(map(str, node.keys()))) or "no fields"
      return f"{seen} has no field {part!r} (it has: {fields})"
    node, seen = node[part], f"{seen}.{part}"
  return None


def parse_absl_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing for `train.py` and `eval.py` (`app.run(main, flags_parser=parse_absl_flags)`), with every
  failure one line and exit status 2: a missing or broken config file, an unknown `--config.*` key, a bad value.

  `ml_collections.config_flags` raises these from inside absl's parser, where they would print a traceback of 30 to
  50 lines; the cause is then diagnosed here again from `argv`, so that the line names the file or the field.
  """
  from absl import flags

  try:
    remaining = flags.FLAGS(argv)
    # config_flags defers a file that could not be read: the flag's value is a stand-in that raises when used.
    if "config" not in flags.FLAGS or type(flags.FLAGS["config"].value).__name__ != "_ErrorConfig":
      return remaining
    message = _diagnose_flags(argv) or "--config: the config file could not be loaded"
  except SystemExit:
    raise
  except Exception as e:
    message = _diagnose_flags(argv) or _one_line(e)
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _diagnose_flags(argv: Sequence[str]) -> str | None:
  """The one-line cause of a failed parse of `argv`: the config file's problem or the first unknown override."""
  spec, overrides = None, []
  args = list(argv[1:])
  for i, arg in enumerate(args):
    if arg.startswith("--config="):
      spec = arg.partition("=")[2]
    elif arg == "--config" and i + 1 < len(args):
      spec = args[i + 1]
    elif arg.startswith("--config."):
      overrides.append(arg[2:])
  if spec is None:
    return None
  try:
    config = load_config_file(spec)
  except ValueError as e:
    return str(e)
  for item in overrides:
    key, _, value = item.partition("=")
    problem = unknown_field(config, key.removeprefix("config."))
    if problem:
      return f"--{item}: {problem}"
  for item in overrides:  # every key exists: a value that does not fit its field
    key, eq, raw = item.partition("=")
    if eq:
      try:
        apply_overrides(config, [f"{key.removeprefix('config.')}={raw}"])
      except ValueError as e:
        return f"--{item}: {str(e).partition(': ')[2] or e}"
  return None


def entry_check(config, workdir: str | None, purpose: str) -> str | None:
  """What is wrong with a `train.py` / `eval.py` invocation, as one line, or None."""
  if config is None:
    return "--config is required, e.g. --config configs/sequential.py"
  if not workdir:
    return f"--workdir is required ({purpose} go there)"
  try:
    check_workdir(workdir)
    validate(config)
    check_data_files(config)
  except ValueError as e:
    return str(e)
  return None
