"""Role prompts of the sequential style, in our own words, with the same roles and slot structure as the
public release: planner -> critic -> solver, and from round 2 on the solver's thoughts back to the planner.

Unlike the release, a later round says which round it is (the release prints "round 2" in every later round).
"""

from __future__ import annotations

import dataclasses

from rmas_jax.prompts.slots import slot

SYSTEM = "You are a careful assistant working as one member of a team of agents."

FINAL_INSTRUCTIONS = {
  "math": "Work the problem out and give the final answer inside \\boxed{}, for example \\boxed{42}.",
  "choice": "Work the problem out and give only the letter of the chosen option inside \\boxed{}, for example "
  "\\boxed{B}.",
  "code": "Write the solution as one complete Python code block (```python ... ```).",
  "reasoning": "Answer the question in a short sentence.",
}


@dataclasses.dataclass(frozen=True)
class RolePrompt:
  """System and user text of one agent's turn; the user text may hold slot markers."""

  system: str
  user: str


def planner(question: str, round_index: int, rounds: int) -> RolePrompt:
  """The planner's turn; from round 2 on it reads the solver's feedback in the `feedback` slot."""
  if round_index == 1:
    user = (
      "Your role is the planner. Do not solve the problem; write a short numbered plan "
      "(Step 1, Step 2, ...) that another agent can follow.\n\n"
      f"Problem:\n{question}"
    )
  else:
    user = (
      f"Your role is the planner. This is round {round_index} of {rounds}.\n\n"
      f"Problem:\n{question}\n\n"
      f"Signal from the solver in the previous round:\n{slot('feedback')}\n\n"
      "Treat the signal as a hint for revising your plan; the problem statement always wins. "
      "Write only a short numbered plan (Step 1, Step 2, ...)."
    )
  return RolePrompt(SYSTEM, user)


def critic(question: str) -> RolePrompt:
  """The critic reads the planner's thoughts in the `plan` slot and tightens the plan."""
  user = (
    "Your role is the critic. Check the draft plan against the problem, fix what is wrong or missing, and "
    "write only the improved numbered plan (Step 1, Step 2, ...).\n\n"
    f"Problem:\n{question}\n\n"
    f"Draft plan:\n{slot('plan')}"
  )
  return RolePrompt(SYSTEM, user)


def solver(question: str, task: str = "math") -> RolePrompt:
  """The solver reads the critic's thoughts in the `refined_plan` slot and answers."""
  if task not in FINAL_INSTRUCTIONS:
    raise ValueError(f"task {task!r}: expected one of {sorted(FINAL_INSTRUCTIONS)}")
  user = (
    "Your role is the solver.\n\n"
    f"Improved plan:\n{slot('refined_plan')}\n\n"
    f"Problem:\n{question}\n\n"
    f"{FINAL_INSTRUCTIONS[task]}"
  )
  return RolePrompt(SYSTEM, user)
