"""Where the relay's code is lost: three measurements of `configs/relay.py`, each on its own records.

`python benchmarks/relay_diagnostics.py --out FILE [--workdir RUN] [--set K=V ...]` writes one JSON file with:

* `reader_forced`: the frozen reader, teacher forced on its `gold_reader` text after its prompt ("The code is 4716."),
  top-1 accuracy of each gold token (training records): what a perfect inner link could pass on at best.
* `answerer_oracle`: the frozen answerer with the code's own token embeddings in its note slot (as the identity outer
  link would pass them: LayerNorm then the receiver's token norm) or the code as text; how often its first 16 tokens
  are the bare code (strict, `score_exact`) or contain it (`lenient_score_exact`; held-out records).
* `latents` (with `--workdir`, a trained run): the nearest token (cosine) of each latent step of the reader's `R_in`
  outputs and of the outer link's outputs, and how often the k-th digit sits at step 4 + k (after "The code is");
  then the system's strict and containing answers (held-out records).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "configs")]

from rmas_jax.config_lib import apply_overrides, load_config  # noqa: E402
from rmas_jax.evaluation.scoring import lenient_score_exact, score_exact  # noqa: E402
from rmas_jax.generation.sampler import bucket, generate, generate_from_embeddings, left_pad  # noqa: E402
from rmas_jax.prompts.slots import render_chat  # noqa: E402
from rmas_jax.weights.pretrained import load_pretrained  # noqa: E402
from rmas_jax.weights.tokenizer import stop_token_ids  # noqa: E402


def _records(path: str, n: int) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f][:n]


def reader_forced(config, pre, records) -> list[float]:
  """Top-1 accuracy of the frozen reader on each token of its gold text, teacher forced."""
  tok, model, p = pre.tokenizer, pre.model, config.prompts["reader"]
  rows, lengths = [], []
  for r in records:
    prompt = tok(render_chat(tok, p["system"], p["first"].replace("{context}", r["context"])),
                 add_special_tokens=False)["input_ids"]  # fmt: skip
    gold = tok(r["gold_reader"], add_special_tokens=False)["input_ids"]
    rows.append(prompt + gold)
    lengths.append(len(gold))
  ids, mask = left_pad(rows, bucket(max(len(x) for x in rows)))
  pred = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits).argmax(-1)  # [B, T]
  hits, counts = np.zeros(max(lengths)), np.zeros(max(lengths))
  for i, n in enumerate(lengths):
    hits[:n] += ids[i, -n:] == pred[i, -n - 1 : -1]
    counts[:n] += 1
  return [round(float(h / c), 3) for h, c in zip(hits, counts, strict=True)]


def _scored(texts: list[str], records) -> dict:
  # the relay's own scorers: strict as eval.py scores it, "contains" as its lenient (official) rule
  pairs = list(zip(texts, records, strict=True))
  return dict(strict=sum(score_exact(t, r["answer"]) for t, r in pairs),
              contains=sum(lenient_score_exact(t, r["answer"]) for t, r in pairs), n=len(records),
              examples=texts[:3])  # fmt: skip


def _decoded(tok, outs) -> list[str]:
  return [tok.decode(o, skip_special_tokens=True).strip() for o in outs]


def answerer_oracle(config, pre, records) -> dict:
  """The answerer given the code in its note slot: as text, and as the digits' (scaled) token embeddings."""
  tok, model, p = pre.tokenizer, pre.model, config.prompts["answerer"]
  stops = stop_token_ids(tok, chat=True)
  user = [p["first"].replace("{question}", r["question"]) for r in records]
  ids_of = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
  text_ids = [ids_of(render_chat(tok, p["system"], u.replace("{note}", r["answer"])))
              for u, r in zip(user, records, strict=True)]  # fmt: skip
  out = dict(text=_scored(_decoded(tok, generate(model, text_ids, max_new_tokens=16, stop_ids=stops)), records))
  table = model.input_embedding_matrix()
  norm = float(jnp.mean(jnp.linalg.norm(table, axis=-1)))

  def scaled(x):  # what an identity outer link passes on: LayerNorm(x) at the receiver's token norm
    x = (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)
    return x * norm / np.sqrt(x.shape[-1])

  rows = []
  for u, r in zip(user, records, strict=True):
    before, after = render_chat(tok, p["system"], u.replace("{note}", "\x00")).split("\x00")
    embed = lambda text: model.embed(jnp.asarray(ids_of(text)))  # noqa: E731
    rows.append(jnp.concatenate([embed(before), scaled(embed(r["answer"])), embed(after)]))
  t = bucket(max(x.shape[0] for x in rows))
  embeds = jnp.stack([jnp.pad(x, ((t - x.shape[0], 0), (0, 0))) for x in rows])
  mask = jnp.stack([jnp.arange(t) >= t - x.shape[0] for x in rows])
  outs = generate_from_embeddings(model, embeds, mask, max_new_tokens=16, stop_ids=stops)
  out["digit_embeddings"] = _scored(_decoded(tok, outs), records)
  return out


def latents(config, workdir: str, records) -> dict:
  """Nearest tokens of a trained run's latents, and the digit each step holds."""
  from rmas_jax.patterns.ask import ask
  from rmas_jax.patterns.from_config import load_system
  from rmas_jax.training.trainer import restore_links

  loaded = load_system(config, progress=False)
  step = restore_links(config, loaded.system, workdir)
  steps = config.inference.latent_steps
  res = ask(loaded.system, loaded.tokenizers, records, rounds=1, steps=steps, max_new_tokens=12, task=config.task,
            prompts=loaded.prompts, trace=True)  # fmt: skip
  (turn,) = res.trace
  tok = loaded.tokenizers["answerer"]
  table = np.asarray(loaded.system.agents["answerer"].backbone.input_embedding_matrix())
  table = table / np.linalg.norm(table, axis=-1, keepdims=True)
  out = dict(step=step)
  for name, x in (("reader_r_in", turn.thoughts), ("outer_link", next(iter(turn.sent.values())))):
    x = np.asarray(x)
    near = np.argmax((x / np.linalg.norm(x, axis=-1, keepdims=True)) @ table.T, -1)  # [B, m]
    words = [[tok.decode([int(t)]) for t in row] for row in near]
    out[name] = dict(
      digit_k_at_step_4_plus_k=[round(float(np.mean([w[4 + k].strip() == r["answer"][k]
                                                     for w, r in zip(words, records, strict=True)])), 3)
                                for k in range(min(4, steps - 4))],
      example=words[0])  # fmt: skip
  out["answers"] = _scored([a.text for a in res.answers], records)
  return out


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", required=True, help="result JSON (never overwritten)")
  p.add_argument("--workdir", help="a trained relay run: adds the latents' measurement")
  p.add_argument("--records", type=int, default=60)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
  args = p.parse_args()
  if os.path.exists(args.out):
    print(f"error: --out {args.out}: the file exists; choose a new name", file=sys.stderr)
    return 2
  config = load_config(os.path.join(ROOT, "configs", "relay.py"))
  apply_overrides(config, args.set)
  train, held = _records(config.train.data_path, args.records), _records(config.eval.path, args.records)
  pre = load_pretrained(config.agents[0]["model"])
  result = dict(overrides=args.set, reader_forced=reader_forced(config, pre, train),
                answerer_oracle=answerer_oracle(config, pre, held))  # fmt: skip
  if args.workdir:
    result["latents"] = latents(config, args.workdir, held)
  with open(args.out, "x") as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
