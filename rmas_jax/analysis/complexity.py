"""Proposition 3.1, measured: `python -m rmas_jax.analysis.complexity --config configs/sequential.py`.

One agent's round is a prefill of its t prompt slots and m thoughts. The latent route feeds `R_in(h)` back and sends
`R_out(R_in(H))`; the text route (greedy text) feeds `E[argmax(W_lm h)]` back and sends the m tokens. The
proposition says, per agent and round,

  text:   Θ(m|V|d + (t+m)d² + (t+m)²d)        latent:  Θ(m d² + (t+m)d² + (t+m)²d)

so the two differ by the LM head, `m|V|d`, against the link's `m d²`.

**FLOPs** are XLA's own count (`jit(f).lower(...).compile().cost_analysis()["flops"]`). XLA counts a loop body
once whatever its trip count, so a round is measured as its pieces: `prefill + (m − 1) · step + send`, each compiled
on its own with the cache at its full round length (the decoder attends over every cache slot, masked, at every
step, so each step costs the same). A test checks this sum against a fully unrolled round. The pieces are compiled
from shapes alone, so no weights are needed for FLOPs. **Predicted** FLOPs write the proposition's terms out with
2 FLOPs per multiply-add: layers `2·(t+m−1)·P_layers`, attention `4·L·H·hd·(t+m−1)·S`, the LM head `2·m·|V|·d`
(text) and the links (latent). **Wall time** runs the real, scanned rollout (`latent_rollout`) with either feed,
best of `--repeats`.

Sweeps: tiny agents (random weights, Llama layout) over m, |V| and d; the config's real agents (loaded one at a
time) over m. Writes `DIR/complexity[-<name>].json` and a PNG.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from rmas_jax.analysis import outputs
from rmas_jax.analysis.routes import HardTokenLink
from rmas_jax.latent.rollout import latent_rollout
from rmas_jax.links.recursive_link import RecursiveLink, inner_link, outer_link
from rmas_jax.models.arch import ArchConfig
from rmas_jax.models.kv_cache import KVCache
from rmas_jax.models.transformer import CausalLM


def _flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list | tuple) else cost
  return float(cost["flops"])


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def abstract_model(cfg: ArchConfig, dtype=jnp.float32) -> CausalLM:
  """A model with shapes and no weights (layers unrolled: a scanned layer stack would be counted once)."""
  return nnx.eval_shape(lambda: CausalLM(cfg, dtype=dtype, scan_layers=False, rngs=nnx.Rngs(0)))


def links_for(cfg: ArchConfig, d_next: int, form: str = "official") -> tuple[RecursiveLink, RecursiveLink]:
  """Shape-only inner link of the agent and outer link to a receiver of width `d_next`."""
  d = cfg.hidden_size

  def make():
    rngs = nnx.Rngs(0)
    return inner_link(d, form=form, rngs=rngs), outer_link(d, d_next, form=form, rngs=rngs)

  return nnx.eval_shape(make)


def round_flops(model: CausalLM, inner: RecursiveLink, outer: RecursiveLink, *, t: int, m: int, batch: int = 1) -> dict:
  """XLA FLOPs of one agent's round, latent and text, from its separately compiled pieces."""
  cfg = model.cfg
  gd, st = nnx.split(model)
  gi, si = nnx.split(inner)
  go, so = nnx.split(outer)
  st, si, so = _abstract(st), _abstract(si), _abstract(so)
  slots = t + m - 1
  d = cfg.hidden_size

  def prefill(st, embeds, mask):
    model = nnx.merge(gd, st)
    out = model(inputs_embeds=embeds, attention_mask=mask, cache=KVCache.init(cfg, batch, slots, model.dtype),
                return_logits=False)  # fmt: skip
    return out.hidden[:, -1], out.cache

  def step(st, si, h, cache, text: bool):
    model = nnx.merge(gd, st)
    fed = HardTokenLink(model)(h) if text else nnx.merge(gi, si)(h)  # [B, D]
    nxt = model(inputs_embeds=fed.astype(model.dtype)[:, None], cache=cache, return_logits=False)
    return nxt.hidden[:, 0], nxt.cache

  def latent_send(si, so, hidden):  # [B, m, D] -> what the receiver reads
    return nnx.merge(go, so)(nnx.merge(gi, si)(hidden))

  def text_send(st, h):  # the m-th token: the others were written while feeding
    return HardTokenLink(nnx.merge(gd, st))(h)

  embeds = jax.ShapeDtypeStruct((batch, t, d), model.dtype)
  mask = jax.ShapeDtypeStruct((batch, t), jnp.bool_)
  h, cache = jax.eval_shape(prefill, st, embeds, mask)
  hidden = jax.ShapeDtypeStruct((batch, m, d), jnp.float32)
  parts = dict(
    prefill=_flops(prefill, st, embeds, mask),
    latent_step=_flops(lambda st, si, h, c: step(st, si, h, c, False), st, si, h, cache),
    text_step=_flops(lambda st, si, h, c: step(st, si, h, c, True), st, si, h, cache),
    latent_send=_flops(latent_send, si, so, hidden),
    text_send=_flops(text_send, st, h),
  )
  return dict(
    latent=parts["prefill"] + (m - 1) * parts["latent_step"] + parts["latent_send"],
    text=parts["prefill"] + (m - 1) * parts["text_step"] + parts["text_send"],
    parts=parts,
  )


