"""A runnable system from a config: its pattern (built in or declared), agents loaded once per distinct model,
fresh links, prompts, decoding settings and tools."""

from __future__ import annotations

import dataclasses
from typing import Any

from rmas_jax.generation.sampler import SamplingConfig
from rmas_jax.interop.role_repos import adopt_role_repo_links
from rmas_jax.patterns.ask import PromptBook
from rmas_jax.patterns.declared import pattern_from_dict, template_book
from rmas_jax.patterns.graph import PATTERNS, Pattern
from rmas_jax.patterns.system import System, build_system
from rmas_jax.sharding.placement import current_mesh, place_links
from rmas_jax.tools.calls import ToolBox, make_toolbox
from rmas_jax.weights.pretrained import load_pretrained


@dataclasses.dataclass
class LoadedSystem:
  """Everything `ask` needs besides the questions."""

  system: System
  tokenizers: dict[str, Any]
  prompts: PromptBook | None  # None: the pattern's written prompts
  models: dict[str, str]  # role -> model spec
  inner_links: dict[str, str] = dataclasses.field(default_factory=dict)  # role -> file, for role repositories


def pattern_of(config) -> Pattern:
  """The declared `config.pattern`, else the built-in pattern named by `config.style`."""
  if config.get("pattern"):
    return pattern_from_dict(config.pattern.to_dict() if hasattr(config.pattern, "to_dict") else config.pattern)
  if config.style not in PATTERNS:
    raise ValueError(f"config.style: {config.style!r} is not built in ({sorted(PATTERNS)}); declare config.pattern")
  return PATTERNS[config.style]


def prompts_of(config, pattern: Pattern) -> PromptBook | None:
  if not config.get("prompts"):
    return None
  prompts = config.prompts.to_dict() if hasattr(config.prompts, "to_dict") else config.prompts
  return template_book(pattern, prompts)


def sampling_of(config) -> SamplingConfig:
  g = config.generation
  return SamplingConfig(greedy=g.greedy, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, seed=config.seed,
                        ignore_eos=bool(g.get("ignore_eos", False)))  # fmt: skip


def toolbox_of(config) -> ToolBox | None:
  """The decoder's tools, when `config.tools.enabled`."""
  t = config.get("tools")
  if not t or not t.enabled:
    return None
  return make_toolbox(tuple(t.names), search_corpus=t.search_corpus or None, max_calls=t.max_calls,
                      python_timeout_s=t.python_timeout_s)  # fmt: skip


def load_system(config, *, progress: bool = True, scan_layers: bool | None = None) -> LoadedSystem:
  """Loads the config's agents (roles naming one model share its weights) and builds the system with fresh links
  (an agent's inner link comes from its model directory when that is a release role repository).

  `scan_layers` picks the backbones' layer layout (None: the platform default). Called under
  `rmas_jax.sharding.use_mesh(mesh)`, every weight is loaded onto its shards of `mesh`."""
  pattern = pattern_of(config)
  models = {a["role"]: a["model"] for a in config.agents}
  missing, extra = set(pattern.roles) - set(models), set(models) - set(pattern.roles)
  if missing or extra:
    raise ValueError(f"config.agents: roles {sorted(models)} do not match pattern {pattern.name}'s roles "
                     f"{list(pattern.roles)}")  # fmt: skip
  prompts = prompts_of(config, pattern)
  loaded = {}
  for spec in dict.fromkeys(models.values()):
    loaded[spec] = load_pretrained(spec, dtype=config.dtype, progress=progress, scan_layers=scan_layers)
  backbones = {role: loaded[spec].model for role, spec in models.items()}
  links = config.get("links") or {}
  system = build_system(pattern, backbones, form=links.get("form", "official"),
                        design=links.get("design", "res+2-layer"), seed=config.seed,
                        scale_to_embeddings=bool(links.get("scale_to_embeddings", False)),
                        outer_init=links.get("outer_init", "torch"))  # fmt: skip
  # A release role repository (its model plus adapter(task).pt) brings the agent's inner link along.
  inner_links = adopt_role_repo_links(system, config, {role: loaded[spec].source for role, spec in models.items()})
  mesh = current_mesh()
  if mesh is not None:  # loaded under `rmas_jax.sharding.use_mesh`: backbones are sharded; lay the links out too
    place_links(system, mesh)
  return LoadedSystem(system, {role: loaded[spec].tokenizer for role, spec in models.items()}, prompts, models,
                      inner_links)  # fmt: skip
