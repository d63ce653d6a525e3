"""Prompts with latent slots: rendered with the receiving agent's own chat template, split at the slot markers,
tokenised per segment, and laid out (left-padded, bucketed) so received latent vectors drop into their slots.

A slot marker is `<<slot:NAME>>` in the prompt text. Rendering happens on the host; the layout is a few integer
arrays, and `assemble_embeddings` builds the input vectors inside jit from them and the latents.

A role's prompt opens the same way in every round it recurs (chat header, system text, role paragraph, often the
question), and its backbone is frozen, so the keys and values of that opening are the same every round. A layout
can set those shared tokens apart in a leading *prefix block* (`role_layouts` decides when that pays): the round
loop prefills the block once per question and starts every round from a copy of its cache. Each block is
left-padded on its own, so an example's shared tokens end at the same slot in every round even where the rest of
its prompt changes length; padding in the middle is exact (never attended, positions count real slots only).
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
    prefix: static; the first `prefix` slots are a prefix block: tokens and padding only, the same in every round
      whose layout declares the same `prefix` (0: none). Stacked rounds share it (it is part of the tree's
      structure, not an array).
  """

  ids: jax.Array
  source: jax.Array
  step: jax.Array
  mask: jax.Array
  prefix: int = dataclasses.field(default=0, metadata=dict(static=True))

  def head(self) -> tuple[jax.Array, jax.Array]:
    """Ids and mask `[..., P]` of the prefix block."""
    return self.ids[..., : self.prefix], self.mask[..., : self.prefix]

  def rest(self) -> PromptLayout:
    """The slots after the prefix block `[..., T - P]`: what a round that starts from the prefix's cache runs."""
    p = self.prefix
    return PromptLayout(self.ids[..., p:], self.source[..., p:], self.step[..., p:], self.mask[..., p:])


def _row(prompt: SegmentedPrompt, index: dict[str, int], latent_steps: int) -> tuple[np.ndarray, ...]:
  """One prompt's slots in order, unpadded: ids, source and step, each `[prompt.length(latent_steps)]`."""
  ids, source, step = [], [], []
  for i, seg in enumerate(prompt.segments):
    ids += seg
    source += [-1] * len(seg)
    step += [0] * len(seg)
    if i < len(prompt.slots):
      ids += [0] * latent_steps
      source += [index[prompt.slots[i]]] * latent_steps
      step += range(latent_steps)
  return np.asarray(ids, np.int32), np.asarray(source, np.int32), np.asarray(step, np.int32)


def layout(prompts: Sequence[SegmentedPrompt], slot_names: Sequence[str], latent_steps: int, length: int | None = None,
           *, prefix: int = 0, shared: Sequence[int] | None = None) -> PromptLayout:  # fmt: skip
  """Lays out a batch of segmented prompts, left-padded to `length` (default: the bucket of the longest).

  A prompt may use any of the slots `slot_names`, in any order; each slot receives `latent_steps` vectors.

  Args:
    prompts: one per example.
    slot_names: the slot order latents are stacked in.
    latent_steps: vectors per slot.
    length: T, the layout's slots (default: `prefix` + the bucket of the longest remainder).
    prefix: P > 0 lays out a prefix block: example b's first `shared[b]` tokens (all before its first slot)
      left-padded into slots `[0, P)`, the rest of its prompt left-padded into `[P, T)`.
    shared: per example, the tokens of its prefix block (with `prefix`).
  """
  index = {name: i for i, name in enumerate(slot_names)}
  shared = [0] * len(prompts) if not prefix else [int(c) for c in shared]
  for b, (prompt, c) in enumerate(zip(prompts, shared, strict=True)):
    unknown = set(prompt.slots) - set(index)
    if unknown:
      raise ValueError(f"prompt {b} has slots {sorted(unknown)} that are not among {tuple(slot_names)}")
    if not 0 <= c <= min(prefix, len(prompt.segments[0]), prompt.length(latent_steps) - 1):
      raise ValueError(f"prompt {b}: {c} shared tokens do not fit a prefix block of {prefix} before its first slot "
                       "with one slot left after it")  # fmt: skip
  longest = max(p.length(latent_steps) - c for p, c in zip(prompts, shared, strict=True))
  t = (bucket(longest) if not prefix else prefix + bucket(longest)) if length is None else length
  if longest > t - prefix:
    raise ValueError(f"a prompt needs {longest} slots after a prefix block of {prefix}, more than the layout "
                     f"length {t} leaves")  # fmt: skip
  ids = np.zeros((len(prompts), t), np.int32)
  source = np.full((len(prompts), t), -1, np.int32)
  step = np.zeros((len(prompts), t), np.int32)
  mask = np.zeros((len(prompts), t), bool)
  for b, (prompt, c) in enumerate(zip(prompts, shared, strict=True)):
    row = _row(prompt, index, latent_steps)
    n = len(row[0])
    for lo, hi, end in ((0, c, prefix), (c, n, t)):  # the prefix block ends at P, the rest at T
      put = slice(end - (hi - lo), end)
      ids[b, put], source[b, put], step[b, put] = (x[lo:hi] for x in row)
      mask[b, put] = True
  return PromptLayout(jnp.asarray(ids), jnp.asarray(source), jnp.asarray(step), jnp.asarray(mask), prefix)


