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
        p = book[role](q, r, rounds, task)
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
