"""Figure 7, measured: `python -m rmas_jax.analysis.representations --config configs/sequential.py --workdir RUN`.

The system answers the same held-out questions with r = 1, 2, 3 recursion rounds (each a resumable evaluation
under `--scratch/r<r>/`). Every final answer and every gold answer (the dataset's worked solution and its final
line, as training targets it) is embedded by the decoder agent itself: the mean of its final-layer hidden states
over the text, L2-normalised. One PCA, fitted on all of them together, projects answers of each round and the gold
answers onto the same two axes; the JSON also gives, per round, the mean cosine between each answer and its own
gold answer and the distance between the answer and gold centroids (in the full space, not just the plot's two
axes). Writes `DIR/representations[-<name>].json` and a PNG.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from rmas_jax.analysis import outputs
from rmas_jax.analysis.evals import evaluate_variant, summary_row


def text_embeddings(backbone, tokenizer, texts: Sequence[str], *, max_tokens: int = 256, batch: int = 8) -> np.ndarray:
  """`[len(texts), D]`: the mean final-norm hidden state of each text (its first `max_tokens` tokens, no chat
  template, no special tokens), L2-normalised."""
  from rmas_jax.generation.sampler import bucket, left_pad

  graphdef, state = nnx.split(backbone)
  run = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, attention_mask=m, return_logits=False).hidden)
  out = []
  for i in range(0, len(texts), batch):
    ids = [tokenizer(t or " ", add_special_tokens=False)["input_ids"][:max_tokens] for t in texts[i : i + batch]]
    padded, mask = left_pad(ids, bucket(max(map(len, ids))))
    hidden = np.asarray(run(state, padded, mask), np.float64)  # [b, T, D]
    w = np.asarray(mask, np.float64)[..., None]
    out.append((hidden * w).sum(1) / w.sum(1))
  emb = np.concatenate(out, axis=0)
  return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def pca(x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
  """`(projections [n, k], explained variance ratio [k])` of the rows of `x` (centred SVD)."""
  centred = x - x.mean(0)
  _, s, vt = np.linalg.svd(centred, full_matrices=False)
  return centred @ vt[:k].T, (s[:k] ** 2) / np.sum(s**2)


def alignment(answers: np.ndarray, gold: np.ndarray) -> dict:
  """How close one round's answers are to the gold answers (rows aligned by question, unit vectors)."""
  cos = np.sum(answers * gold, axis=1)
  return dict(mean_cosine_to_own_gold=float(cos.mean()), centroid_distance=float(np.linalg.norm(answers.mean(0)
              - gold.mean(0))), per_question_cosine=cos.tolist())  # fmt: skip


def plot(result: dict, path: str) -> str:
  plt = outputs.pyplot()
  rounds = result["rounds"]
  proj = {k: np.asarray(v) for k, v in result["pca"]["points"].items()}
  fig, axes = plt.subplots(1, len(rounds) + 1, figsize=(3.6 * (len(rounds) + 1), 3.5))
  lo, hi = np.min(np.concatenate(list(proj.values())), 0), np.max(np.concatenate(list(proj.values())), 0)
  pad = 0.08 * (hi - lo)
  gold = proj["gold"]
  for ax, r in zip(axes, rounds, strict=False):
    pts = proj[f"r{r}"]
    for a, g in zip(pts, gold, strict=True):
      ax.plot([a[0], g[0]], [a[1], g[1]], color="0.8", lw=0.6, zorder=0)
    ax.scatter(gold[:, 0], gold[:, 1], marker="x", color="k", s=22, label="gold answers")
    correct = np.asarray(result["per_round"][str(r)]["correct"], bool)
    ax.scatter(pts[~correct, 0], pts[~correct, 1], color="tab:red", s=16, label="answer (wrong)")
    ax.scatter(pts[correct, 0], pts[correct, 1], color="tab:green", s=16, label="answer (correct)")
    cg, ca = gold.mean(0), pts.mean(0)
    ax.scatter(*cg, marker="*", color="k", s=90)
    ax.scatter(*ca, marker="*", color="tab:blue", s=90)
    m = result["per_round"][str(r)]
    ax.set_title(f"r={r}: cos to gold {m['mean_cosine_to_own_gold']:.3f}, acc {m['accuracy']:.2f}", fontsize=9)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ev = result["pca"]["explained"]
    ax.set_xlabel(f"PC1 ({ev[0]:.0%})")
    ax.set_ylabel(f"PC2 ({ev[1]:.0%})")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=6, loc="best")
  ax = axes[-1]
  ax.plot(rounds, [result["per_round"][str(r)]["mean_cosine_to_own_gold"] for r in rounds], marker="o",
          label="mean cos(answer, its gold)")  # fmt: skip
  ax2 = ax.twinx()
  ax2.plot(rounds, [result["per_round"][str(r)]["centroid_distance"] for r in rounds], marker="s", color="tab:orange",
           label="‖centroid(answers) − centroid(gold)‖")  # fmt: skip
  ax.set_xticks(rounds)
  ax.set_xlabel("recursion rounds r")
  ax.set_ylabel("mean cosine to own gold")
  ax2.set_ylabel("centroid distance", color="tab:orange")
  ax.legend(fontsize=6, loc="upper left")
  ax2.legend(fontsize=6, loc="lower right")
  ax.grid(alpha=0.3)
  fig.suptitle(f"Answer representations across rounds (decoder {result['decoder']} mean-pooled states, "
               f"n={result['n']}; stars: centroids)", fontsize=9)  # fmt: skip
  fig.tight_layout()
  return outputs.save_figure(fig, path)


