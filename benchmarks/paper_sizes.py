"""Latent thinking and decoding at the paper's model sizes, with random weights, on whatever device JAX has.

For each backbone of the paper's Table 1 (shapes from `rmas_jax.sharding.table1.HUB_CONFIGS`; weights random,
which costs the same as real ones) this times, batch 1, after a warm-up call that compiles:

* rmas-jax: prefill of a `--prompt-len` prompt, then `--steps` latent steps (`latent_rollout`: one compiled
  program, a `lax.scan` over steps with a KV cache); the per-step cost is the difference to a 1-step rollout;
* rmas-jax: greedy decoding of `--new-tokens` tokens (`generate`: one compiled loop); per token likewise;
* the same model in HF transformers (PyTorch, eager), when importable: the release's latent loop, which re-runs
  the decoder over the whole, growing sequence at every step (`use_cache=False`), and the same loop with a KV
  cache; and `generate` for decoding.

Each step is set against its floor: the bytes a batch-1 step must read (blocks and final norm for a latent step,
plus the LM head for a decode step) over the memory bandwidth measured in the same run (`decode.Bandwidth`).
The link in the PyTorch loops is a two-layer MLP of the official form's size; it is < 1% of a step.

Results go to `benchmarks/results/paper-sizes-<device>.json` (an existing file is kept unless `--overwrite`) and
a markdown table to stdout. `--budget-s` skips the models that would start after that many seconds.

Usage:
  python benchmarks/paper_sizes.py [--models meta-llama/Llama-3.2-1B-Instruct ...] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from decode import Bandwidth, weight_bytes  # noqa: E402

from rmas_jax.generation.sampler import generate  # noqa: E402
from rmas_jax.latent.rollout import latent_rollout  # noqa: E402
from rmas_jax.links.recursive_link import RecursiveLink  # noqa: E402
from rmas_jax.models.kv_cache import KVCache  # noqa: E402
from rmas_jax.sharding.table1 import HUB_CONFIGS  # noqa: E402
from rmas_jax.weights.build import abstract_model, new_model  # noqa: E402
from rmas_jax.weights.hf_config import arch_from_hf  # noqa: E402

DEFAULT_MODELS = (
  "meta-llama/Llama-3.2-1B-Instruct",
  "Qwen/Qwen3-1.7B",
  "meta-llama/Llama-3.2-3B-Instruct",
  "google/gemma-3-4b-it",
  "BioMistral/BioMistral-7B",
)


def log(msg: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median_s(fn, repeats: int) -> float:
  """Median wall seconds of `fn()` (which blocks until its result is ready) over `repeats` calls."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def random_model(name: str, dtype):
  """The rmas-jax backbone of `name`'s shape with random weights, initialised on the device in one program."""
  cfg = arch_from_hf(HUB_CONFIGS[name], where=name)
  graphdef, _ = nnx.split(abstract_model(cfg, dtype, scan_layers=True))
  state = jax.jit(lambda: nnx.state(new_model(cfg, dtype=dtype, scan_layers=True, rngs=nnx.Rngs(0))))()
  return cfg, nnx.merge(graphdef, state)