def link_flops(link: RecursiveLink) -> float:
  """2 FLOPs per multiply-add of the link's matrices, per vector."""
  return float(sum(2 * x.size for path, x in nnx.state(link).flat_state() if path[-1] == "kernel"))


def predicted_flops(cfg: ArchConfig, inner: RecursiveLink, outer: RecursiveLink, *, t: int, m: int) -> dict:
  """Proposition 3.1's terms with their constants: what the two routes should cost per agent and round."""
  d, hd = cfg.hidden_size, cfg.head_dim
  q, kv = cfg.num_heads * hd, cfg.num_kv_heads * hd
  per_token = 2 * cfg.num_layers * (d * q + 2 * d * kv + q * d + 3 * d * cfg.intermediate_size)  # the (t+m)d² term
  tokens, slots = t + m - 1, t + m - 1
  attention = 4 * cfg.num_layers * q * tokens * slots  # the (t+m)²d term: QKᵀ and AV over every cache slot
  shared = per_token * tokens + attention
  head = 2 * m * cfg.vocab_size * d  # the m|V|d term
  links = (2 * m - 1) * link_flops(inner) + m * link_flops(outer)  # the m d² term (R_in fed m−1 times, sent m)
  return dict(latent=shared + links, text=shared + head, shared=shared, head=head, links=links)


@dataclasses.dataclass
class Agent:
  """A backbone and its links for timing (real weights)."""

  model: CausalLM
  inner: RecursiveLink
  outer: RecursiveLink


def round_wall(agent: Agent, *, t: int, m: int, repeats: int, seed: int = 0) -> dict:
  """Seconds (best of `repeats`, after a compile run) of one agent's round through the real scanned rollout."""
  model = agent.model
  gd, st = nnx.split(model)
  gi, si = nnx.split(agent.inner)
  go, so = nnx.split(agent.outer)
  ids = jax.random.randint(jax.random.key(seed), (1, t), 3, model.cfg.vocab_size)
  mask = jnp.ones((1, t), bool)
  out = {}
  for route in ("latent", "text"):

    def fn(st, si, so, ids, mask, route=route):
      model = nnx.merge(gd, st)
      inner = nnx.merge(gi, si)
      feed = HardTokenLink(model) if route == "text" else inner
      cache = KVCache.init(model.cfg, 1, t + m - 1, model.dtype)
      hidden = latent_rollout(model, feed, model.embed(ids), mask, cache, m).hidden  # [1, m, D]
      if route == "text":
        return feed(hidden[:, -1])
      return nnx.merge(go, so)(inner(hidden))

    run = jax.jit(fn)
    start = time.perf_counter()
    jax.block_until_ready(run(st, si, so, ids, mask))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(run(st, si, so, ids, mask))
      times.append(time.perf_counter() - start)
    out[route] = min(times)
    out[f"{route}_first_call_s"] = compile_s
  return out


def tiny_cfg(d: int, vocab: int) -> ArchConfig:
  """A 2-layer Llama-layout agent of width `d` and vocabulary `vocab`."""
  from rmas_jax.weights.tiny import tiny_arch

  return dataclasses.replace(tiny_arch("llama", d), vocab_size=vocab, tie_embeddings=False)


