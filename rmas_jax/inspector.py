"""Latent-thought inspector: what each latent vector is close to in an agent's vocabulary.

For every agent, round and latent step it reads two vectors from a traced run (`ask(..., trace=True)`):

  * `inner(h)`, the agent's thought, in the agent's own input-embedding space;
  * `outer(inner(h))` of each outgoing edge, in the receiver's input-embedding space.

For each it gives the k vocabulary tokens whose input embeddings have the highest cosine with it, the vector's
norm, and that norm against the mean token-embedding norm of the space (a latent far longer or shorter than any
token is off the token manifold however close its direction is). Embedding tables are "as the model sees them"
(Gemma's sqrt(d) scale included), so the norms compare with what a token would feed in.

The search is one jit-compiled call per space: `[N, D] @ [D, V]` divided by the token norms, then
`jax.lax.top_k`. Dividing by the norms is the same as searching a row-normalised table, without a second copy of
a table that can be half a gigabyte.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rmas_jax.generation.sampler import bucket

_TINY = 1e-12


@functools.partial(jax.jit, static_argnames=("k",))
def nearest_tokens(
  vectors: jax.Array, table: jax.Array, valid: int | jax.Array, *, k: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The k tokens of highest cosine with each vector (a table's scale does not change cosines).

  Args:
    vectors: `[N, D]` the vectors to look up.
    table: `[V, D]` a token-embedding table.
    valid: rows `>= valid` are padding past the tokenizer's vocabulary and are never returned.
    k: tokens per vector.

  Returns:
    ids `[N, k]` int32 (best first), their cosines `[N, k]` fp32, and the vectors' norms `[N]`.
  """
  v = vectors.astype(jnp.float32)
  norms = jnp.linalg.norm(v, axis=-1)
  unit = v / jnp.maximum(norms, _TINY)[:, None]
  # HIGHEST: accelerators would otherwise round the fp32 product to bf16/tf32 and reorder close neighbours.
  dots = jnp.einsum("nd,vd->nv", unit, table.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
  cos = dots / jnp.maximum(_row_norms(table, 1.0), _TINY)
  cos = jnp.where(jnp.arange(table.shape[0]) < valid, cos, -jnp.inf)
  top, ids = jax.lax.top_k(cos, k)
  return ids.astype(jnp.int32), top, norms


def _row_norms(table: jax.Array, scale) -> jax.Array:
  return jnp.linalg.norm(table.astype(jnp.float32), axis=-1) * scale


@jax.jit
def mean_token_norm(table: jax.Array, scale: float | jax.Array, valid: int | jax.Array) -> jax.Array:
  """Mean norm of the first `valid` rows of `scale * table`."""
  norms = _row_norms(table, scale)
  keep = jnp.arange(table.shape[0]) < valid
  return jnp.sum(jnp.where(keep, norms, 0.0)) / jnp.maximum(jnp.sum(keep), 1)


class Space:
  """One agent's input-embedding space: its table (by reference, no copy), tokenizer, and mean token norm."""

  def __init__(self, backbone, tokenizer):
    self.table = backbone.embed_tokens.embedding[...]
    self.scale = float(backbone.cfg.hidden_size**0.5) if backbone.cfg.embed_scale else 1.0
    # The table may have padding rows past the tokenizer (sized for hardware); they are no tokens.
    self.valid = min(int(self.table.shape[0]), len(tokenizer))
    self.tokenizer = tokenizer
    self.mean_norm = float(mean_token_norm(self.table, self.scale, self.valid))

  def token_text(self, token_id: int) -> str:
    """A token as text; byte pieces that do not decode alone are shown as the tokenizer stores them."""
    text = self.tokenizer.decode([token_id], skip_special_tokens=False)
    if not text or "\ufffd" in text:
      piece = self.tokenizer.convert_ids_to_tokens(token_id)
      return piece if isinstance(piece, str) else text
    return text

  def lookup(self, vectors: np.ndarray | jax.Array, k: int) -> list[dict]:
    """`{norm, norm_ratio, nearest: [{id, token, cos}]}` for each row of `vectors` `[N, D]`."""
    n = vectors.shape[0]
    # Pad the row count to a power of two: runs with other round/step counts reuse the compiled search.
    padded = jnp.zeros((bucket(n, minimum=8), vectors.shape[1]), jnp.float32).at[:n].set(vectors)
    ids, cos, norms = jax.device_get(nearest_tokens(padded, self.table, self.valid, k=k))
    out = []
    for i in range(n):
      nearest = [
        {"id": int(t), "token": self.token_text(int(t)), "cos": float(c)} for t, c in zip(ids[i], cos[i], strict=True)
      ]
      out.append({"norm": float(norms[i]), "norm_ratio": float(norms[i]) / self.mean_norm, "nearest": nearest})
    return out


class Inspector:
  """Nearest-token look-ups for a loaded system; spaces are built once per agent and reused across questions.

  Args:
    system: the system (`patterns.system.System`).
    tokenizers: each role's tokenizer.
    models: each role's model spec (shown next to its space).
  """

  def __init__(self, system, tokenizers: Mapping[str, object], models: Mapping[str, str] | None = None):
    self.system, self.tokenizers, self.models = system, tokenizers, dict(models or {})
    self._spaces: dict[str, Space] = {}

  def space(self, role: str) -> Space:
    if role not in self._spaces:
      self._spaces[role] = Space(self.system.agents[role].backbone, self.tokenizers[role])
    return self._spaces[role]

  def inspect(self, turns: Sequence, questions: Sequence[str], *, k: int = 5) -> dict:
    """The inspector's JSON for a traced run.

    Args:
      turns: `AskResult.trace` (every thinking turn, in order).
      questions: the batch's questions (rows of the turns' arrays).
      k: nearest tokens per vector.

    Returns:
      `{k, spaces: {role: {model, vocab, width, mean_token_norm}}, questions: [{question, turns: [{round, role,
      steps: [{step, inner: LOOKUP, sent: {edge: {to, ...LOOKUP}}}]}]}]}` where LOOKUP is `{norm, norm_ratio,
      nearest: [{id, token, cos}]}`.
    """
    if k < 1:
      raise ValueError(f"k must be >= 1, got {k}")
    # Every vector goes into its space's pile, so each space is searched in one call; a block remembers where
    # its rows [B * m] (row b * m + step) start in its pile.
    piles: dict[str, list[np.ndarray]] = {}

    def add(space: str, block: jax.Array) -> tuple[str, int]:
      pile = piles.setdefault(space, [])
      start = sum(len(p) for p in pile)
      pile.append(np.asarray(block, np.float32).reshape(-1, block.shape[-1]))
      return space, start

    blocks = [(t, add(t.role, t.thoughts), {e: add(e.split("->")[1], v) for e, v in t.sent.items()}) for t in turns]
    found = {space: self.space(space).lookup(np.concatenate(pile), k) for space, pile in piles.items()}

    out = []
    for b, question in enumerate(questions):
      out_turns = []
      for t, (space, start), sent in blocks:
        m = int(t.thoughts.shape[1])
        row = b * m  # this question's first row in each of the turn's blocks
        steps = [
          {"step": s + 1, "inner": found[space][start + row + s],
           "sent": {e: {"to": dst, **found[dst][first + row + s]} for e, (dst, first) in sent.items()}}
          for s in range(m)
        ]  # fmt: skip
        out_turns.append({"round": t.round, "role": t.role, "steps": steps})
      out.append({"question": question, "turns": out_turns})
    spaces = {}
    for role in piles:
      sp = self.space(role)
      spaces[role] = dict(model=self.models.get(role, ""), vocab=sp.valid, width=int(sp.table.shape[1]),
                          mean_token_norm=sp.mean_norm)  # fmt: skip
    return {"k": k, "spaces": spaces, "questions": out}