def time_jax(name: str, args, dtype) -> dict:
  cfg, model = random_model(name, dtype)
  sizes = weight_bytes(model)
  link = RecursiveLink(cfg.hidden_size, cfg.hidden_size, rngs=nnx.Rngs(1))
  graphdef, state = nnx.split((model, link))
  t = args.prompt_len
  embeds = jax.random.normal(jax.random.key(2), (1, t, cfg.hidden_size), dtype)
  mask = jnp.ones((1, t), jnp.int32)

  @functools.partial(jax.jit, static_argnames="steps")
  def rollout(state, embeds, mask, steps):
    model, link = nnx.merge(graphdef, state)
    cache = KVCache.init(cfg, 1, t + steps, dtype)
    return latent_rollout(model, link, embeds, mask, cache, steps).hidden

  per = {}
  for steps in (1, args.steps):
    jax.block_until_ready(rollout(state, embeds, mask, steps))  # compiles
    per[steps] = median_s(lambda s=steps: jax.block_until_ready(rollout(state, embeds, mask, s)), args.repeats)
  latent_ms = (per[args.steps] - per[1]) / (args.steps - 1) * 1e3

  prompt = np.random.default_rng(3).integers(0, cfg.vocab_size, t).tolist()
  gen = {}
  for n in (1, args.new_tokens):
    generate(model, [prompt], max_new_tokens=n)  # compiles (the loop is compiled once per budget bucket)
    gen[n] = median_s(lambda n=n: generate(model, [prompt], max_new_tokens=n), args.repeats)
  decode_ms = (gen[args.new_tokens] - gen[1]) / (args.new_tokens - 1) * 1e3
  return dict(
    bytes=sizes,
    prefill_and_first_latent_s=per[1],
    rollout_s=per[args.steps],
    latent_step_ms=latent_ms,
    prefill_and_first_token_s=gen[1],
    generate_s=gen[args.new_tokens],
    decode_step_ms=decode_ms,
  )


def hf_config(name: str):
  import transformers

  fields = dict(HUB_CONFIGS[name])
  fields.setdefault("max_position_embeddings", 131072)
  return transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)


