"""Whether a question fits the system before anything is allocated for it (`ask`, `serve`).

Every round's prompt of every role is tokenised (cheap next to the model) and its length, latent slots included,
plus the decoder's new tokens in the last round, is set against the agent's context (`max_position_embeddings`) and
an optional configured maximum. A question that does not fit is one `PromptTooLongError` naming the role, round and
numbers, instead of a KV cache sized for it (a 100 KB question asked for terabytes).
"""

from __future__ import annotations


class PromptTooLongError(ValueError):
  """A prompt longer than the agent's context or the configured maximum."""


def context_of(backbone) -> int | None:
  """The backbone's context length (its config's `max_position_embeddings`), or None when it does not say."""
  cfg = getattr(backbone, "cfg", None) or getattr(backbone, "config", None)
  value = getattr(cfg, "max_position_embeddings", None)
  return int(value) if value else None


def check_question_fits(loaded, question: str, *, rounds: int, steps: int, task: str, max_new_tokens: int,
                        max_prompt_tokens: int = 0) -> int:  # fmt: skip
  """Checks `question` against every agent's context; returns the longest prompt's length (latents included).

  Args:
    loaded: a `patterns.from_config.LoadedSystem`.
    question: the question, as it will be asked.
    rounds: recursion rounds.
    steps: latent steps per agent and round.
    task: the decoder's task (its closing instruction is part of the prompt).
    max_new_tokens: the decoder's budget, which must fit beside its last-round prompt.
    max_prompt_tokens: a configured maximum prompt length (latents included); 0 for none.

  Raises:
    PromptTooLongError: one line naming the role, round, length and limit.
  """
  from rmas_jax.patterns.ask import segmented_prompts

  system = loaded.system
  prompts = segmented_prompts(system, loaded.tokenizers, [question], rounds=rounds, task=task, book=loaded.prompts)
  decoder = system.pattern.decoder
  longest = 0
  for r, per_role in enumerate(prompts, start=1):
    for role, segs in per_role.items():
      length = segs[0].length(steps)
      longest = max(longest, length)
      if max_prompt_tokens and length > max_prompt_tokens:
        raise PromptTooLongError(
          f"the question is too long: {role}'s round-{r} prompt is {length} tokens (latent slots included); the "
          f"limit is {max_prompt_tokens}"
        )
      context = context_of(system.agents[role].backbone)
      need = length + (max_new_tokens if r == rounds and role == decoder else 0)
      if context and need > context:
        extra = f" plus {max_new_tokens} new tokens" if need > length else ""
        raise PromptTooLongError(
          f"the question is too long: {role}'s round-{r} prompt is {length} tokens (latent slots included){extra}; "
          f"{loaded.models.get(role, role)}'s context is {context}"
        )
  return longest