def measure(cfg: ArchConfig, *, t: int, m: int, d_next: int, agent: Agent | None, repeats: int) -> dict:
  inner, outer = links_for(cfg, d_next)
  row = dict(d=cfg.hidden_size, vocab=cfg.vocab_size, layers=cfg.num_layers, t=t, m=m)
  row["measured"] = round_flops(abstract_model(cfg), inner, outer, t=t, m=m)
  row["predicted"] = predicted_flops(cfg, inner, outer, t=t, m=m)
  if agent is not None and repeats:
    row["wall_s"] = round_wall(agent, t=t, m=m, repeats=repeats)
  return row


def tiny_sweeps(*, t: int, lengths, vocabs, widths, base_d: int, base_vocab: int, base_m: int, repeats: int,
                seed: int) -> dict:  # fmt: skip
  """FLOPs (and wall time) of tiny agents with one of m, |V|, d varied and the others at their base values."""
  out = {}
  plan = {
    "m": [(base_d, base_vocab, m) for m in lengths],
    "vocab": [(base_d, v, base_m) for v in vocabs],
    "d": [(d, base_vocab, base_m) for d in widths],
  }
  for axis, points in plan.items():
    rows = []
    for d, v, m in points:
      cfg = tiny_cfg(d, v)
      agent = None
      if repeats:
        rngs = nnx.Rngs(seed)
        model = CausalLM(cfg, scan_layers=False, rngs=rngs)
        agent = Agent(model, inner_link(d, rngs=rngs), outer_link(d, d, rngs=rngs))
      rows.append(measure(cfg, t=t, m=m, d_next=d, agent=agent, repeats=repeats))
      r = rows[-1]
      wall = r.get("wall_s", {})
      print(f"  tiny {axis}: d={d} |V|={v} m={m}: FLOPs text/latent {r['measured']['text']:.3g}/"
            f"{r['measured']['latent']:.3g}" + (f", wall {wall['text']:.4f}/{wall['latent']:.4f}s" if wall else ""),
            flush=True)  # fmt: skip
    out[axis] = rows
  return out


def arch_of(spec: str) -> ArchConfig:
  """A model's architecture without loading its weights where the format allows (GGUF, tiny)."""
  from rmas_jax.weights.gguf_io import GGUFCheckpoint
  from rmas_jax.weights.pretrained import load_pretrained, resolve
  from rmas_jax.weights.registry import fetch
  from rmas_jax.weights.tiny import parse, tiny_arch

  kind, location = resolve(spec)
  if kind == "tiny":
    return tiny_arch(*parse(location)[:2])
  if kind in ("registry", "gguf"):
    return GGUFCheckpoint(fetch(location, progress=False) if kind == "registry" else location).arch
  return load_pretrained(spec, progress=False, with_tokenizer=False).model.cfg


def real_agents(config, *, t: int, lengths, repeats: int, seed: int) -> dict:
  """Each of the config's agents, loaded one at a time (layers unrolled), at each m; and the sum over one round of
  the pattern (every agent thinks in a middle round)."""
  from rmas_jax.patterns.from_config import pattern_of
  from rmas_jax.weights.pretrained import load_pretrained

  pattern = pattern_of(config)
  models = {a["role"]: a["model"] for a in config.agents}
  out = {}
  widths = {role: arch_of(models[role]).hidden_size for role in pattern.roles}
  for role in pattern.roles:
    targets = [e.dst for e in pattern.outgoing(role)]
    d_next = widths[targets[0]] if targets else widths[role]
    model = load_pretrained(models[role], dtype=config.dtype, progress=False, scan_layers=False).model
    rngs = nnx.Rngs(seed)
    agent = Agent(model, inner_link(model.cfg.hidden_size, rngs=rngs), outer_link(model.cfg.hidden_size, d_next,
                                                                                   rngs=rngs))  # fmt: skip
    rows = []
    for m in lengths:
      rows.append(measure(model.cfg, t=t, m=m, d_next=d_next, agent=agent, repeats=repeats))
      r = rows[-1]
      wall = r.get("wall_s", {})
      print(f"  {role} ({models[role]}): m={m}: FLOPs text/latent {r['measured']['text']:.3g}/"
            f"{r['measured']['latent']:.3g}" + (f", wall {wall['text']:.3f}/{wall['latent']:.3f}s" if wall else ""),
            flush=True)  # fmt: skip
    out[role] = dict(model=models[role], rows=rows)
    del agent, model
  per_round = []
  for i, m in enumerate(lengths):
    total = {k: sum(out[r]["rows"][i]["measured"][k] for r in pattern.roles) for k in ("latent", "text")}
    pred = {k: sum(out[r]["rows"][i]["predicted"][k] for r in pattern.roles) for k in ("latent", "text")}
    row = dict(m=m, measured=total, predicted=pred)
    if repeats:
      row["wall_s"] = {k: sum(out[r]["rows"][i]["wall_s"][k] for r in pattern.roles) for k in ("latent", "text")}
    per_round.append(row)
  return dict(agents=out, per_round=per_round)


