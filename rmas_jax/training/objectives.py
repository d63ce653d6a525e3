"""The two training objectives of the paper (§4): the inner loop's cosine alignment (eq. 5) and the outer loop's
cross-entropy of the final answer through every recursion round (eq. 6, `rollout` mode).

Backbones are frozen: their hidden states enter the inner loss as constants, and in the outer loss gradients flow
through them (to reach earlier links) but are taken only with respect to the links.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from rmas_jax.links.recursive_link import RecursiveLink
from rmas_jax.models.transformer import CausalLM
from rmas_jax.patterns.system import GoldResponse, System, prefix_caches, run_rounds, think_round
from rmas_jax.prompts.slots import PromptLayout


def cosine_distance(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
  """`1 - cos(a, b)` over the last axis, in fp32."""
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  dot = jnp.sum(a * b, axis=-1)
  return 1.0 - dot / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + eps)


INNER_OBJECTIVES = ("cosine", "contrastive")
INNER_TEMPERATURE = 0.05  # the contrastive objective's default temperature


def token_contrast(out: jax.Array, table: jax.Array, target: jax.Array, temperature: float) -> jax.Array:
  """Cross-entropy of `target` among every token, scored by cosine: `-log softmax_v(cos(out, E_v) / temperature)`.

  Args:
    out: `[B, T, D]` link outputs.
    table: `[V, D]` the token embeddings as the model reads them.
    target: `[B, T]` the token each output should be.
    temperature: the softmax temperature on cosines (in (0, 1]: lower is sharper).

  Returns:
    `[B, T]` the cross-entropy at each position.
  """
  unit = lambda x: x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-8)  # noqa: E731
  logits = jnp.einsum("btd,vd->btv", unit(out.astype(jnp.float32)), unit(table.astype(jnp.float32))) / temperature
  return optax.softmax_cross_entropy_with_integer_labels(logits, target)


def inner_loss(
  backbone: CausalLM,
  inner: RecursiveLink,
  ids: jax.Array,  # [B, T] prompt + gold response, left-padded
  mask: jax.Array,  # [B, T] 1 for real tokens
  response: jax.Array,  # [B, T] 1 on the gold response's tokens
  objective: str = "cosine",
  temperature: float = INNER_TEMPERATURE,
) -> jax.Array:
  """The inner stage's loss, mean over response positions, backbone frozen.

  `cosine` is eq. 5, `1 - cos(R_in(h_t), Emb(y_{t+1}))`. It is met as well by the mean of similar tokens (all
  ten digits, say) as by the token itself, so a link can settle on "some digit" and pass no digit on.
  `contrastive` (ours) asks for the token among all others: `token_contrast` at `temperature`.
  """
  if objective not in INNER_OBJECTIVES:
    raise ValueError(f"inner objective {objective!r}: expected one of {INNER_OBJECTIVES}")
  hidden = jax.lax.stop_gradient(backbone(ids, attention_mask=mask, return_logits=False).hidden)  # [B, T, D]
  pairs = (mask[:, :-1] & response[:, 1:]).astype(jnp.float32)  # h_t predicts a response token
  out = inner(hidden[:, :-1])  # [B, T-1, D]
  if objective == "cosine":
    target = jax.lax.stop_gradient(backbone.embed(ids[:, 1:]))  # [B, T-1, D] what the model reads as token t+1
    dist = cosine_distance(out, target)  # [B, T-1]
  else:
    table = jax.lax.stop_gradient(backbone.input_embedding_matrix())  # [V, D]
    dist = token_contrast(out, table, ids[:, 1:], temperature)  # [B, T-1]
  return jnp.sum(dist * pairs) / jnp.maximum(jnp.sum(pairs), 1.0)


def answer_cross_entropy(
  decoder: CausalLM,
  prompt_embeds: jax.Array,  # [B, T, D] the decoder's prompt with its latents in place
  prompt_mask: jax.Array,  # [B, T]
  target: jax.Array,  # [B, L] gold answer ids, right-padded
  target_mask: jax.Array,  # [B, L]
) -> jax.Array:
  """Teacher-forced cross-entropy of the gold answer after the decoder's prompt, mean over target tokens."""
  t = prompt_mask.shape[1]
  embeds = jnp.concatenate([prompt_embeds, decoder.embed(target).astype(prompt_embeds.dtype)], axis=1)
  mask = jnp.concatenate([prompt_mask, target_mask], axis=1)
  hidden = decoder(inputs_embeds=embeds, attention_mask=mask, return_logits=False).hidden
  logits = decoder.logits(hidden[:, t - 1 : t - 1 + target.shape[1]]).astype(jnp.float32)  # [B, L, V]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, target)
  weight = target_mask.astype(jnp.float32)
  return jnp.sum(ce * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def rollout_loss(
  system: System,
  first: dict[str, PromptLayout],
  middle: dict[str, PromptLayout] | None,
  last: dict[str, PromptLayout] | None,
  target: jax.Array,
  target_mask: jax.Array,
  *,
  steps: int,
  remat: bool = True,
  gold: Mapping[str, GoldResponse] | None = None,
) -> jax.Array:
  """Eq. 6 as printed: real latent rollouts through all rounds, then the final answer's cross-entropy; the gradient
  reaches every round's links through the frozen agents (steps recomputed in the backward pass with `remat`).

  With `gold` (the official training, `train.mode=teacher_forced`), each thinking agent reads its gold response
  after its prompt and passes on its hidden states over that response instead of a latent rollout; the loss is the
  same final-round cross-entropy (the release's default `supervise_final_only`)."""
  decoder_input = run_rounds(system, first, middle, last, steps=steps, remat=remat, gold=gold)
  decoder = system.agents[system.pattern.decoder].backbone
  return answer_cross_entropy(decoder, decoder_input.embeds, decoder_input.mask, target, target_mask)


def rounds_of(first, middle, last) -> int:
  """R, the number of rounds a batch's layouts describe."""
  if last is None:
    return 1
  return 2 + (0 if middle is None else jax.tree.leaves(middle)[0].shape[0])


def rollout_loss_by_round(
  systems: list[System],
  first: dict[str, PromptLayout],
  middle: dict[str, PromptLayout] | None,
  last: dict[str, PromptLayout] | None,
  target: jax.Array,
  target_mask: jax.Array,
  *,
  steps: int,
  remat: bool = True,
  gold: Mapping[str, GoldResponse] | None = None,
) -> jax.Array:
  """`rollout_loss` with round r run by `systems[r]`: the same backbones with their own copy of the links. Given R
  copies of the same links it is the same loss; its gradient with respect to copy r is the part of the links'
  gradient that flows through round r, the credit that round receives (summed over r, the whole gradient). The
  rounds are unrolled rather than scanned, one program per round."""
  r_total = rounds_of(first, middle, last)
  if len(systems) != r_total:
    raise ValueError(f"rollout_loss_by_round: {len(systems)} systems for {r_total} rounds")
  final_layouts = first if last is None else last
  prefixes = prefix_caches(systems[0], final_layouts)  # backbones are shared and frozen: one prefill serves all
  kw = dict(steps=steps, remat=remat, gold=gold, prefixes=prefixes)
  layouts = [first] + [jax.tree.map(lambda x, k=k: x[k], middle) for k in range(r_total - 2)] + (
    [last] if last is not None else [])  # fmt: skip
  feedback = None
  for r, lay in enumerate(layouts):
    final = r == r_total - 1
    feedback, decoder_input = think_round(systems[r], lay, feedback, final=final, **kw)
  decoder = systems[-1].agents[systems[-1].pattern.decoder].backbone
  return answer_cross_entropy(decoder, decoder_input.embeds, decoder_input.mask, target, target_mask)