def time_torch(name: str, args) -> dict:
  """The release's latent loop (no cache, then cached) and HF `generate`, in PyTorch eager mode."""
  import torch
  import transformers

  device = "cuda" if torch.cuda.is_available() else "cpu"
  dtype = dict(bfloat16=torch.bfloat16, float32=torch.float32)[args.dtype]
  torch.manual_seed(0)
  with torch.device(device):
    model = transformers.AutoModelForCausalLM.from_config(hf_config(name), dtype=dtype).eval()
    d = model.config.hidden_size
    link = torch.nn.Sequential(
      torch.nn.Linear(d, 2 * d), torch.nn.GELU(), torch.nn.Linear(2 * d, d), torch.nn.LayerNorm(d)
    ).to(dtype)
  decoder = model.get_decoder()
  t = args.prompt_len

  def sync():
    if device == "cuda":
      torch.cuda.synchronize()

  @torch.no_grad()
  def release_loop(steps: int):
    embeds = torch.randn(1, t, d, device=device, dtype=dtype)
    for _ in range(steps):  # the whole sequence again at every step
      h = decoder(inputs_embeds=embeds, use_cache=False).last_hidden_state[:, -1]
      embeds = torch.cat([embeds, link(h)[:, None]], dim=1)
    sync()

  @torch.no_grad()
  def cached_loop(steps: int):
    embeds = torch.randn(1, t, d, device=device, dtype=dtype)
    out = decoder(inputs_embeds=embeds, use_cache=True)
    for _ in range(steps - 1):
      fed = link(out.last_hidden_state[:, -1])[:, None]
      out = decoder(inputs_embeds=fed, past_key_values=out.past_key_values, use_cache=True)
    sync()

  ids = torch.randint(0, model.config.vocab_size, (1, t), device=device)

  @torch.no_grad()
  def hf_generate(n: int):
    model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    sync()

  result = {}
  for label, fn, big in (("release", release_loop, args.steps), ("cached", cached_loop, args.steps),
                         ("generate", hf_generate, args.new_tokens)):  # fmt: skip
    fn(2)  # warm-up (kernels, allocator)
    one, many = (median_s(lambda fn=fn, n=n: fn(n), args.repeats) for n in (1, big))
    result[f"{label}_1_s"], result[f"{label}_s"] = one, many
    result[f"{label}_step_ms"] = (many - one) / (big - 1) * 1e3
  result["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
  result["torch"] = torch.__version__
  result["transformers"] = transformers.__version__
  return result


def table(rows: list[dict], steps: int, new_tokens: int) -> str:
  lines = [
    f"| model | GB read / latent step | latent step ms (× floor) | HF cached ms | HF release-way {steps} steps s "
    "(rmas-jax s) | decode ms (× floor) | HF generate ms/token |",
    "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    j, h = r.get("jax", {}), r.get("torch", {})
    if not j:
      lines.append(f"| {r['model']} | {r.get('error', 'skipped')} |||||")
      continue
    gb = j["bytes"]["latent_step_read"] / 1e9
    ours = j["rollout_s"]

    def f(key, digits=2, h=h):
      return f"{h[key]:.{digits}f}" if key in h else "–"

    lines.append(
      f"| {r['model']} | {gb:.2f} | {j['latent_step_ms']:.2f} ({j['latent_step_ms'] / r['latent_floor_ms']:.1f}×) "
      f"| {f('cached_step_ms')} | {f('release_s')} ({ours:.2f}) "
      f"| {j['decode_step_ms']:.2f} ({j['decode_step_ms'] / r['decode_floor_ms']:.1f}×) | {f('generate_step_ms')} |"
    )
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help=f"known: {', '.join(HUB_CONFIGS)}")
  parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  parser.add_argument("--prompt-len", type=int, default=256)
  parser.add_argument("--steps", type=int, default=32, help="latent steps m")
  parser.add_argument("--new-tokens", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--no-torch", action="store_true", help="skip the HF transformers side")
  parser.add_argument("--budget-s", type=float, default=float("inf"), help="start no model after this many seconds")
  parser.add_argument("--out", default="", help="result file (default benchmarks/results/paper-sizes-<device>.json)")
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)
  unknown = [m for m in args.models if m not in HUB_CONFIGS]
  if unknown:
    parser.error(f"--models: unknown {unknown}; known: {', '.join(HUB_CONFIGS)}")
  if args.steps < 2 or args.new_tokens < 2:
    parser.error("--steps and --new-tokens must be >= 2 (per-step costs are differences to a 1-step run)")

  device = jax.devices()[0]
  tag = re.sub(r"[^a-z0-9]+", "-", f"{device.platform}-{getattr(device, 'device_kind', '')}".lower()).strip("-")
  out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"paper-sizes-{tag}.json")
  if os.path.exists(out) and not args.overwrite:
    out = out.replace(".json", datetime.datetime.now().strftime("-%Y%m%d-%H%M%S.json"))
  log(f"device {device.device_kind} ({device.platform}); results -> {out}")
  dtype = jnp.dtype(args.dtype)
  start = time.perf_counter()
  bandwidth = Bandwidth(1.0, 10)
  log(f"memory bandwidth {bandwidth.best['gb_per_s']:.0f} GB/s ({bandwidth.label})")
  result = dict(
    when=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    device=device.device_kind,
    platform=device.platform,
    jax=jax.__version__,
    settings=dict(vars(args)),
    bandwidth=bandwidth.summary(),
    rows=[],
  )
  for name in args.models:
    row = dict(model=name)
    result["rows"].append(row)
    if time.perf_counter() - start > args.budget_s:
      row["error"] = f"skipped: --budget-s {args.budget_s:g} spent"
      continue
    try:
      log(f"{name}: rmas-jax")
      row["jax"] = time_jax(name, args, dtype)
      gbps = bandwidth.probe()
      row["bandwidth_gb_per_s"] = gbps
      row["latent_floor_ms"] = row["jax"]["bytes"]["latent_step_read"] / gbps / 1e6
      row["decode_floor_ms"] = row["jax"]["bytes"]["decode_step_read"] / gbps / 1e6
      if not args.no_torch:
        log(f"{name}: HF transformers")
        row["torch"] = time_torch(name, args)
    except Exception as e:  # one model's failure (memory, an HF config field) must not lose the others
      row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
      log(f"{name}: {row['error']}")
    jax.clear_caches()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".tmp", "w") as f:
      json.dump(result, f, indent=1)
    os.replace(out + ".tmp", out)
  print(table(result["rows"], args.steps, args.new_tokens))
  log(f"wrote {out} in {time.perf_counter() - start:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