def plot(result: dict, path: str) -> str:
  from matplotlib.ticker import NullFormatter

  plt = outputs.pyplot()
  fig, axes = plt.subplots(2, 3, figsize=(13, 7))
  labels = {"m": "latent steps m", "vocab": "vocabulary |V|", "d": "hidden width d"}
  keys = {"m": "m", "vocab": "vocab", "d": "d"}
  for j, axis in enumerate(("m", "vocab", "d")):
    rows = result["tiny"][axis]
    x = [r[keys[axis]] for r in rows]
    ax = axes[0][j]
    for route, color in (("text", "tab:red"), ("latent", "tab:blue")):
      ax.plot(x, [r["measured"][route] for r in rows], "o", color=color, label=f"{route}: XLA count")
      ax.plot(x, [r["predicted"][route] for r in rows], "-", color=color, alpha=0.6, label=f"{route}: Prop. 3.1 terms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log axis overlap
    ax.set_xlabel(labels[axis])
    ax.set_ylabel("FLOPs per agent and round")
    b = rows[0]
    fixed = dict(m=f"d={b['d']}, |V|={b['vocab']}", vocab=f"d={b['d']}, m={b['m']}", d=f"|V|={b['vocab']}, m={b['m']}")
    ax.set_title(f"tiny agents, t={b['t']}, {fixed[axis]}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if axis in ("m", "vocab") and rows and "wall_s" in rows[0]:
      ax = axes[1][j]
      for route, color in (("text", "tab:red"), ("latent", "tab:blue")):
        ax.plot(x, [r["wall_s"][route] * 1e3 for r in rows], "o-", color=color, label=route)
      ax.set_xscale("log")
      ax.set_yscale("log")
      ax.xaxis.set_minor_formatter(NullFormatter())
      ax.set_xlabel(labels[axis])
      ax.set_ylabel("ms per agent and round (CPU)")
      ax.set_title("tiny agents, wall time", fontsize=9)
      ax.grid(alpha=0.3, which="both")
      ax.legend(fontsize=7)
  axes[0][0].legend(fontsize=7)
  ax = axes[1][2]
  real = result.get("real")
  if real:
    roles = list(real["agents"])
    ms = [r["m"] for r in real["per_round"]]
    width = 0.8 / (len(roles) + 1)
    for i, role in enumerate(roles):
      rows = real["agents"][role]["rows"]
      ax.bar([k + i * width for k in range(len(ms))], [r["measured"]["text"] / r["measured"]["latent"] for r in rows],
             width, label=f"{role} FLOPs (|V|={rows[0]['vocab']}, d={rows[0]['d']})")  # fmt: skip
    ax.bar([k + len(roles) * width for k in range(len(ms))],
           [r["wall_s"]["text"] / r["wall_s"]["latent"] for r in real["per_round"]], width, color="0.3",
           label="round wall time (all agents)")  # fmt: skip
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks([k + width * len(roles) / 2 for k in range(len(ms))])
    ax.set_xticklabels([f"m={m}" for m in ms])
    ax.set_ylabel("text / latent")
    ax.set_title(f"real agents ({result['config']}), t={real['t']}", fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3, axis="y")
  else:
    ax.axis("off")
  fig.suptitle("Proposition 3.1: per-round cost of text vs latent recursion", fontsize=10)
  fig.tight_layout()
  return outputs.save_figure(fig, path)


def markdown(result: dict) -> str:
  lines = [
    "| agents | d | |V| | t | m | text FLOPs | latent FLOPs | text/latent | predicted text/latent | "
    "measured/predicted (text, latent) | wall text/latent |",
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
  ]

  def line(name, r):
    mt, ml = r["measured"]["text"], r["measured"]["latent"]
    pt, pl = r["predicted"]["text"], r["predicted"]["latent"]
    w = r.get("wall_s")
    wall = f"{w['text'] / w['latent']:.2f}" if w else ""
    lines.append(f"| {name} | {r['d']} | {r['vocab']} | {r['t']} | {r['m']} | {mt:.3g} | {ml:.3g} | {mt / ml:.2f} | "
                 f"{pt / pl:.2f} | {mt / pt:.2f}, {ml / pl:.2f} | {wall} |")  # fmt: skip

  for axis, rows in result["tiny"].items():
    for r in rows:
      line(f"tiny ({axis} sweep)", r)
  for role, a in (result.get("real") or {}).get("agents", {}).items():
    for r in a["rows"]:
      line(f"{role}: {a['model']}", r)
  return "\n".join(lines)


def run(args) -> dict:
  from rmas_jax.accounting import peak_memory
  from rmas_jax.runtime import enable_compilation_cache

  enable_compilation_cache()
  config = outputs.load_config_with(args.config, args.set, args.seed)
  tick = time.perf_counter()
  result = dict(config=args.config, overrides=list(args.set), seed=args.seed, repeats=args.repeats,
                note="FLOPs: XLA cost analysis, per agent and round; wall: CPU seconds, best of repeats")  # fmt: skip
  print("tiny agents:", flush=True)
  result["tiny"] = tiny_sweeps(t=args.prompt, lengths=args.lengths, vocabs=args.vocabs, widths=args.widths,
                               base_d=args.base_width, base_vocab=args.base_vocab, base_m=args.base_length,
                               repeats=args.repeats, seed=args.seed)  # fmt: skip
  if args.real_lengths and not args.no_real:
    print("real agents:", flush=True)
    result["real"] = dict(t=args.real_prompt, **real_agents(config, t=args.real_prompt, lengths=args.real_lengths,
                                                            repeats=args.repeats, seed=args.seed))  # fmt: skip
  result.update(wall_s=time.perf_counter() - tick, **peak_memory())
  result["table"] = markdown(result)
  stem = outputs.result_stem(args.out, "complexity" + (f"-{args.name}" if args.name else ""))
  written = [outputs.write_json(stem + ".json", result), plot(result, stem + ".png")]
  print(result["table"])
  for path in written:
    print(f"written: {path}", file=sys.stderr)
  return result


def build_parser():
  """The command line of this study."""
  p = outputs.parser(__doc__.split("\n\n")[0], workdir_help="unused (links do not change the cost)")
  p.add_argument("--prompt", type=int, default=64, help="prompt slots t of the tiny agents")
  p.add_argument("--lengths", type=outputs.ints, default=[8, 16, 32, 64, 80], help="m values of the tiny m sweep")
  p.add_argument("--vocabs", type=outputs.ints, default=[320, 4096, 32768, 131072, 262144], help="tiny |V| sweep")
  p.add_argument("--widths", type=outputs.ints, default=[64, 128, 256, 512, 1024], help="tiny d sweep")
  p.add_argument("--base-width", type=int, default=256, help="d of the tiny m and |V| sweeps")
  p.add_argument("--base-vocab", type=int, default=32768, help="|V| of the tiny m and d sweeps")
  p.add_argument("--base-length", type=int, default=32, help="m of the tiny |V| and d sweeps")
  p.add_argument("--real-prompt", type=int, default=128, help="prompt slots t of the real agents")
  p.add_argument("--real-lengths", type=outputs.ints, default=[8, 32, 80], help="m values of the real agents")
  p.add_argument("--no-real", action="store_true", help="tiny agents only")
  p.add_argument("--repeats", type=int, default=3, help="timed runs per point (0: FLOPs only)")
  return p


def main(argv: list[str] | None = None) -> int:
  return outputs.command(build_parser, run, argv)


if __name__ == "__main__":
  sys.exit(main())
