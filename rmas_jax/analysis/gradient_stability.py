"""Theorem 4.1, measured: `python -m rmas_jax.analysis.gradient_stability --config configs/<style>.py --out DIR`.

Two measurements on the same system (trained links with `--workdir`, else fresh ones):

1. **Route Jacobians.** At real final-layer hidden states `h` of every agent (held-out questions of `config.eval`
   rendered with the agent's chat template, followed by their gold solution, so that both prompt and answer
   positions are sampled), the
   spectral norm `‖∂R(h)/∂h‖₂` (power iteration with JVPs/VJPs, `jacobian.py`) of
   - the latent routes: the inner link `R_in` and, per outgoing edge, `R_out ∘ R_in` (what the agent sends), for the
     config's links and for fresh links of the paper's printed form (eq. 3/4);
   - the text route `softmax(W_lm h / τ) · E` at several temperatures τ, against the entropy of that distribution,
     next to the exact bound `‖E‖ ‖W_lm‖ (1 − Σp²)/τ ≤ ‖E‖ ‖W_lm‖ H/τ` (`routes.TextRouteBound`);
   - the argmax route `E[argmax(W_lm h)]`, whose Jacobian is exactly zero.
2. **Gradient per round.** The eq. 6 loss (the decoder's cross-entropy of the gold answer after R rounds) with every
   round given its own copy of the links, so the gradient with respect to round r's copy is the part of the outer
   training gradient that round r's links receive (the copies' gradients sum to the shared one). Done for the latent
   system and for the same system with every `R_in` replaced by the soft-token route (text-style recursion).

Writes `DIR/gradient-stability[-<style>].json` and two PNGs next to it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rmas_jax.analysis import outputs
from rmas_jax.analysis.jacobian import batched_norms, matrix_norm
from rmas_jax.analysis.routes import HardTokenLink, SoftTokenLink, TextRouteBound, head_logits, text_style_system
from rmas_jax.links.recursive_link import inner_link, outer_link
from rmas_jax.patterns.system import System, link_key, think_round
from rmas_jax.training.batches import OuterBatch, inner_batch, outer_batch
from rmas_jax.training.objectives import answer_cross_entropy
from rmas_jax.training.optimizer import link_groups, split_links


class Chain(nnx.Module):
  """`second(first(h))`: an outer link after the sender's inner link, the route a latent thought takes."""

  def __init__(self, first: nnx.Module, second: nnx.Module):
    self.first, self.second = first, second

  def __call__(self, h: jax.Array) -> jax.Array:
    return self.second(self.first(h))


class _Head(nnx.Module):
  def __init__(self, backbone):
    self.backbone = backbone

  def __call__(self, h):
    return head_logits(self.backbone, h)


def module_fn(module: nnx.Module) -> tuple[Callable, nnx.State]:
  """`(fn, state)` with `fn(state, x) == module(x)`, so the state is an argument of compiled code."""
  graphdef, state = nnx.split(module)
  return (lambda state, x: nnx.merge(graphdef, state)(x)), state


def latent_lower_bound(d: int, delta: float) -> float:
  """Theorem 4.1's latent-route bound without its constant: `1 − sqrt(log(1/δ) / d)`."""
  return 1.0 - math.sqrt(math.log(1.0 / delta) / d)


def probe_states(backbone, tokenizer, examples, *, task: str, length: int, positions: int) -> np.ndarray:
  """Final-norm hidden states `[len(examples) * positions, D]` of the agent reading each question and its gold
  solution, at `positions` evenly spaced real (non-padding) positions per question."""
  ids, mask, _ = inner_batch(tokenizer, examples, task=task, length=length, whole=False)  # [B, T]
  graphdef, state = nnx.split(backbone)
  run = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, attention_mask=m, return_logits=False).hidden)
  hidden = np.asarray(run(state, ids, mask), np.float32)  # [B, T, D]
  mask = np.asarray(mask)
  rows = []
  for b in range(hidden.shape[0]):
    real = np.flatnonzero(mask[b])
    picks = real[np.unique(np.linspace(0, len(real) - 1, positions).round().astype(int))]
    rows.append(hidden[b, picks])
  return np.concatenate(rows, axis=0)


