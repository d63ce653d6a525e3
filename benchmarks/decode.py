"""Decoder speed on the real small models, against the memory-bandwidth floor of the same machine.

For each model this times, after a warm-up call that compiles:

* prefill of a random prompt of `--prompt-len` tokens into a KV cache of `--cache-len` slots;
* a decode step: one token in through `input_ids`, LM head on, greedy next token out;
* a latent step: one vector in through `inputs_embeds`, no LM head, the final hidden state fed back.

A batch-1 step reads every weight it uses once, so it cannot beat `bytes read / memory bandwidth`. The
bandwidth is measured in the same run with jit-compiled fp32 matrix-vector products over a ~1 GiB matrix (the
fastest of a few shapes and both orientations), and each step is reported as a multiple of its floor. The
decode floor counts the transformer blocks, the final norm and the LM-head matrix (the embedding table when
tied; the one-row embedding lookup is left out); the latent floor counts only the blocks and the final norm.
KV-cache reads are recorded but not in the floor.

Results go to `benchmarks/results/decode-<platform>.json` (an existing file is replaced only with
`--overwrite`; otherwise a timestamped name is used) and a markdown table goes to stdout.

Usage:
  python benchmarks/decode.py [--models smollm2-135m-instruct gemma3-270m ...] [--quick] [--overwrite]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# Run as `python benchmarks/decode.py` from a checkout, the package is not on the path unless installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rmas_jax.models.kv_cache import KVCache  # noqa: E402
from rmas_jax.weights.pretrained import load_pretrained  # noqa: E402

DEFAULT_MODELS = ("smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-0.5b-instruct")
KNOWN_MODELS = DEFAULT_MODELS + ("qwen2.5-coder-1.5b-instruct",)
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MiB = 1 << 20


def log(message: str) -> None:
  """Progress on stderr, so stdout carries only the table."""
  print(f"[decode-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def summary(seconds: list[float]) -> dict[str, Any]:
  """Median, min and all samples of a list of durations, in milliseconds."""
  ms = [s * 1e3 for s in seconds]
  return {
    "median_ms": statistics.median(ms),
    "min_ms": min(ms),
    "n": len(ms),
    "samples_ms": [round(x, 4) for x in ms],
  }


# --- memory bandwidth ---------------------------------------------------------------------------------------


@jax.jit
def _matvec_rows(w, x):
  # The LM head's access pattern: W [V, D] times a vector of length D.
  return w @ x


@jax.jit
def _matvec_cols(x, w):
  # A vector times a matrix stored [in, out] (`nnx.Linear`'s layout; our projections are [out, in], like the head).
  return x @ w


class Bandwidth:
  """Memory bandwidth from fp32 matrix-vector products over a ~1 GiB matrix.

  A survey over a few shapes and both orientations picks the fastest variant (CPU gemv kernels reach the
  bandwidth only for some shapes, and a higher bandwidth gives a lower floor, which never flatters the model).
  That variant's matrix is kept so `probe` can re-measure next to each model: on a shared machine the bandwidth
  drifts by up to 2x between minutes, and a floor is only meaningful against the bandwidth of the same moment.
  """

  def __init__(self, gib: float, reps: int):
    self.reps = reps
    self.total = max(1, int(gib * (1 << 30)) // 4)
    self.survey: list[dict[str, Any]] = []
    best = None
    for cols in (4096, 16384, 65536):
      rows = max(1, self.total // cols)
      # Built on the device by a compiled function rather than transferred, and passed as an argument so that
      # XLA cannot fold the product into a constant.
      w = jax.jit(lambda r=rows, c=cols: jnp.full((r, c), 0.5, jnp.float32))()
      for label, fn, fn_args in (
        ("w@x", _matvec_rows, (w, jnp.ones((cols,), jnp.float32))),
        ("x@w", _matvec_cols, (jnp.ones((rows,), jnp.float32), w)),
      ):
        stats = {"op": label, "shape": [rows, cols], **self._measure(fn, fn_args, reps)}
        self.survey.append(stats)
        if best is None or stats["gb_per_s"] > best[0]["gb_per_s"]:
          best = (stats, fn, fn_args)
      del w, fn_args
    self.best, self._fn, self._args = best
    self.label = f"{self.best['op']} {self.best['shape'][0]}x{self.best['shape'][1]}"

  @staticmethod
  def _measure(fn, fn_args, reps: int) -> dict[str, Any]:
    jax.block_until_ready(fn(*fn_args))
    times = []
    for _ in range(reps):
      start = time.perf_counter()
      jax.block_until_ready(fn(*fn_args))
      times.append(time.perf_counter() - start)
    stats = summary(times)
    stats["gb_per_s"] = _nbytes(fn_args) / (stats["median_ms"] / 1e3) / 1e9
    return stats

  def probe(self) -> float:
    """GB/s of the surveyed best variant, measured now."""
    return self._measure(self._fn, self._args, self.reps)["gb_per_s"]

  def summary(self) -> dict[str, Any]:
    return {
      "matrix_bytes": self.total * 4,
      "gb_per_s": self.best["gb_per_s"],
      "best": self.label,
      "variants": self.survey,
    }


# --- compiled steps -----------------------------------------------------------------------------------------
# Weights enter as the `state` argument and the module is rebuilt inside, so they stay device buffers rather
# than being baked into the executable as constants. The cache is donated and returned so that XLA writes the
# new slots in place instead of copying the whole cache every step.


@functools.partial(jax.jit, static_argnames=("cfg", "batch", "length", "dtype"))
def _empty_cache(cfg, batch: int, length: int, dtype) -> KVCache:
  return KVCache.init(cfg, batch, length, dtype)


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def prefill_step(graphdef, state, ids, cache):
  # Like the sampler's prefill: logits of every position, then the last one.
  model = nnx.merge(graphdef, state)
  out = model(ids, cache=cache, return_logits=True)
  return out.cache, out.logits[:, -1], out.hidden[:, -1:]


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def prefill_last_step(graphdef, state, ids, cache):
  # What prefill costs when the LM head runs on the last position only, the only one generation needs.
  model = nnx.merge(graphdef, state)
  out = model(ids, cache=cache, return_logits=False)
  return out.cache, model.logits(out.hidden[:, -1:])[:, 0], out.hidden[:, -1:]


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def decode_step(graphdef, state, token, cache):
  model = nnx.merge(graphdef, state)
  out = model(token, cache=cache, return_logits=True)
  # Greedy choice inside the step, so each step's input is the previous step's output as in real decoding.
  next_token = jnp.argmax(out.logits[:, -1], axis=-1).astype(jnp.int32)[:, None]
  return out.cache, next_token


@functools.partial(jax.jit, static_argnames=("graphdef",), donate_argnames=("cache",))
def latent_step(graphdef, state, embeds, cache):
  model = nnx.merge(graphdef, state)
  out = model(inputs_embeds=embeds, cache=cache, return_logits=False)
  return out.cache, out.hidden


def _nbytes(tree) -> int:
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def weight_bytes(model) -> dict[str, int]:
  """Bytes of the weight groups that a batch-1 step streams from memory."""
  blocks = _nbytes(nnx.state(model.layers, nnx.Param))
  final_norm = _nbytes(nnx.state(model.norm, nnx.Param))
  embedding = _nbytes(nnx.state(model.embed_tokens, nnx.Param))
  head = embedding if model.lm_head is None else _nbytes(model.lm_head[...])
  return {
    "all_params": _nbytes(nnx.state(model, nnx.Param)),
    "blocks": blocks,
    "final_norm": final_norm,
    "embedding": embedding,
    "lm_head": head,
    "decode_step_read": blocks + final_norm + head,
    "latent_step_read": blocks + final_norm,
  }


def _timed(fn, *args):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


def bench_model(name: str, args: argparse.Namespace, bandwidth: Bandwidth) -> dict[str, Any]:
  """Loads one model and times its prefill, decode and latent steps."""
  log(f"{name}: loading weights ({args.dtype})")
  start = time.perf_counter()
  model = load_pretrained(name, dtype=args.dtype, with_tokenizer=False).model
  load_s = time.perf_counter() - start
  cfg, dtype = model.cfg, model.dtype
  graphdef, state = nnx.split(model)
  sizes = weight_bytes(model)
  batch, prompt_len, cache_len = args.batch, args.prompt_len, args.cache_len
  kv_bytes = 2 * cfg.num_layers * batch * cache_len * cfg.num_kv_heads * cfg.head_dim * jnp.dtype(dtype).itemsize

  def fresh_cache():
    return jax.block_until_ready(_empty_cache(cfg, batch, cache_len, dtype))

  ids = jax.random.randint(jax.random.key(args.seed), (batch, prompt_len), 0, cfg.vocab_size, jnp.int32)

  def time_prefill(fn, label):
    log(f"{name}: {label} T={prompt_len} (compile + {args.prefill_reps} runs)")
    _, first = _timed(fn, graphdef, state, ids, fresh_cache())
    times = []
    for _ in range(args.prefill_reps):
      out, seconds = _timed(fn, graphdef, state, ids, fresh_cache())
      times.append(seconds)
    stats = summary(times)
    stats["first_call_s"] = first
    stats["tokens_per_s"] = batch * prompt_len / (stats["median_ms"] / 1e3)
    return stats, out

  def time_steps(fn, x, cache, label):
    log(f"{name}: {label} step (compile + {args.steps} steps)")
    (cache, x), first = _timed(fn, graphdef, state, x, cache)
    times = []
    for _ in range(args.steps):
      (cache, x), seconds = _timed(fn, graphdef, state, x, cache)
      times.append(seconds)
    stats = summary(times)
    stats["first_call_s"] = first
    stats["context_range"] = [prompt_len + 1, prompt_len + 1 + args.steps]
    # The same number of steps dispatched back to back and waited for once: host overhead then overlaps the
    # device work, as in a compiled generation loop. Matters on accelerators, where a step is sub-millisecond.
    start = time.perf_counter()
    for _ in range(args.steps):
      cache, x = fn(graphdef, state, x, cache)
    jax.block_until_ready(x)
    stats["pipelined_mean_ms"] = (time.perf_counter() - start) / args.steps * 1e3
    return stats, x

  prefill_last, _ = time_prefill(prefill_last_step, "prefill, LM head on the last position")
  prefill, (cache, logits, embeds) = time_prefill(prefill_step, "prefill, LM head on all positions")
  bw_before = bandwidth.probe()
  token = jnp.argmax(logits, axis=-1).astype(jnp.int32)[:, None]
  decode, token = time_steps(decode_step, token, cache, "decode")
  # A fresh prefill so the latent steps see the same context lengths as the decode steps.
  cache, _, _ = prefill_step(graphdef, state, ids, fresh_cache())
  latent, embeds = time_steps(latent_step, embeds, cache, "latent")
  bw_after = bandwidth.probe()
  bw_gbs = (bw_before + bw_after) / 2
  log(f"{name}: bandwidth {bw_before:.1f} GB/s before the steps, {bw_after:.1f} after")
  if abs(bw_before - bw_after) > 0.15 * bw_gbs:
    log(f"{name}: warning: the bandwidth drifted during the measurement; the floor ratios are approximate")

  for stats, read in ((decode, sizes["decode_step_read"]), (latent, sizes["latent_step_read"])):
    stats["floor_ms"] = read / (bw_gbs * 1e9) * 1e3
    stats["x_floor"] = stats["median_ms"] / stats["floor_ms"]
    stats["tokens_per_s"] = batch / (stats["median_ms"] / 1e3)
    stats["effective_gb_per_s"] = read / (stats["median_ms"] / 1e3) / 1e9
  sanity = {
    "decode_tokens_in_vocab": bool(jnp.all((token >= 0) & (token < cfg.vocab_size))),
    "latent_hidden_finite": bool(jnp.all(jnp.isfinite(embeds))),
  }

  return {
    "model": name,
    "dtype": args.dtype,
    "family": cfg.family,
    "config": {
      "hidden_size": cfg.hidden_size,
      "intermediate_size": cfg.intermediate_size,
      "num_layers": cfg.num_layers,
      "num_heads": cfg.num_heads,
      "num_kv_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim,
      "vocab_size": cfg.vocab_size,
      "tie_embeddings": cfg.tie_embeddings,
    },
    "num_params": cfg.num_params,
    "bytes": sizes,
    "kv_cache_bytes": kv_bytes,
    "load_s": load_s,
    "bandwidth_gb_per_s": {"before": bw_before, "after": bw_after, "used": bw_gbs},
    "prefill": prefill,
    "prefill_last_position_head": prefill_last,
    "decode": decode,
    "latent": latent,
    "sanity": sanity,
  }


# --- reporting ----------------------------------------------------------------------------------------------


def _git_revision() -> str | None:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
  except (OSError, subprocess.CalledProcessError):
    return None
  return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment() -> dict[str, Any]:
  import flax
  import jaxlib

  device = jax.devices()[0]
  return {
    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "command": shlex.join([os.path.basename(sys.executable)] + sys.argv),
    "platform": device.platform,
    "device_kind": device.device_kind,
    "device_count": jax.device_count(),
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
    "flax": flax.__version__,
    "python": platform.python_version(),
    "cpu_count": os.cpu_count(),
    "machine": platform.machine(),
    "git": _git_revision(),
    "env": {k: os.environ[k] for k in ("XLA_FLAGS", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES") if k in os.environ},
  }


def markdown(result: dict[str, Any]) -> str:
  env, bw, s = result["environment"], result["bandwidth"], result["settings"]
  lines = [
    f"Device: {env['device_kind']} ({env['platform']}, {env['cpu_count']} CPUs), jax {env['jax']}, "
    f"{env['date'][:10]}, {s['dtype']}. Bandwidth: best fp32 mat-vec over {bw['matrix_bytes'] / (1 << 30):.1f} GiB "
    f"({bw['best']}), re-measured around each model's steps. Batch {s['batch']}, prompt {s['prompt_len']} random "
    f"tokens, cache {s['cache_len']} slots; medians of {s['steps']} steps / {s['prefill_reps']} prefills.",
    "",
    "| model | weights MB | GB/s | prefill ms (tok/s) | prefill, last-pos head ms | decode ms | floor ms "
    "| x floor | tok/s | latent ms | floor ms | x floor | latent steps/s |",
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
  ]
  for m in result["models"]:
    p, pl, d, lt = m["prefill"], m["prefill_last_position_head"], m["decode"], m["latent"]
    lines.append(
      f"| {m['model']} | {m['bytes']['all_params'] / MiB:.0f} | {m['bandwidth_gb_per_s']['used']:.1f} "
      f"| {p['median_ms']:.0f} ({p['tokens_per_s']:.0f}) | {pl['median_ms']:.0f} "
      f"| {d['median_ms']:.1f} | {d['floor_ms']:.1f} | {d['x_floor']:.2f} | {d['tokens_per_s']:.1f} "
      f"| {lt['median_ms']:.1f} | {lt['floor_ms']:.1f} | {lt['x_floor']:.2f} | {lt['tokens_per_s']:.1f} |"
    )
  lines += [
    "",
    "Floors: decode reads the blocks, final norm and LM-head matrix once; latent reads the blocks and final norm. "
    "First calls (compile + run), prefill / decode / latent, in s: "
    + "; ".join(
      f"{m['model']} {m['prefill']['first_call_s']:.1f} / {m['decode']['first_call_s']:.1f} / "
      f"{m['latent']['first_call_s']:.1f}"
      for m in result["models"]
    )
    + ".",
  ]
  return "\n".join(lines)


def output_path(platform_name: str, overwrite: bool) -> tuple[str, bool]:
  """Where to write, and whether that is a fallback name because the default one exists."""
  default = os.path.join(RESULTS_DIR, f"decode-{platform_name}.json")
  if overwrite or not os.path.exists(default):
    return default, False
  stamp = time.strftime("%Y%m%d-%H%M%S")
  return os.path.join(RESULTS_DIR, f"decode-{platform_name}-{stamp}.json"), True


def write_atomic(path: str, payload: dict[str, Any]) -> None:
  """Writes JSON through a temporary file in the same directory, so a reader never sees half a file."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".decode-", suffix=".json.tmp", dir=os.path.dirname(path))
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(payload, f, indent=2)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help=f"known: {', '.join(KNOWN_MODELS)}")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--prompt-len", type=int, default=128)
  parser.add_argument("--cache-len", type=int, default=512)
  parser.add_argument("--steps", type=int, default=30, help="timed decode and latent steps")
  parser.add_argument("--prefill-reps", type=int, default=5)
  parser.add_argument("--bandwidth-reps", type=int, default=10)
  parser.add_argument("--bandwidth-gib", type=float, default=1.0, help="size of the mat-vec matrix")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--quick", action="store_true", help="fewer repetitions (10 steps, 2 prefills, 4 mat-vecs)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing decode-<platform>.json")
  args = parser.parse_args(argv)
  if args.quick:
    args.steps, args.prefill_reps, args.bandwidth_reps = min(args.steps, 10), min(args.prefill_reps, 2), 4
  # Each phase writes the prompt, one warm-up step, the blocked steps and the pipelined steps.
  needed = args.prompt_len + 2 * args.steps + 1
  if needed > args.cache_len:
    parser.error(f"--cache-len {args.cache_len} is too short for the prompt and 2 x steps + 1 ({needed} slots)")
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  env = environment()
  log(f"device {env['device_kind']} ({env['platform']}), jax {env['jax']}, models: {', '.join(args.models)}")
  log(f"bandwidth: fp32 mat-vecs over {args.bandwidth_gib} GiB, 3 shapes x 2 orientations x {args.bandwidth_reps} runs")
  bandwidth = Bandwidth(args.bandwidth_gib, args.bandwidth_reps)
  log(f"bandwidth: {bandwidth.best['gb_per_s']:.1f} GB/s ({bandwidth.label})")

  models = []
  for name in args.models:
    models.append(bench_model(name, args, bandwidth))
    d, lt = models[-1]["decode"], models[-1]["latent"]
    log(
      f"{name}: decode {d['median_ms']:.2f} ms ({d['x_floor']:.2f}x floor; pipelined {d['pipelined_mean_ms']:.2f}), "
      f"latent {lt['median_ms']:.2f} ms ({lt['x_floor']:.2f}x floor; pipelined {lt['pipelined_mean_ms']:.2f})"
    )

  result = {
    "benchmark": "decode",
    "environment": env,
    "settings": {
      k: getattr(args, k)
      for k in ("dtype", "batch", "prompt_len", "cache_len", "steps", "prefill_reps", "bandwidth_reps", "quick")
    },
    "bandwidth": bandwidth.summary(),
    "floors": "decode: (blocks + final norm + LM-head matrix) bytes / bandwidth; latent: (blocks + final norm) "
    "bytes / bandwidth; KV-cache reads not included; bandwidth: mean of the best mat-vec measured just before "
    "and just after each model's decode and latent steps",
    "models": models,
  }
  path, fallback = output_path(env["platform"], args.overwrite)
  write_atomic(path, result)
  print(markdown(result))
  rel = os.path.relpath(path)
  if fallback:
    log(f"decode-{env['platform']}.json exists (pass --overwrite to replace it); wrote {rel} instead")
  else:
    log(f"wrote {rel}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
