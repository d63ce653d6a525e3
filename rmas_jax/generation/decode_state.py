"""The device side of text generation: one `SamplerState` and the jit-compiled functions that advance it.

`prefill` fills a KV cache with the prompt; `decode_steps` runs a `while_loop` of decode steps until every
example has stopped, a step limit is reached or the cache is full, so the host can look at the text between
calls (stop strings, tool calls) without recompiling; `rewind` forgets an example's last tokens (they stay in
the cache but are never attended again, and its rotary positions step back) or stops it; `append` feeds text
the host inserted (a tool's result) into the examples that have some. A recurrent decode state (Qwen3.5's
`HybridCache`) cannot forget tokens by masking: `replay` recomputes it for rows that drop tokens and go on.

The model's weights are an argument of every compiled function, never closed over, and sampling settings are
traced values, so changing them does not recompile.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from rmas_jax.models.kv_cache import KVCache, extend


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SamplerState:
  """The whole decode loop's state.

  Attributes:
    cache: the KV cache after the prompt and everything fed so far.
    logits: `[B, V]` next-token logits.
    tokens: `[B, N]` generated ids kept so far (stop token included, padding after).
    slot_of: `[B, N]` the cache slot each generated token was written to (for `rewind`).
    length: `[B]` number of generated tokens kept per example.
    done: `[B]` whether an example has emitted a stop token (or been stopped by the host).
    rng: PRNG key.
  """

  cache: KVCache
  logits: jax.Array
  tokens: jax.Array
  slot_of: jax.Array
  length: jax.Array
  done: jax.Array
  rng: jax.Array

  @property
  def budget(self) -> int:
    return self.tokens.shape[1]

  def active(self) -> jax.Array:
    """`[B]` examples that still generate: not stopped and under budget."""
    return ~self.done & (self.length < self.budget)


def choose_tokens(logits, rng, greedy: bool, temperature, top_k, top_p) -> jax.Array:
  """Next ids `[B]` from logits `[B, V]`: argmax, or sampling after temperature, then top-k, then top-p."""
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / jnp.maximum(temperature, 1e-6)
  order = jnp.argsort(-logits, axis=-1)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  rank = jnp.arange(logits.shape[-1])[None, :]
  keep = jnp.where(top_k > 0, rank < top_k, True)
  probs = jax.nn.softmax(jnp.where(keep, sorted_logits, -jnp.inf), axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly better tokens
  keep &= (before < top_p) | (rank == 0)
  choice = jax.random.categorical(rng, jnp.where(keep, sorted_logits, -jnp.inf), axis=-1)
  return jnp.take_along_axis(order, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "cache_length", "budget"))
def prefill(graphdef, state, ids, embeds, mask, rng, cache_length: int, budget: int, prefix=None) -> SamplerState:
  """The prompt (ids or input vectors `[B, T]`, left-padded) into a fresh cache of `cache_length` slots.

  With `prefix`, a cache that already holds the prompt's first `prefix.length` slots (a prefix block prefilled
  once for several uses), only the slots after them are run, into a copy of it."""
  model = nnx.merge(graphdef, state)
  b = mask.shape[0]
  if prefix is None:
    cache = model.init_cache(b, cache_length)
  else:
    p = prefix.length
    cache = extend(prefix, cache_length)
    ids, embeds, mask = (None if x is None else x[:, p:] for x in (ids, embeds, mask))
  out = model(ids, inputs_embeds=embeds, attention_mask=mask, cache=cache, return_logits=False)
  logits = model.logits(out.hidden[:, -1:])[:, 0]  # left padding: the last slot is always real
  return SamplerState(
    cache=out.cache,
    logits=logits,
    tokens=jnp.zeros((b, budget), jnp.int32),
    slot_of=jnp.zeros((b, budget), jnp.int32),
    length=jnp.zeros((b,), jnp.int32),
    done=jnp.zeros((b,), bool),
    rng=rng,
  )


@functools.partial(jax.jit, static_argnames=("graphdef", "greedy"), donate_argnames=("s",))
def decode_steps(graphdef, state, s: SamplerState, stop_ids, max_steps, temperature, top_k, top_p, greedy: bool,
                 min_length=0):  # fmt: skip
  """Up to `max_steps` decode steps; stops early when no example is active or the cache is full.

  An example with fewer than `min_length` generated tokens cannot choose a stop id (its logits are masked, as
  HF's `min_new_tokens` does), so with `min_length` = the budget every example decodes exactly the budget."""
  model = nnx.merge(graphdef, state)
  rows = jnp.arange(s.length.shape[0])
  is_stop = jnp.any(jnp.arange(s.logits.shape[-1])[:, None] == stop_ids[None, :], axis=1)  # [V]

  def cond(carry):
    s, step = carry
    return (step < max_steps) & jnp.any(s.active()) & (s.cache.end < s.cache.length)

  def body(carry):
    s, step = carry
    rng, key = jax.random.split(s.rng)
    active = s.active()
    held = (s.length < min_length)[:, None] & is_stop[None, :]  # [B, V] stop ids an example may not choose yet
    logits = jnp.where(held, -jnp.inf, s.logits)
    token = jnp.where(active, choose_tokens(logits, key, greedy, temperature, top_k, top_p), 0)
    at = jnp.where(active, s.length, s.budget)  # inactive rows write out of range: dropped
    tokens = s.tokens.at[rows, at].set(token, mode="drop")
    slot_of = s.slot_of.at[rows, at].set(s.cache.end, mode="drop")
    # Inactive rows feed a masked slot, so a row the host later rewinds and resumes never attends to it.
    out = model(token[:, None], attention_mask=active[:, None], cache=s.cache)
    logits = jnp.where(active[:, None], out.logits[:, -1], s.logits)
    done = s.done | (active & jnp.isin(token, stop_ids))
    length = s.length + active.astype(jnp.int32)
    return SamplerState(out.cache, logits, tokens, slot_of, length, done, rng), step + 1

  s, _ = jax.lax.while_loop(cond, body, (s, jnp.zeros((), jnp.int32)))
  return s


@functools.partial(jax.jit, donate_argnames=("s",))
def rewind(s: SamplerState, drop, stop) -> SamplerState:
  """Forgets the last `drop[b]` generated tokens of each example `[B]`, which makes it active again, unless the
  host `stop`s it `[B]`."""
  index = jnp.arange(s.budget)[None, :]
  dropped = (index >= (s.length - drop)[:, None]) & (index < s.length[:, None])  # [B, N]
  rows = jnp.arange(s.length.shape[0])[:, None]
  slots = jnp.where(dropped, s.slot_of, s.cache.length)
  valid = s.cache.valid.at[rows, slots].set(False, mode="drop")
  cache = dataclasses.replace(s.cache, valid=valid, next_pos=s.cache.next_pos - drop)
  return dataclasses.replace(s, cache=cache, length=s.length - drop, done=(s.done & (drop == 0)) | stop)


def chunk_start(s: SamplerState) -> dict[str, jax.Array]:
  """Copies of what `replay` needs from the state before a decode chunk (the state itself is donated to it)."""
  c = s.cache
  parts = dict(conv=c.conv, state=c.state, valid=c.valid, next_pos=c.next_pos, end=c.end, logits=s.logits)
  return {name: jnp.copy(x) for name, x in parts.items()}


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("s",))
def replay(graphdef, state, s: SamplerState, start: dict, ids, mask, rows) -> SamplerState:
  """Rebuilds the recurrent part of a `HybridCache` for rows `rows [B]` that drop tokens and go on.

  Masking slots takes dropped tokens out of attention but not out of a DeltaNet state, so the rows' states are
  recomputed from the chunk's `start` (`chunk_start`) by running the tokens they keep from that chunk (`ids [B, L]`,
  `mask` True on them, front-aligned). Their keys/values are already in the cache and are not written again; the
  rows' next-token logits become those after their last kept token. Call it before `rewind` masks the slots.
  """
  model = nnx.merge(graphdef, state)
  begin = dataclasses.replace(s.cache, conv=start["conv"], state=start["state"], valid=start["valid"],
                              next_pos=start["next_pos"], end=start["end"])  # fmt: skip
  out = model(ids, attention_mask=mask, cache=begin, return_logits=False)
  pick = lambda new, old: jnp.where(rows.reshape((1, -1) + (1,) * (old.ndim - 2)), new, old)  # noqa: E731  [L, B, ...]
  cache = dataclasses.replace(s.cache, conv=pick(out.cache.conv, s.cache.conv), state=pick(out.cache.state,
                              s.cache.state))  # fmt: skip
  kept = jnp.sum(mask, axis=1)  # [B]
  last = jnp.take_along_axis(out.hidden, jnp.maximum(kept - 1, 0)[:, None, None], axis=1)  # [B, 1, D]
  logits = jnp.where((kept > 0)[:, None], model.logits(last)[:, 0], start["logits"])
  return dataclasses.replace(s, cache=cache, logits=jnp.where(rows[:, None], logits, s.logits))


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("s",))
def append(graphdef, state, s: SamplerState, ids, mask) -> SamplerState:
  """Feeds host text `ids [B, L]` (left-padded; an all-zero mask row feeds nothing)."""
  model = nnx.merge(graphdef, state)
  out = model(ids, attention_mask=mask, cache=s.cache, return_logits=False)
  fed = jnp.any(mask, axis=1)
  logits = jnp.where(fed[:, None], model.logits(out.hidden[:, -1:])[:, 0], s.logits)
  return dataclasses.replace(s, cache=out.cache, logits=logits)
