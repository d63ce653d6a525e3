"""Patterns and role prompts declared in a config file, so a new collaboration needs no code.

A pattern is `{"name", "roles": [...], "edges": [{"src", "dst", "slot", "feedback"}], "decoder"}`. Prompts are, per
role, `{"system", "first", "later"}` templates (`later`, for rounds 2..R, defaults to `first`) whose fields are
`{question}`, `{round}`, `{rounds}`, `{instruction}` (the decoder's closing instruction for the task) and the
role's slot names, e.g. `{plan}`: each slot field becomes the place where the received latents go. Any other
field names a field of the data record (`{context}`, `{documents}`), so one role can see what the others cannot; a
record without that field is a one-line error naming the record and the field (`rmas_jax.prompts.records`).
"""

from __future__ import annotations

import string
from collections.abc import Mapping

from rmas_jax.patterns.graph import Edge, Pattern
from rmas_jax.prompts import roles
from rmas_jax.prompts.records import PromptRecord
from rmas_jax.prompts.slots import slot

FIELDS = ("question", "round", "rounds", "instruction")  # filled by the round loop; any other name is a record field


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


def _fields(template: str, where: str) -> set[str]:
  try:
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
  except ValueError as err:  # an unbalanced brace
    raise ValueError(f"{where}: {err} (write a literal brace as {{{{ or }}}})") from None
  bad = {n for n in names if not n.isidentifier()}
  if bad:
    raise ValueError(f"{where}: fields {sorted(bad)} are not plain names; expected e.g. {{question}} or {{context}}")
  return names


def template_book(pattern: Pattern, prompts: Mapping, where: str = "config.prompts"):
  """A prompt book (role -> `(record, round, rounds, task) -> RolePrompt`) from per-role templates, checked
  against the pattern: every role has a template and every slot a thinking role receives is a slot field. Fields
  that are neither built in nor slots name record fields, checked when a record fills them."""
  book = {}
  for role in pattern.roles:
    if role not in prompts:
      raise ValueError(f"{where}: no prompt for role {role!r}; roles are {list(pattern.roles)}")
    spec = dict(prompts[role])
    if "first" not in spec:
      raise ValueError(f"{where}.{role}: missing 'first' (the user turn template)")
    slots = {e.slot for e in pattern.edges if e.dst == role}
    elsewhere = {e.slot for e in pattern.edges} - slots
    for part in ("system", "first", "later"):
      stray = _fields(spec.get(part) or "", f"{where}.{role}.{part}") & elsewhere
      if stray:
        raise ValueError(f"{where}.{role}.{part}: slots {sorted(stray)} go to other roles; {role!r} receives "
                         f"{sorted(slots) or 'no slots'}")  # fmt: skip
    book[role] = _render_fn(role, spec, slots)
  return book


def _render_fn(role: str, spec: Mapping, slots: set[str]):
  def fill(template: str, record: PromptRecord, round_index: int, rounds: int, task: str) -> str:
    values = {}
    for name in _fields(template, role):
      if name in slots:
        values[name] = slot(name)
      elif name == "round":
        values[name] = round_index
      elif name == "rounds":
        values[name] = rounds
      elif name == "instruction":
        values[name] = roles.final_instruction(task)
      else:
        values[name] = record.get(name, role)
    return template.format(**values)

  def render(record: PromptRecord, round_index: int, rounds: int, task: str) -> roles.RolePrompt:
    user = spec["first"] if round_index == 1 else spec.get("later") or spec["first"]
    system = fill(spec.get("system") or roles.SYSTEM, record, round_index, rounds, task)
    return roles.RolePrompt(system, fill(user, record, round_index, rounds, task))

  return render