def run(args, loaded=None) -> dict:
  from rmas_jax.evaluation.datasets import load_examples
  from rmas_jax.runtime import enable_compilation_cache
  from rmas_jax.training.batches import gold_response

  enable_compilation_cache()
  config = outputs.load_config_with(args.config, args.set, args.seed)
  if loaded is None:
    from rmas_jax.patterns.from_config import load_system

    loaded = load_system(config, progress=False)
  e = config.eval
  examples = {x.id: x for x in load_examples(e.dataset, split=e.split or None, limit=e.limit or None,
                                             seed=config.seed, path=e.path or None)}  # fmt: skip
  tick = time.perf_counter()
  per_round, outputs_by_round = {}, {}
  for r in args.rounds:
    c = config.copy_and_resolve_references()
    c.eval.method, c.eval.rounds = "recursive_mas", r
    res = evaluate_variant(c, f"{args.scratch}/r{r}", links_from=args.workdir, loaded=loaded)
    row = summary_row(res)
    per_round[str(r)] = row
    outputs_by_round[r] = {rec["id"]: rec["output"] for rec in res["records"]}
    print(f"  r={r}: accuracy {row['accuracy']:.3f} ({row['n']} q)", flush=True)
  ids = [i for i in examples if all(i in o for o in outputs_by_round.values())]
  task = next(iter(examples.values())).task
  gold_texts = ["\n".join(t for t in gold_response(examples[i], task) if t) for i in ids]
  decoder = loaded.system.pattern.decoder
  embed = lambda texts: text_embeddings(loaded.system.agents[decoder].backbone, loaded.tokenizers[decoder], texts,
                                        max_tokens=args.max_tokens)  # noqa: E731  # fmt: skip
  gold = embed(gold_texts)
  answers = {r: embed([outputs_by_round[r][i] for i in ids]) for r in args.rounds}
  stacked = np.concatenate([gold, *answers.values()], axis=0)
  proj, explained = pca(stacked)
  n = len(ids)
  points = {"gold": proj[:n].tolist(), **{f"r{r}": proj[n * (k + 1) : n * (k + 2)].tolist()
                                          for k, r in enumerate(args.rounds)}}  # fmt: skip
  for r in args.rounds:
    by_id = {rec["id"]: rec for rec in per_round[str(r)]["records"]}
    per_round[str(r)].update(alignment(answers[r], gold), correct=[bool(by_id[i]["correct"]) for i in ids])
  result = dict(config=args.config, overrides=list(args.set), workdir=args.workdir, dataset=config.eval.dataset,
                n=n, ids=ids, rounds=list(args.rounds), decoder=loaded.models[decoder], seed=config.seed,
                embedding=f"mean of the {decoder}'s final-norm hidden states over the text, L2-normalised",
                pca=dict(points=points, explained=explained.tolist()), per_round=per_round,
                wall_s=time.perf_counter() - tick)  # fmt: skip
  lines = ["| r | n | accuracy | mean cos(answer, own gold) | centroid distance |", "|--:|--:|--:|--:|--:|"]
  for r in args.rounds:
    m = per_round[str(r)]
    lines.append(f"| {r} | {n} | {m['accuracy']:.3f} | {m['mean_cosine_to_own_gold']:.4f} | "
                 f"{m['centroid_distance']:.4f} |")  # fmt: skip
  result["table"] = "\n".join(lines)
  stem = outputs.result_stem(args.out, "representations" + (f"-{args.name}" if args.name else ""))
  written = [outputs.write_json(stem + ".json", result), plot(result, stem + ".png")]
  print(result["table"])
  for path in written:
    print(f"written: {path}", file=sys.stderr)
  return result


def build_parser():
  """The command line of this study."""
  p = outputs.parser(__doc__.split("\n\n")[0])
  p.add_argument("--rounds", type=outputs.ints, default=[1, 2, 3], help="recursion rounds to compare")
  p.add_argument("--max-tokens", type=int, default=256, help="tokens of each text that are embedded")
  p.add_argument("--scratch", default="runs/analysis/representations", help="run directories of the evaluations")
  return p


def main(argv: list[str] | None = None) -> int:
  return outputs.command(build_parser, run, argv)


if __name__ == "__main__":
  sys.exit(main())
