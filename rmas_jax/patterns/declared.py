"""Patterns and role prompts declared in a config file, so a new collaboration needs no code.

A pattern is `{"name", "roles": [...], "edges": [{"src", "dst", "slot", "feedback"}], "decoder"}`. Prompts are, per
role, `{"system", "first", "later"}` templates (`later`, for rounds 2..R, defaults to `first`) whose fields are
`{question}`, `{round}`, `{rounds}`, `{instruction}` (the decoder's closing instruction for the task) and the
role's slot names, e.g. `{plan}`: each slot field becomes the place where the received latents go.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

from rmas_jax.patterns.graph import Edge, Pattern
from rmas_jax.prompts import roles
from rmas_jax.prompts.slots import slot

FIELDS = ("question", "round", "rounds", "instruction")


def pattern_from_dict(spec: Mapping, where: str = "config.pattern") -> Pattern:
  """A `Pattern` from its plain-data declaration; errors name the field."""
  for key in ("name", "roles", "edges", "decoder"):
    if key not in spec:
      raise ValueError(f"{where}: missing {key!r}; expected name, roles, edges, decoder")
  edges = []
  for i, e in enumerate(spec["edges"]):
    unknown = set(e) - {"src", "dst", "slot", "feedback"}
    if unknown or not {"src", "dst", "slot"} <= set(e):
      raise ValueError(f"{where}.edges[{i}]: {dict(e)}; expected keys src, dst, slot and optionally feedback")
    edges.append(Edge(e["src"], e["dst"], e["slot"], bool(e.get("feedback", False))))
  try:
    return Pattern(name=spec["name"], roles=tuple(spec["roles"]), edges=tuple(edges), decoder=spec["decoder"])
  except ValueError as err:
    raise ValueError(f"{where}: {err}") from None


def _fields(template: str) -> set[str]:
  return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def template_book(pattern: Pattern, prompts: Mapping, where: str = "config.prompts"):
  """A prompt book (role -> `(question, round, rounds, task) -> RolePrompt`) from per-role templates, checked
  against the pattern: every role has a template and every field is known."""
  book = {}
  for role in pattern.roles:
    if role not in prompts:
      raise ValueError(f"{where}: no prompt for role {role!r}; roles are {list(pattern.roles)}")
    spec = dict(prompts[role])
    if "first" not in spec:
      raise ValueError(f"{where}.{role}: missing 'first' (the user turn template)")
    slots = {e.slot for e in pattern.edges if e.dst == role}
    for part in ("system", "first", "later"):
      bad = _fields(spec.get(part) or "") - set(FIELDS) - slots
      if bad:
        raise ValueError(f"{where}.{role}.{part}: unknown fields {sorted(bad)}; expected {list(FIELDS)} or slots "
                         f"{sorted(slots)}")  # fmt: skip
    book[role] = _render_fn(spec, slots)
  return book


def _render_fn(spec: Mapping, slots: set[str]):
  def render(question: str, round_index: int, rounds: int, task: str) -> roles.RolePrompt:
    values = dict(question=question, round=round_index, rounds=rounds, **{s: slot(s) for s in slots})
    values["instruction"] = roles.final_instruction(task)
    user = spec["first"] if round_index == 1 else spec.get("later") or spec["first"]
    return roles.RolePrompt(spec.get("system") or roles.SYSTEM, user.format(**values))

  return render
