"""Text generation: bucketed, left-padded prefill into a KV cache, then a jit-compiled `while_loop` of decode
steps with greedy or temperature/top-k/top-p sampling, stopping per example at a stop token.

Everything per call lives in one `SamplerState`; the model's weights are an argument of the compiled functions,
never closed over, and sampling settings are traced values, so changing them does not recompile.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rmas_jax.models.kv_cache import KVCache
from rmas_jax.models.transformer import CausalLM

MIN_BUCKET = 16


def bucket(n: int, minimum: int = MIN_BUCKET) -> int:
  """The smallest power of two >= max(n, minimum): prompt lengths share a few compiled shapes."""
  return max(minimum, 1 << max(0, n - 1).bit_length())


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How the next token is chosen. `greedy` ignores the rest; top_k=0 and top_p=1 disable those filters."""

  greedy: bool = True
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SamplerState:
  """The whole decode loop's state.

  Attributes:
    cache: the KV cache after the prompt and the tokens so far.
    logits: `[B, V]` next-token logits.
    tokens: `[B, N]` generated ids (stop token included, padding after).
    length: `[B]` number of generated tokens per example.
    done: `[B]` whether an example has emitted a stop token.
    step: scalar step counter.
    rng: PRNG key.
  """

  cache: KVCache
  logits: jax.Array
  tokens: jax.Array
  length: jax.Array
  done: jax.Array
  step: jax.Array
  rng: jax.Array


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


@functools.partial(jax.jit, static_argnames=("graphdef", "cache_length"))
def _prefill(graphdef, state, ids, embeds, mask, cache_length: int):
  model = nnx.merge(graphdef, state)
  cache = KVCache.init(model.cfg, mask.shape[0], cache_length, model.dtype)
  out = model(ids, inputs_embeds=embeds, attention_mask=mask, cache=cache, return_logits=False)
  return out.cache, model.logits(out.hidden[:, -1:])[:, 0]  # left padding: the last slot is always real


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "greedy"))
def _decode(
  graphdef, state, cache, logits, stop_ids, rng, temperature, top_k, top_p, max_new_tokens: int, greedy: bool
):
  model = nnx.merge(graphdef, state)
  b = logits.shape[0]
  init = SamplerState(
    cache=cache,
    logits=logits,
    tokens=jnp.zeros((b, max_new_tokens), jnp.int32),
    length=jnp.zeros((b,), jnp.int32),
    done=jnp.zeros((b,), bool),
    step=jnp.zeros((), jnp.int32),
    rng=rng,
  )

  def cond(s: SamplerState):
    return (s.step < max_new_tokens) & ~jnp.all(s.done)

  def body(s: SamplerState):
    rng, key = jax.random.split(s.rng)
    token = choose_tokens(s.logits, key, greedy, temperature, top_k, top_p)
    token = jnp.where(s.done, 0, token)
    tokens = s.tokens.at[:, s.step].set(token)
    length = s.length + (~s.done).astype(jnp.int32)
    done = s.done | jnp.isin(token, stop_ids)
    out = model(token[:, None], cache=s.cache)
    return SamplerState(out.cache, out.logits[:, -1], tokens, length, done, s.step + 1, rng)

  final = jax.lax.while_loop(cond, body, init)
  return final.tokens, final.length


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


def _generate(model, ids, embeds, mask, max_new_tokens, stop_ids, sampling) -> list[list[int]]:
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  graphdef, state = nnx.split(model)
  t = mask.shape[1]
  cache, logits = _prefill(graphdef, state, ids, embeds, mask, t + bucket(max_new_tokens))
  tokens, length = _decode(
    graphdef,
    state,
    cache,
    logits,
    jnp.asarray(np.array(list(stop_ids) or [-1], np.int32)),
    jax.random.key(sampling.seed),
    jnp.float32(sampling.temperature),
    jnp.int32(sampling.top_k),
    jnp.float32(sampling.top_p),
    max_new_tokens=max_new_tokens,
    greedy=sampling.greedy,
  )
  tokens, length = np.asarray(tokens), np.asarray(length)
  return [tokens[i, : length[i]].tolist() for i in range(mask.shape[0])]