def _stats(x) -> dict:
  x = np.asarray(x, np.float64)
  return dict(median=float(np.median(x)), min=float(x.min()), max=float(x.max()), mean=float(x.mean()))


def route_jacobians(system: System, states: dict[str, np.ndarray], *, temperatures: Sequence[float], iters: int,
                    probes: int, delta: float, seed: int, link_label: str) -> dict:  # fmt: skip
  """Per role: the latent routes' and text routes' Jacobian norms at the probe states (see the module doc)."""
  key = jax.random.key(seed)
  paper_rngs = nnx.Rngs(seed)
  pattern = system.pattern
  width = {r: system.agents[r].backbone.cfg.hidden_size for r in pattern.roles}
  paper_inner = {r: inner_link(width[r], form="paper", rngs=paper_rngs) for r in pattern.roles}
  paper_outer = {link_key(e.src, e.dst): outer_link(width[e.src], width[e.dst], form="paper", rngs=paper_rngs)
                 for e in pattern.edges}  # fmt: skip
  out = {}
  for role in pattern.roles:
    agent = system.agents[role]
    backbone, xs = agent.backbone, jnp.asarray(states[role])
    k_role = jax.random.fold_in(key, pattern.roles.index(role))
    tick = time.perf_counter()
    head = backbone.embed_tokens.embedding[...] if backbone.lm_head is None else backbone.lm_head[...]
    bound = TextRouteBound(embed_norm=matrix_norm(backbone.input_embedding_matrix(), jax.random.fold_in(k_role, 1)),
                           head_norm=matrix_norm(head, jax.random.fold_in(k_role, 2)))  # fmt: skip
    head_fn, state = module_fn(_Head(backbone))
    logits = jax.jit(head_fn)(state, xs)  # [n, V]

    def norms(module, k, xs=xs, k_role=k_role):
      fn, params = module_fn(module)
      res = batched_norms(fn, params, xs, jax.random.fold_in(k_role, k), iters=iters, probes=probes)
      return {name: np.asarray(v, np.float64) for name, v in res.items()}

    text = {}
    for i, tau in enumerate(temperatures):
      p = jax.nn.softmax(logits / tau, axis=-1)  # [n, V]
      entropy = np.asarray(-jnp.sum(p * jnp.log(jnp.maximum(p, 1e-30)), axis=-1), np.float64)
      res = norms(SoftTokenLink(backbone, tau), 10 + i)
      text[str(tau)] = dict(temperature=tau, entropy=entropy.tolist(), sigma=res["sigma"].tolist(),
                            rms=res["rms"].tolist(), bound=np.asarray(bound(p, tau), np.float64).tolist(),
                            change=_stats(res["change"]), sigma_stats=_stats(res["sigma"]),
                            entropy_stats=_stats(entropy))  # fmt: skip
    hard = norms(HardTokenLink(backbone), 9)

    latent = {}
    for label, inner, outer in ((link_label, agent.inner, system.outer), ("paper eq. 3/4, fresh", paper_inner[role],
                                                                          paper_outer)):  # fmt: skip
      routes = {"R_in": inner}
      for e in pattern.outgoing(role):
        routes[f"R_out[{link_key(e.src, e.dst)}] o R_in"] = Chain(inner, outer[link_key(e.src, e.dst)])
      for j, (name, module) in enumerate(routes.items()):
        res = norms(module, 100 + 10 * len(latent) + j)
        latent[f"{name} ({label})"] = dict(sigma=res["sigma"].tolist(), rms=res["rms"].tolist(),
                                           change=_stats(res["change"]), sigma_stats=_stats(res["sigma"]),
                                           rms_stats=_stats(res["rms"]))  # fmt: skip
    out[role] = dict(
      model_width=width[role],
      vocab=backbone.cfg.vocab_size,
      points=int(xs.shape[0]),
      embed_norm=bound.embed_norm,
      head_norm=bound.head_norm,
      latent_lower_bound=latent_lower_bound(width[role], delta),
      text=text,
      argmax=dict(sigma_max=float(hard["sigma"].max()), rms_max=float(hard["rms"].max())),
      latent=latent,
      seconds=time.perf_counter() - tick,
    )
    print(f"  {role}: d={width[role]} |V|={backbone.cfg.vocab_size} {time.perf_counter() - tick:.1f}s", flush=True)
  return out


