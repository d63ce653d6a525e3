"""Text generation: bucketed, left-padded prefill into a KV cache, then jit-compiled decode steps with greedy or
temperature/top-k/top-p sampling, stopping per example at a stop token.

`generate` and `generate_from_embeddings` run the whole budget in one compiled loop. `generate_text` also watches
the text: it decodes in chunks and, between chunks, cuts an example at a stop string or lets a watcher cut it and
insert text (a tool's result) that the model reads before it goes on. The device side lives in `decode_state`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rmas_jax.generation.decode_state import append, chunk_start, decode_steps, prefill, replay, rewind
from rmas_jax.models.transformer import CausalLM

MIN_BUCKET = 16


def bucket(n: int, minimum: int = MIN_BUCKET) -> int:
  """The smallest power of two >= max(n, minimum): prompt lengths share a few compiled shapes."""
  return max(minimum, 1 << max(0, n - 1).bit_length())


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How the next token is chosen. `greedy` ignores the rest; top_k=0 and top_p=1 disable those filters.

  `ignore_eos`: stop ids are never chosen, so every example decodes exactly `max_new_tokens` tokens (HF's
  `min_new_tokens = max_new_tokens`): equal work for speed comparisons. Stop strings and tools still apply."""

  greedy: bool = True
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0
  ignore_eos: bool = False


