"""Collaboration patterns as data: which roles think in which order, which latents go where, who writes text.

A user can declare a new pattern (e.g. in a config file) without touching the code that runs it.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Edge:
  """`src`'s latents, mapped by the outer link `src->dst`, fill slot `slot` of `dst`'s prompt.

  A `feedback` edge carries them into the next round (closing the loop); others stay within a round.
  """

  src: str
  dst: str
  slot: str
  feedback: bool = False

  @property
  def link_name(self) -> str:
    return f"{self.src}->{self.dst}"


@dataclasses.dataclass(frozen=True)
class Pattern:
  """A collaboration pattern.

  Attributes:
    name: its name.
    roles: the roles in the order they think within a round.
    edges: latent hand-offs.
    decoder: the role that writes the answer in the last round.
  """

  name: str
  roles: tuple[str, ...]
  edges: tuple[Edge, ...]
  decoder: str

  def __post_init__(self):
    if len(set(self.roles)) != len(self.roles):
      raise ValueError(f"pattern {self.name}: a role appears twice in {self.roles}")
    if self.decoder not in self.roles:
      raise ValueError(f"pattern {self.name}: decoder {self.decoder!r} is not one of its roles {self.roles}")
    order = {r: i for i, r in enumerate(self.roles)}
    for e in self.edges:
      if e.src not in order or e.dst not in order:
        raise ValueError(f"pattern {self.name}: edge {e.link_name} names a role not in {self.roles}")
      if not e.feedback and order[e.src] >= order[e.dst]:
        raise ValueError(f"pattern {self.name}: edge {e.link_name} goes backwards within a round; mark it feedback")
    for r in self.roles:
      slots = [e.slot for e in self.edges if e.dst == r]
      if len(set(slots)) != len(slots):
        raise ValueError(f"pattern {self.name}: role {r!r} receives two edges into one slot")

  def incoming(self, role: str, *, feedback: bool) -> tuple[Edge, ...]:
    """Edges into `role` (within-round ones, or the previous round's feedback ones)."""
    return tuple(e for e in self.edges if e.dst == role and e.feedback == feedback)

  def outgoing(self, role: str) -> tuple[Edge, ...]:
    return tuple(e for e in self.edges if e.src == role)

  def thinks(self, role: str, final_round: bool) -> bool:
    """Whether `role` rolls out latents in a round: someone reads them (next-round readers only if one follows)."""
    if final_round and role == self.decoder:
      return False
    return any(not e.feedback or not final_round for e in self.outgoing(role))


SEQUENTIAL = Pattern(
  name="sequential",
  roles=("planner", "critic", "solver"),
  edges=(
    Edge("planner", "critic", "plan"),
    Edge("critic", "solver", "refined_plan"),
    Edge("solver", "planner", "feedback", feedback=True),
  ),
  decoder="solver",
)

MIXTURE = Pattern(
  name="mixture",
  roles=("math_expert", "code_expert", "science_expert", "summarizer"),
  edges=(
    Edge("math_expert", "summarizer", "math"),
    Edge("code_expert", "summarizer", "code"),
    Edge("science_expert", "summarizer", "science"),
    Edge("summarizer", "math_expert", "feedback", feedback=True),
    Edge("summarizer", "code_expert", "feedback", feedback=True),
    Edge("summarizer", "science_expert", "feedback", feedback=True),
  ),
  decoder="summarizer",
)

DISTILLATION = Pattern(
  name="distillation",
  roles=("expert", "learner"),
  edges=(Edge("expert", "learner", "expert"), Edge("learner", "expert", "feedback", feedback=True)),
  decoder="learner",
)

DELIBERATION = Pattern(
  name="deliberation",
  roles=("reflector", "tool_caller"),
  edges=(Edge("reflector", "tool_caller", "reflection"), Edge("tool_caller", "reflector", "feedback", feedback=True)),
  decoder="tool_caller",
)

PATTERNS = {p.name: p for p in (SEQUENTIAL, MIXTURE, DISTILLATION, DELIBERATION)}