def _round_layouts(batch: OuterBatch, r: int, rounds: int):
  if r == 0:
    return batch.first
  if r == rounds - 1:
    return batch.last
  return jax.tree.map(lambda x: x[r - 1], batch.middle)


def round_gradients(system: System, batch: OuterBatch, *, rounds: int, steps: int, remat: bool = True):
  """`(loss, grads)`: the eq. 6 loss and, per round, the gradient with respect to that round's copy of the links
  (an `nnx.State` like the system's links; their sum over rounds is the gradient of the shared links)."""
  graphdef, links, frozen = split_links(system)
  decoder_role = system.pattern.decoder

  def loss_fn(copies, frozen, batch):
    feedback, decoder_input = None, None
    for r in range(rounds):
      sys_r = nnx.merge(graphdef, copies[r], frozen)
      feedback, decoder_input = think_round(sys_r, _round_layouts(batch, r, rounds), feedback, steps=steps,
                                            final=r == rounds - 1, remat=remat)  # fmt: skip
    decoder = sys_r.agents[decoder_role].backbone
    return answer_cross_entropy(decoder, decoder_input.embeds, decoder_input.mask, batch.target, batch.target_mask)

  return jax.jit(jax.value_and_grad(loss_fn))([links] * rounds, frozen, batch)


def gradient_summary(grads) -> list[dict]:
  """Per round: the norm of the gradient reaching the outer links, the inner links, and each edge's outer link."""
  rows = []
  for g in grads:
    groups = link_groups(g)
    sq = {"inner": 0.0, "outer": 0.0}
    edges: dict[str, float] = {}
    flat = jax.tree_util.tree_flatten_with_path(g)[0]
    for (path, leaf), group in zip(flat, jax.tree.leaves(groups), strict=True):
      s = float(jnp.sum(jnp.square(leaf.astype(jnp.float32))))
      sq[group] += s
      if group == "outer":
        name = str(getattr(path[1], "key", path[1]))
        edges[name] = edges.get(name, 0.0) + s
    rows.append(dict(outer=math.sqrt(sq["outer"]), inner=math.sqrt(sq["inner"]),
                     edges={k: math.sqrt(v) for k, v in sorted(edges.items())}))  # fmt: skip
  return rows


def gradient_study(loaded, examples, *, task: str, rounds: int, steps: int, target_tokens: int,
                   temperatures: Sequence[float]) -> dict:  # fmt: skip
  """Per-round gradient norms of the latent system and of its text-style (soft-token) version."""
  system = loaded.system
  batch = outer_batch(system, loaded.tokenizers, examples, rounds=rounds, steps=steps, task=task,
                      target_tokens=target_tokens, min_prompt=16, book=loaded.prompts, whole=False)  # fmt: skip
  systems = {"latent": system, **{f"text tau={t}": text_style_system(system, t) for t in temperatures}}
  out = dict(rounds=rounds, latent_steps=steps, batch=len(examples), target_tokens=target_tokens,
             prompt_slots={r: int(lay.ids.shape[1]) for r, lay in batch.first.items()}, routes={})  # fmt: skip
  for name, sys_ in systems.items():
    tick = time.perf_counter()
    loss, grads = round_gradients(sys_, batch, rounds=rounds, steps=steps)
    rows = gradient_summary(grads)
    shared = gradient_summary([jax.tree.map(lambda *g: sum(g), *grads)])[0]  # what one training step applies
    out["routes"][name] = dict(loss=float(loss), per_round=rows, shared=shared, seconds=time.perf_counter() - tick)
    print(f"  {name}: loss {float(loss):.3f}; outer grad per round "
          + " ".join(f"{r['outer']:.2e}" for r in rows), flush=True)  # fmt: skip
  return out