def left_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads id lists to `length`: ids `[B, length]` int32 and mask `[B, length]` bool."""
  ids = np.full((len(prompts), length), pad_id, np.int32)
  mask = np.zeros((len(prompts), length), bool)
  for i, p in enumerate(prompts):
    if len(p) > length:
      raise ValueError(f"prompt {i} has {len(p)} tokens, more than {length}")
    if len(p):
      ids[i, length - len(p) :] = p
      mask[i, length - len(p) :] = True
  return ids, mask


def generate(
  model: CausalLM,
  prompts: Sequence[Sequence[int]],
  *,
  max_new_tokens: int,
  stop_ids: Sequence[int] = (),
  sampling: SamplingConfig = SamplingConfig(),
) -> list[list[int]]:
  """Generates continuations of a batch of tokenized prompts.

  Args:
    model: the decoder.
    prompts: token id lists; they may differ in length (left-padded, padding never attended).
    max_new_tokens: at most this many new tokens per prompt.
    stop_ids: ids that end an example (kept as its last token).
    sampling: greedy or sampling settings.

  Returns:
    The new token ids of each prompt.
  """
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token")
  ids, mask = left_pad(prompts, bucket(max(len(p) for p in prompts)))
  return _generate(model, jnp.asarray(ids), None, jnp.asarray(mask), max_new_tokens, stop_ids, sampling)


def generate_from_embeddings(
  model: CausalLM,
  inputs_embeds: jax.Array,  # [B, T, D]
  attention_mask: jax.Array,  # [B, T] left padding
  *,
  max_new_tokens: int,
  stop_ids: Sequence[int] = (),
  sampling: SamplingConfig = SamplingConfig(),
) -> list[list[int]]:
  """Like `generate`, from input vectors (a prompt with latents in its slots); the last slot must be real."""
  return _generate(model, None, inputs_embeds, attention_mask, max_new_tokens, stop_ids, sampling)


@dataclasses.dataclass(frozen=True)
class Interrupt:
  """What the host does to one example between decode chunks.

  Attributes:
    cut: keep the example's text up to this character index (generated tokens past it are forgotten).
    insert: text the model reads next (e.g. a tool's result), not counted as generated.
    stop: the example ends after the insertion.
  """

  cut: int
  insert: str = ""
  stop: bool = False


# (example index, its text so far, where its newest generated text starts) -> an interrupt or None
Watcher = Callable[[int, str, int], "Interrupt | None"]
# (example index, its text so far) after each chunk: streams the text as it is decoded
TextCallback = Callable[[int, str], None]


@dataclasses.dataclass
class TextResult:
  """One example's generation.

  Attributes:
    text: generated text with insertions, cut at a stop string (which is left out); special tokens skipped.
    ids: the generated ids kept (stop token included; inserted text excluded).
    inserted_tokens: tokens of inserted text the model read.
    interrupts: how many times the watcher cut in.
    finish: why it ended: `stop_id`, `stop_string`, `watcher` (an interrupt with stop), `length` (the budget) or
      `cache_full` (insertions used up the room the caller gave them).
  """

  text: str
  ids: list[int]
  inserted_tokens: int = 0
  interrupts: int = 0
  finish: str = ""


def _step_args(stop_ids: Sequence[int], sampling: SamplingConfig, budget: int):
  return dict(
    stop_ids=jnp.asarray(np.array(list(stop_ids) or [-1], np.int32)),
    temperature=jnp.float32(sampling.temperature),
    top_k=jnp.int32(sampling.top_k),
    top_p=jnp.float32(sampling.top_p),
    greedy=sampling.greedy,
    min_length=jnp.int32(budget if sampling.ignore_eos else 0),  # traced: switching it does not recompile
  )


def _start(model, ids, embeds, mask, budget: int, room: int, sampling: SamplingConfig, prefix=None):
  if budget < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {budget}")
  graphdef, state = nnx.split(model)
  cache_length = mask.shape[1] + bucket(budget + room)
  s = prefill(graphdef, state, ids, embeds, mask, jax.random.key(sampling.seed), cache_length=cache_length,
              budget=budget, prefix=prefix)  # fmt: skip
  return graphdef, state, s


def _generate(model, ids, embeds, mask, max_new_tokens, stop_ids, sampling) -> list[list[int]]:
  graphdef, state, s = _start(model, ids, embeds, mask, max_new_tokens, 0, sampling)
  s = decode_steps(graphdef, state, s, max_steps=jnp.int32(max_new_tokens),
                   **_step_args(stop_ids, sampling, max_new_tokens))  # fmt: skip
  tokens, length = np.asarray(s.tokens), np.asarray(s.length)
  return [tokens[i, : length[i]].tolist() for i in range(mask.shape[0])]


def _tokens_reaching(tokenizer, ids: list[int], chars: int) -> int:
  """The fewest leading `ids` whose text is at least `chars` characters long."""
  lo, hi = 0, len(ids)
  while lo < hi:
    mid = (lo + hi) // 2
    if len(tokenizer.decode(ids[:mid], skip_special_tokens=True)) >= chars:
      hi = mid
    else:
      lo = mid + 1
  return lo


def _first_stop(text: str, start: int, stop_strings: Sequence[str]) -> Interrupt | None:
  hits = [i for i in (text.find(s, start) for s in stop_strings) if i >= 0]
  return Interrupt(cut=min(hits), stop=True) if hits else None


def _finish_reason(done: bool, length: int, budget: int) -> str:
  return "stop_id" if done else "length" if length >= budget else "cache_full"


def _replay_kept(graphdef, state, s, before, tokens: np.ndarray, seg_start: np.ndarray, rows: np.ndarray, chunk: int):
  """Recomputes the recurrent state of `rows` from the chunk's start and the tokens of the chunk they keep."""
  start, start_length = before
  kept = seg_start - start_length  # [B] tokens of the last chunk each row keeps
  if np.any(kept[rows] < 0):
    raise NotImplementedError(
      "a watcher cut text written before the latest decode chunk and let the example go on; a recurrent decode "
      "state (Qwen3.5's DeltaNet layers) can only be taken back within the chunk it last decoded"
    )
  ids, mask = np.zeros((len(rows), chunk), np.int32), np.zeros((len(rows), chunk), bool)
  for i in np.flatnonzero(rows):
    ids[i, : kept[i]] = tokens[i, start_length[i] : start_length[i] + kept[i]]
    mask[i, : kept[i]] = True
  return replay(graphdef, state, s, start, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(rows))


def generate_text(
  model: CausalLM,
  tokenizer,
  *,
  input_ids: jax.Array | None = None,  # [B, T]
  inputs_embeds: jax.Array | None = None,  # [B, T, D]
  attention_mask: jax.Array,  # [B, T] left padding
  max_new_tokens: int,
  stop_ids: Sequence[int] = (),
  stop_strings: Sequence[str] = (),
  watcher: Watcher | None = None,
  sampling: SamplingConfig = SamplingConfig(),
  chunk: int = 16,
  max_insert_tokens: int = 256,
  insert_room: int = 0,
  on_text: TextCallback | None = None,
  prefix_cache=None,
) -> list[TextResult]:
  """Generates text while watching it between chunks of `chunk` decode steps.

  Args:
    model: the decoder.
    tokenizer: its tokenizer (decodes the text; encodes insertions).
    input_ids: the prompt as ids, or
    inputs_embeds: the prompt as input vectors (exactly one of the two).
    attention_mask: 1 for real prompt slots; the last slot must be real.
    max_new_tokens: generated tokens per example, insertions excluded; shared across a tool loop's continuations.
    stop_ids: ids that end an example.
    stop_strings: text that ends an example; the text is cut before it.
    watcher: called for each unfinished example after each chunk; may cut its text and insert some.
    sampling: greedy or sampling settings.
    chunk: decode steps between looks at the text.
    max_insert_tokens: an insertion is cut to this many tokens.
    insert_room: extra cache slots for insertions and forgotten tokens (a watcher's cuts waste up to `chunk`).
    on_text: called after each chunk with each example that was still writing and its text so far.
    prefix_cache: a cache (`KVCache` or `HybridCache`) already holding the prompt's first `prefix_cache.length`
      slots, e.g. `DecoderInput.prefix`; only the slots after them are prefilled.

  Returns:
    One `TextResult` per example.
  """
  if chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}")
  graphdef, state, s = _start(model, input_ids, inputs_embeds, attention_mask, max_new_tokens, insert_room, sampling,
                              prefix_cache)  # fmt: skip
  step_args = _step_args(stop_ids, sampling, max_new_tokens)
  b = attention_mask.shape[0]
  results = [TextResult("", []) for _ in range(b)]
  seg_start = np.zeros(b, np.int64)  # where each example's open segment starts in `s.tokens`
  finished = np.zeros(b, bool)
  # A recurrent decode state (Qwen3.5) cannot forget tokens by masking their slots: with a watcher, keep the state
  # from before each chunk so a row that is cut and goes on can be recomputed (`replay`).
  recurrent = watcher is not None and not getattr(s.cache, "rewindable", True)
  while not finished.all():
    before = (chunk_start(s), np.asarray(s.length)) if recurrent else None
    s = decode_steps(graphdef, state, s, max_steps=jnp.int32(chunk), **step_args)
    tokens, length, done = np.asarray(s.tokens), np.asarray(s.length), np.asarray(s.done)
    full = int(s.cache.end) >= s.cache.length
    drop, stop = np.zeros(b, np.int32), np.zeros(b, bool)
    inserts: dict[int, list[int]] = {}
    shown: dict[int, str] = {}  # what `on_text` gets: the text so far, open segment included
    for i in np.flatnonzero(~finished):
      r = results[i]
      seg = tokens[i, seg_start[i] : length[i]].tolist()
      cursor = len(r.text)
      text = r.text + tokenizer.decode(seg, skip_special_tokens=True)
      shown[int(i)] = text
      cut = _first_stop(text, cursor, stop_strings)
      reason = "stop_string"
      seen = watcher(int(i), text, cursor) if watcher is not None else None
      if seen is not None and (cut is None or seen.cut < cut.cut):
        cut, reason = seen, "watcher"
        r.interrupts += 1
      if cut is None:
        if done[i] or length[i] >= max_new_tokens or full:
          r.text, r.ids, finished[i] = text, r.ids + seg, True
          r.finish = _finish_reason(done[i], length[i], max_new_tokens)
        continue
      keep = _tokens_reaching(tokenizer, seg, cut.cut - cursor)
      drop[i] = len(seg) - keep
      r.ids += seg[:keep]
      r.text = shown[int(i)] = text[: cut.cut] + cut.insert
      seg_start[i] = length[i] - drop[i]
      if cut.insert:
        inserts[int(i)] = tokenizer(cut.insert, add_special_tokens=False)["input_ids"][:max_insert_tokens]
      stop[i] = cut.stop or full or seg_start[i] >= max_new_tokens
      finished[i] = stop[i]
      if stop[i]:
        r.finish = reason if cut.stop else _finish_reason(False, seg_start[i], max_new_tokens)
    if on_text is not None:
      for i, text in shown.items():
        on_text(i, text)
    if before is not None and np.any((drop > 0) & ~stop):
      s = _replay_kept(graphdef, state, s, before, tokens, seg_start, (drop > 0) & ~stop, chunk)
    if drop.any() or stop.any():
      s = rewind(s, jnp.asarray(drop), jnp.asarray(stop))
    if inserts:
      room = s.cache.length - int(s.cache.end)
      if room <= 0:  # the cache is full: nothing more can be read
        for i in np.flatnonzero(~finished):
          results[i].finish, finished[i] = "cache_full", True
        break
      width = min(bucket(max(len(v) for v in inserts.values()), minimum=8), room)
      ids, mask = left_pad([inserts.get(i, [])[:width] for i in range(b)], width)
      for i, v in inserts.items():
        results[i].inserted_tokens += min(len(v), width)
      s = append(graphdef, state, s, jnp.asarray(ids), jnp.asarray(mask))
  return results
