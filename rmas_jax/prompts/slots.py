"""Prompts with latent slots: rendered with the receiving agent's own chat template, split at the slot markers,
tokenised per segment, and laid out (left-padded, bucketed) so received latent vectors drop into their slots.

A slot marker is `<<slot:NAME>>` in the prompt text. Rendering happens on the host; the layout is a few integer
arrays, and `assemble_embeddings` builds the input vectors inside jit from them and the latents.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rmas_jax.generation.sampler import bucket

SLOT = re.compile(r"<<slot:([a-z0-9_]+)>>")


def slot(name: str) -> str:
  """The marker of slot `name` to write into a prompt."""
  if not re.fullmatch(r"[a-z0-9_]+", name):
    raise ValueError(f"slot name {name!r}: use lowercase letters, digits and underscores")
  return f"<<slot:{name}>>"


def render_chat(tokenizer, system: str | None, user: str) -> str:
  """The prompt as the agent's chat template renders it, ending with the assistant's turn opened.

  A template that rejects a system turn gets the system text merged into the user turn. Templates with a
  thinking switch (Qwen3) render with thinking off, so latent steps start after the assistant header.
  """
  if not tokenizer.chat_template:
    raise ValueError(f"{getattr(tokenizer, 'name_or_path', 'tokenizer')}: no chat template to render a role prompt")
  messages = [{"role": "user", "content": user}]
  if system:
    messages.insert(0, {"role": "system", "content": system})
  try:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=False)
  except Exception as e:  # jinja raises TemplateError from the template's own raise_exception
    about_roles = "system" in str(e).lower() or "alternate" in str(e).lower()
    if not system or not about_roles:
      raise
    merged = [{"role": "user", "content": f"{system}\n\n{user}"}]
    return tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=False, enable_thinking=False)


@dataclasses.dataclass(frozen=True)
class SegmentedPrompt:
  """A rendered prompt cut at its slots: `segments[i]` token ids come before `slots[i]`; the last has no slot."""

  segments: tuple[tuple[int, ...], ...]
  slots: tuple[str, ...]

  def length(self, latent_steps: int) -> int:
    """Slots this prompt fills when every slot receives `latent_steps` vectors."""
    return sum(len(s) for s in self.segments) + latent_steps * len(self.slots)


def segment(tokenizer, text: str) -> SegmentedPrompt:
  """Splits rendered text at slot markers and tokenises each piece on its own (no special tokens added)."""
  pieces = SLOT.split(text)  # text, name, text, name, ..., text
  names = tuple(pieces[1::2])
  if len(set(names)) != len(names):
    raise ValueError(f"a prompt uses a slot twice: {names}")
  segments = tuple(tuple(tokenizer(p, add_special_tokens=False)["input_ids"]) if p else () for p in pieces[0::2])
  return SegmentedPrompt(segments=segments, slots=names)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class PromptLayout:
  """Where each slot of a left-padded batch gets its input vector.

  Attributes:
    ids: `[B, T]` token ids (0 where the slot is padding or a latent).
    source: `[B, T]` -1 for a token, else the index (into the slot names) of the latent slot it reads.
    step: `[B, T]` which of the m latent vectors of that slot.
    mask: `[B, T]` True for real (token or latent) slots.
  """

  ids: jax.Array
  source: jax.Array
  step: jax.Array
  mask: jax.Array


def layout(prompts: Sequence[SegmentedPrompt], slot_names: Sequence[str], latent_steps: int,
           length: int | None = None) -> PromptLayout:  # fmt: skip
  """Lays out a batch of segmented prompts, left-padded to `length` (default: the bucket of the longest).

  A prompt may use any of the slots `slot_names`, in any order; each slot receives `latent_steps` vectors.
  """
  index = {name: i for i, name in enumerate(slot_names)}
  longest = max(p.length(latent_steps) for p in prompts)
  t = bucket(longest) if length is None else length
  if longest > t:
    raise ValueError(f"a prompt needs {longest} slots, more than the layout length {t}")
  ids = np.zeros((len(prompts), t), np.int32)
  source = np.full((len(prompts), t), -1, np.int32)
  step = np.zeros((len(prompts), t), np.int32)
  mask = np.zeros((len(prompts), t), bool)
  for b, prompt in enumerate(prompts):
    unknown = set(prompt.slots) - set(index)
    if unknown:
      raise ValueError(f"prompt {b} has slots {sorted(unknown)} that are not among {tuple(slot_names)}")
    pos = t - prompt.length(latent_steps)
    mask[b, pos:] = True
    for i, seg in enumerate(prompt.segments):
      ids[b, pos : pos + len(seg)] = seg
      pos += len(seg)
      if i < len(prompt.slots):
        source[b, pos : pos + latent_steps] = index[prompt.slots[i]]
        step[b, pos : pos + latent_steps] = np.arange(latent_steps)
        pos += latent_steps
  return PromptLayout(jnp.asarray(ids), jnp.asarray(source), jnp.asarray(step), jnp.asarray(mask))


def assemble_embeddings(token_embeds: jax.Array, prompt: PromptLayout, latents: jax.Array | None) -> jax.Array:
  """Input vectors `[B, T, D]`: token embeddings with the received latents in their slots.

  Args:
    token_embeds: `[B, T, D]` the receiver's embeddings of `prompt.ids` (its `embed`, scaled where it scales).
    prompt: the layout.
    latents: `[S, B, m, D]` the vectors for each of the S slots (outer-linked into the receiver's space), or None
      for a prompt without slots.
  """
  if latents is None:
    return token_embeds
  b = jnp.arange(token_embeds.shape[0])[:, None]
  picked = latents[jnp.maximum(prompt.source, 0), b, prompt.step]  # [B, T, D]
  return jnp.where((prompt.source >= 0)[..., None], picked.astype(token_embeds.dtype), token_embeds)