def plot_jacobians(result: dict, path: str) -> str:
  import re

  from matplotlib.ticker import NullFormatter

  plt = outputs.pyplot()
  roles = list(result["jacobians"])
  fig, axes = plt.subplots(1, len(roles), figsize=(4.6 * len(roles), 4.6), squeeze=False)
  cmap = plt.get_cmap("viridis")
  for ax, role in zip(axes[0], roles, strict=True):
    r = result["jacobians"][role]
    taus = list(r["text"])
    for i, key in enumerate(taus):
      t = r["text"][key]
      color = cmap(i / max(len(taus) - 1, 1))
      ax.scatter(t["entropy"], t["sigma"], s=9, color=color, label=f"text route τ={t['temperature']:g}")
      ax.scatter(t["entropy"], t["bound"], s=4, marker="_", color=color, alpha=0.6)
    ref = r["text"][taus[len(taus) // 2]]["entropy"]
    markers = iter("osD^vP*X")
    for name, lat in r["latent"].items():
      short = re.sub(r"\[[^]]*\]", "", name).replace(" o ", "∘")  # the edge is in the panel's role
      ax.scatter(ref, lat["sigma"], s=9, marker=next(markers), alpha=0.7, label=f"latent {short}")
    ax.axhline(r["latent_lower_bound"], color="k", ls="--", lw=1,
               label=f"1 - sqrt(log(1/δ)/d), δ={result['delta']:g}")  # fmt: skip
    spread = [e for t in r["text"].values() for e in t["entropy"] if e > 0]
    if spread and max(spread) > 10 * min(spread):  # a log axis only where the entropies span decades
      ax.set_xscale("log")
      ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale("log")
    ax.set_xlabel("entropy of softmax(W h / τ) [nats]")
    ax.set_ylabel("‖∂R(h)/∂h‖₂ (power iteration)")
    ax.set_title(f"{role} (d={r['model_width']}, |V|={r['vocab']})\nargmax route: exactly 0; dashes: O(ε) bound",
                 fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3, which="both")
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)
  fig.suptitle(f"Route Jacobians at real hidden states — links: {result['links']}", fontsize=10)
  fig.tight_layout(rect=(0, 0.14, 1, 1))
  return outputs.save_figure(fig, path)


def plot_round_gradients(result: dict, path: str) -> str:
  plt = outputs.pyplot()
  g = result["round_gradients"]
  fig, ax = plt.subplots(figsize=(5.2, 3.8))
  rounds = np.arange(1, g["rounds"] + 1)
  for name, route in g["routes"].items():
    outer = [max(r["outer"], 1e-30) for r in route["per_round"]]
    ax.plot(rounds, outer, marker="o", label=f"{name}: outer links")
    if name == "latent":
      ax.plot(rounds, [max(r["inner"], 1e-30) for r in route["per_round"]], marker="s", ls=":",
              label="latent: inner links")  # fmt: skip
  ax.set_yscale("log")
  ax.set_xticks(rounds)
  ax.set_xlabel("recursion round whose links receive the gradient")
  ax.set_ylabel("‖∂L_out / ∂links_r‖")
  ax.set_title(f"Outer-loss gradient per round (R={g['rounds']}, m={g['latent_steps']})", fontsize=10)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return outputs.save_figure(fig, path)


def markdown(result: dict) -> str:
  """A short table of medians: text route per τ, argmax route, latent routes, and gradients per round."""
  lines = ["| role | route | median entropy | median ‖J‖₂ | median RMS gain |", "|---|---|--:|--:|--:|"]
  for role, r in result["jacobians"].items():
    for t in r["text"].values():
      lines.append(f"| {role} | text τ={t['temperature']:g} | {t['entropy_stats']['median']:.3f} | "
                   f"{t['sigma_stats']['median']:.3g} | {np.median(t['rms']):.3g} |")  # fmt: skip
    lines.append(f"| {role} | argmax | | {r['argmax']['sigma_max']:.3g} | {r['argmax']['rms_max']:.3g} |")
    for name, lat in r["latent"].items():
      lines.append(f"| {role} | {name} | | {lat['sigma_stats']['median']:.3g} | {lat['rms_stats']['median']:.3g} |")
  g = result.get("round_gradients")
  if g:
    lines += ["", "| route | loss | " + " | ".join(f"round {i + 1}" for i in range(g["rounds"])) + " |",
              "|---|--:|" + "--:|" * g["rounds"]]  # fmt: skip
    for name, route in g["routes"].items():
      cells = " | ".join(f"{r['outer']:.3g}" for r in route["per_round"])
      lines.append(f"| {name} (outer) | {route['loss']:.3f} | {cells} |")
      if name == "latent":
        lines.append("| latent (inner) | | " + " | ".join(f"{r['inner']:.3g}" for r in route["per_round"]) + " |")
  return "\n".join(lines)


def run(args) -> dict:
  from rmas_jax.evaluation.datasets import load_examples
  from rmas_jax.runtime import enable_compilation_cache

  enable_compilation_cache()
  config = outputs.load_config_with(args.config, args.set, args.seed)
  loaded, links = outputs.load_with_links(config, args.workdir, scan_layers=config.train.scan_layers)
  e = config.eval  # held-out questions, as `eval.py` picks them
  examples = load_examples(e.dataset, split=e.split or None, limit=max(args.questions, args.batch), seed=config.seed,
                           path=e.path or None)  # fmt: skip
  task = config.task
  print(f"links: {links}; {len(examples)} held-out questions", flush=True)
  tick = time.perf_counter()
  states = {role: probe_states(loaded.system.agents[role].backbone, loaded.tokenizers[role], examples[: args.questions],
                               task=task, length=config.train.inner_tokens, positions=args.positions)
            for role in loaded.system.pattern.roles}  # fmt: skip
  result = dict(config=args.config, overrides=list(args.set), links=links, models=loaded.models, seed=args.seed,
                questions=args.questions, positions_per_question=args.positions, iters=args.iters,
                probes=args.probes, delta=args.delta, temperatures=args.temperatures)  # fmt: skip
  print("route Jacobians:", flush=True)
  result["jacobians"] = route_jacobians(loaded.system, states, temperatures=args.temperatures, iters=args.iters,
                                        probes=args.probes, delta=args.delta, seed=args.seed,
                                        link_label=links)  # fmt: skip
  if args.rounds:
    print("gradient per round:", flush=True)
    result["round_gradients"] = gradient_study(loaded, examples[: args.batch], task=task, rounds=args.rounds,
                                               steps=args.latent_steps, target_tokens=args.target_tokens,
                                               temperatures=args.grad_temperatures)  # fmt: skip
  from rmas_jax.accounting import peak_memory

  result.update(wall_s=time.perf_counter() - tick, **peak_memory())
  result["table"] = markdown(result)
  name = "gradient-stability" + (f"-{args.name}" if args.name else "")
  stem = outputs.result_stem(args.out, name)
  written = [outputs.write_json(stem + ".json", result), plot_jacobians(result, stem + "-jacobians.png")]
  if args.rounds:
    written.append(plot_round_gradients(result, stem + "-rounds.png"))
  print(result["table"])
  for path in written:
    print(f"written: {path}", file=sys.stderr)
  return result


def build_parser():
  """The command line of this study."""
  p = outputs.parser(__doc__.split("\n\n")[0])
  p.add_argument("--questions", type=int, default=4, help="held-out questions whose hidden states are probed")
  p.add_argument("--positions", type=int, default=12, help="probed positions per question")
  p.add_argument("--temperatures", type=outputs.floats, default=[0.25, 0.5, 1.0, 2.0], help="text-route τ values")
  p.add_argument("--iters", type=int, default=30, help="power iterations")
  p.add_argument("--probes", type=int, default=8, help="random directions of the RMS gain")
  p.add_argument("--delta", type=float, default=0.05, help="δ of the latent-route bound")
  p.add_argument("--rounds", type=int, default=3, help="rounds of the gradient study (0 skips it)")
  p.add_argument("--latent-steps", type=int, default=4, help="latent steps m of the gradient study")
  p.add_argument("--batch", type=int, default=1, help="questions in the gradient study's batch")
  p.add_argument("--target-tokens", type=int, default=16, help="gold answer tokens in the gradient study's loss")
  p.add_argument("--grad-temperatures", type=outputs.floats, default=[1.0], help="τ of the text-style systems")
  return p


def main(argv: list[str] | None = None) -> int:
  return outputs.command(build_parser, run, argv)


if __name__ == "__main__":
  sys.exit(main())