MIN_PREFIX = 16  # shared tokens below which a separate prefix call costs about what it saves


def common_prefix(prompts: Sequence[SegmentedPrompt]) -> int:
  """Leading tokens all `prompts` (one example's prompts of several rounds) share before their first slot.

  A prompt without slots keeps at least its last token out of it: a round's own call needs an input."""
  first = [p.segments[0] for p in prompts]
  n = 0
  while n < min(map(len, first)) and all(f[n] == first[0][n] for f in first):
    n += 1
  if any(not p.slots and n == len(p.segments[0]) for p in prompts):
    n -= 1
  return max(n, 0)


def role_layouts(rounds: Sequence[Sequence[SegmentedPrompt]], slot_names: Sequence[Sequence[str]],
                 latent_steps: int, *, uses: Sequence[bool], min_length: int = 16,
                 prefix_reuse: bool = True) -> list[PromptLayout]:  # fmt: skip
  """One role's layouts for every round, with a prefix block where reusing it saves work.

  Without a block every round has the length T of the bucket of its longest prompt in any round (at least
  `min_length`) and prefills all T slots. With one, the block's P slots (P: the bucket of the longest shared
  opening) are prefilled once and each round prefills only the rest, laid out in the bucket of its longest
  remainder (the total at least `min_length`); every bucket is a power of two, so batches of other questions share
  one compiled program. The block covers every round, or every round after the first (whose prompt often differs);
  of those and no block at all, the layout that prefills the fewest slots over the rounds that run the backbone
  on it (`uses[r]`) wins.

  Args:
    rounds: `[round][example]` the role's segmented prompts.
    slot_names: the slot order of each round.
    latent_steps: m.
    uses: per round, whether the role's backbone runs on this layout (thinks, or decodes from it).
    min_length: every layout is at least this long.
    prefix_reuse: False lays out no prefix block (every round prefills its whole prompt).
  """

  def plain_length(members) -> int:
    return bucket(max(p.length(latent_steps) for r in members for p in rounds[r]), min_length)

  everything = range(len(rounds))
  t = plain_length(everything)
  best = (sum(uses) * t, None)  # (slots prefilled, plan); without a block every round prefills T
  for first in (0, 1) if prefix_reuse else ():
    members, others = range(first, len(rounds)), range(first)
    if sum(uses[r] for r in members) < 2:  # prefilled once, read once: nothing saved
      continue
    shared = [common_prefix([rounds[r][b] for r in members]) for b in range(len(rounds[0]))]
    if max(shared) < MIN_PREFIX:
      continue
    p = bucket(max(shared))
    rest = max(rounds[r][b].length(latent_steps) - c for r in members for b, c in enumerate(shared))
    length = max(p + bucket(rest), min_length)
    t_others = plain_length(others) if first else 0
    cost = p + sum(uses[r] for r in members) * (length - p) + sum(uses[r] for r in others) * t_others
    if cost < best[0]:
      best = (cost, (members, shared, p, length, t_others))
  if best[1] is None:
    return [layout(ps, names, latent_steps, t) for ps, names in zip(rounds, slot_names, strict=True)]
  members, shared, p, length, t_others = best[1]
  return [
    layout(ps, names, latent_steps, length, prefix=p, shared=shared)
    if r in members
    else layout(ps, names, latent_steps, t_others)
    for r, (ps, names) in enumerate(zip(rounds, slot_names, strict=True))
  ]


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
