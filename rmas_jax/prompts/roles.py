"""Role prompts in our own words, with the same roles and slot structure as the public release: sequential
(planner -> critic -> solver, the solver's thoughts back to the planner from round 2), mixture (three domain
experts -> summarizer, the summarizer's thoughts back to each expert) and distillation (expert -> learner, the
learner's thoughts back to the expert) and deliberation (a reflector -> a tool-caller that may run Python or
search a local corpus while it writes, the tool-caller's thoughts back to the reflector).

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
  "exact": "Reply with the answer alone, exactly as it was given, and nothing else.",
}


def final_instruction(task: str) -> str:
  """The decoder's closing instruction for a task kind."""
  if task not in FINAL_INSTRUCTIONS:
    raise ValueError(f"task {task!r}: expected one of {sorted(FINAL_INSTRUCTIONS)}")
  return FINAL_INSTRUCTIONS[task]


def feedback_paragraph(sender: str, round_index: int, rounds: int) -> str:
  """The later-round paragraph that names the round and holds the `feedback` slot."""
  return (
    f"This is round {round_index} of {rounds}. Signal from the {sender} in the previous round:\n"
    f"{slot('feedback')}\nTreat the signal as a hint; the problem statement always wins."
  )


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
  user = (
    "Your role is the solver.\n\n"
    f"Improved plan:\n{slot('refined_plan')}\n\n"
    f"Problem:\n{question}\n\n"
    f"{final_instruction(task)}"
  )
  return RolePrompt(SYSTEM, user)


def thinker_prompt(intro: str, question: str, round_index: int, rounds: int, sender: str,
                   system: str = SYSTEM) -> RolePrompt:  # fmt: skip
  """A thinking role's prompt: its role paragraph, from round 2 on the feedback paragraph from `sender`, then the
  problem (the shape shared by the mixture experts, the distillation expert and the reflector)."""
  parts = [intro]
  if round_index > 1:
    parts.append(feedback_paragraph(sender, round_index, rounds))
  parts.append(f"Problem:\n{question}")
  return RolePrompt(system, "\n\n".join(parts))


# --- mixture: three domain experts, one summarizer ---------------------------------------------------------

EXPERT_DOMAINS = ("math", "code", "science")


def expert(domain: str, question: str, round_index: int, rounds: int) -> RolePrompt:
  """A domain expert of the mixture style; from round 2 on it reads the summarizer's feedback."""
  if domain not in EXPERT_DOMAINS:
    raise ValueError(f"expert domain {domain!r}: expected one of {EXPERT_DOMAINS}")
  intro = (f"Your role is the {domain} expert. Look at the problem from the {domain} side only and note briefly "
           "what matters for solving it; another agent will combine your notes with other experts'.")  # fmt: skip
  return thinker_prompt(intro, question, round_index, rounds, "summarizer")


def summarizer(question: str, task: str = "math") -> RolePrompt:
  """The mixture's summarizer reads the three experts' thoughts and answers."""
  user = (
    "Your role is the summarizer. Three experts have looked at the problem.\n\n"
    f"Math expert:\n{slot('math')}\n\nCode expert:\n{slot('code')}\n\nScience expert:\n{slot('science')}\n\n"
    "Use what helps and ignore what does not.\n\n"
    f"Problem:\n{question}\n\n{final_instruction(task)}"
  )
  return RolePrompt(SYSTEM, user)


# --- distillation: an expert guides a learner ----------------------------------------------------------------


def distill_expert(question: str, round_index: int, rounds: int) -> RolePrompt:
  """The distillation expert writes guidance (not the answer); from round 2 on it reads the learner's feedback."""
  intro = ("Your role is the expert. Write a short numbered plan that a less experienced agent can carry out. "
           "Do not give the final answer.")  # fmt: skip
  return thinker_prompt(intro, question, round_index, rounds, "learner")


def learner(question: str, task: str = "math") -> RolePrompt:
  """The distillation learner follows the expert's guidance and answers."""
  user = (
    "Your role is the learner.\n\n"
    f"Guidance from the expert:\n{slot('expert')}\n\n"
    "Follow the guidance where it fits the problem; the problem statement always wins.\n\n"
    f"Problem:\n{question}\n\n{final_instruction(task)}"
  )
  return RolePrompt(SYSTEM, user)


# --- deliberation: a reflector and a tool-caller --------------------------------------------------------------

TOOL_SYSTEM = (
  "You are a careful assistant working as one member of a team of agents. You have two tools. To run Python, "
  "write the code between <python> and </python>; to look something up in the reference collection, write a "
  "short query between <search> and </search>. The tool's output comes back between <result> and </result>, "
  "after which you continue. Print what you need to see: only printed output is returned."
)


def reflector(question: str, round_index: int, rounds: int) -> RolePrompt:
  """The deliberation reflector thinks about the approach (never writes text); from round 2 it reads the
  tool-caller's feedback."""
  intro = ("Your role is the reflector. Think about how to approach the problem, which facts or calculations it "
           "needs, and what could go wrong; another agent will act on your reflection with tools.")  # fmt: skip
  return thinker_prompt(intro, question, round_index, rounds, "tool-caller", system=TOOL_SYSTEM)


def tool_caller(question: str, task: str = "math") -> RolePrompt:
  """The deliberation tool-caller reads the reflector's thoughts and answers, calling tools as it needs."""
  user = (
    "Your role is the tool-caller.\n\n"
    f"Reflection from the reflector:\n{slot('reflection')}\n\n"
    "Use the reflection as a hint and the tools when a calculation or a fact needs checking; the problem "
    "statement always wins.\n\n"
    f"Problem:\n{question}\n\n{final_instruction(task)}"
  )
  return RolePrompt(TOOL_SYSTEM, user)
