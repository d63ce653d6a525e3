"""Text-only baselines with the same agents, roles and decode settings as the latent system.

`single`: one agent answers alone. `text_mas` / `recursive_text_mas`: the same pattern, but every agent writes text
and the text goes where the latents would (into the receiver's slot), for 1 or R rounds; only the decoder's last
text is the answer, and every agent's tokens are counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp

from rmas_jax.generation.sampler import SamplingConfig, TextResult, bucket, generate_text, left_pad
from rmas_jax.patterns.ask import PROMPTS, PromptBook
from rmas_jax.patterns.system import System, slot_order
from rmas_jax.prompts import roles
from rmas_jax.prompts.records import prompt_record
from rmas_jax.prompts.slots import render_chat, slot
from rmas_jax.weights.tokenizer import stop_token_ids


def _write(model, tok, texts: Sequence[str], *, max_new_tokens: int, sampling: SamplingConfig,
           stop_strings: Sequence[str] = (), watcher=None, insert_room: int = 0) -> list[TextResult]:  # fmt: skip
  ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
  padded, mask = left_pad(ids, bucket(max(map(len, ids))))
  return generate_text(model, tok, input_ids=jnp.asarray(padded), attention_mask=jnp.asarray(mask),
                       max_new_tokens=max_new_tokens, stop_ids=stop_token_ids(tok, chat=True),
                       stop_strings=stop_strings, watcher=watcher, sampling=sampling,
                       chunk=16 if (stop_strings or watcher) else max_new_tokens, insert_room=insert_room)  # fmt: skip


def single_agent(model, tok, questions: Sequence[str], *, task: str, max_new_tokens: int,
                 sampling: SamplingConfig, **kw) -> tuple[list[TextResult], dict]:  # fmt: skip
  """One agent answers each question on its own."""
  texts = [render_chat(tok, roles.SYSTEM, f"Problem:\n{q}\n\n{roles.final_instruction(task)}") for q in questions]
  results = _write(model, tok, texts, max_new_tokens=max_new_tokens, sampling=sampling, **kw)
  return results, {"decoded_tokens": {"single": sum(len(r.ids) for r in results)}}


def text_rounds(system: System, tokenizers: Mapping[str, object], questions: Sequence[str], *, rounds: int,
                task: str, max_new_tokens: int, agent_tokens: int, sampling: SamplingConfig,
                book: PromptBook | None = None, **kw) -> tuple[list[TextResult], dict]:  # fmt: skip
  """The pattern in text for `rounds` rounds: each thinking agent writes up to `agent_tokens` tokens, which fill
  the receivers' slots; the decoder's text of the last round is the answer."""
  pattern = system.pattern
  book = book or PROMPTS[pattern.name]
  spent: dict[str, int] = {}
  feedback: dict[str, list[str]] = {}
  final: list[TextResult] = []
  for r in range(1, rounds + 1):
    last = r == rounds
    sent: dict[str, list[str]] = {}
    new_feedback: dict[str, list[str]] = {}
    for role in pattern.roles:
      if not (last and role == pattern.decoder) and not pattern.thinks(role, last):
        continue
      tok, model = tokenizers[role], system.agents[role].backbone
      edges = pattern.incoming(role, feedback=False) + (pattern.incoming(role, feedback=True) if r > 1 else ())
      assert [e.slot for e in edges] == list(slot_order(pattern, role, r == 1))
      texts = []
      for i, q in enumerate(questions):
        p = book[role](prompt_record(q), r, rounds, task)
        user = p.user
        for e in edges:
          source = feedback if e.feedback else sent
          user = user.replace(slot(e.slot), source[e.link_name][i].strip())
        texts.append(render_chat(tok, p.system, user))
      decoding = last and role == pattern.decoder
      out = _write(model, tok, texts, max_new_tokens=max_new_tokens if decoding else agent_tokens,
                   sampling=sampling, **(kw if decoding else {}))  # fmt: skip
      spent[f"round {r}/{role}"] = sum(len(x.ids) for x in out)
      if decoding:
        final = out
        continue
      for e in pattern.outgoing(role):
        (new_feedback if e.feedback else sent)[e.link_name] = [x.text for x in out]
    feedback = new_feedback
  return final, {"decoded_tokens": spent}


def _numbered(answers: Sequence[str]) -> str:
  return "\n\n".join(f"[{k}] {a.strip()}" for k, a in enumerate(answers, 1))


def proposer_prompt(question: str, previous: Sequence[str], task: str) -> str:
  """A mixture-of-agents proposer's request: the problem, and from the second layer on the previous layer's
  answers to improve on."""
  text = f"Problem:\n{question}\n\n"
  if previous:
    text += (f"Answers other assistants gave to this problem:\n\n{_numbered(previous)}\n\n"
             "Keep what is right in them, correct what is wrong, and give your own complete solution.\n\n")  # fmt: skip
  return text + roles.final_instruction(task)


def aggregator_prompt(question: str, answers: Sequence[str], task: str) -> str:
  """The mixture-of-agents aggregator's request: merge the last layer's answers into one."""
  return (f"Problem:\n{question}\n\nCandidate answers from several assistants:\n\n{_numbered(answers)}\n\n"
          "Some of them may be wrong. Check them against each other and the problem, then write one correct "
          f"solution.\n\n{roles.final_instruction(task)}")  # fmt: skip


def mixture_of_agents(system: System, tokenizers: Mapping[str, object], questions: Sequence[str], *, rounds: int,
                      task: str, max_new_tokens: int, agent_tokens: int, sampling: SamplingConfig,
                      **kw) -> tuple[list[TextResult], dict]:  # fmt: skip
  """Mixture-of-agents in text (Wang et al., 2024): `rounds` layers in which every agent of the system answers
  (from layer 2 on, seeing the previous layer's answers), then the pattern's decoder aggregates the last layer.
  Proposers write up to `agent_tokens` tokens each; the aggregator's text is the answer."""
  order = list(system.pattern.roles)
  previous: list[list[str]] = [[] for _ in questions]
  spent: dict[str, int] = {}
  for r in range(1, rounds + 1):
    layer: list[list[str]] = [[] for _ in questions]
    for role in order:
      tok, model = tokenizers[role], system.agents[role].backbone
      texts = [render_chat(tok, roles.SYSTEM, proposer_prompt(q, previous[i], task)) for i, q in enumerate(questions)]
      out = _write(model, tok, texts, max_new_tokens=agent_tokens, sampling=sampling)
      spent[f"round {r}/{role}"] = sum(len(x.ids) for x in out)
      for i, x in enumerate(out):
        layer[i].append(x.text)
    previous = layer
  decoder = system.pattern.decoder
  tok, model = tokenizers[decoder], system.agents[decoder].backbone
  texts = [render_chat(tok, roles.SYSTEM, aggregator_prompt(q, previous[i], task)) for i, q in enumerate(questions)]
  final = _write(model, tok, texts, max_new_tokens=max_new_tokens, sampling=sampling, **kw)
  spent[f"aggregate/{decoder}"] = sum(len(x.ids) for x in final)
  return final, {"decoded_tokens": spent}
