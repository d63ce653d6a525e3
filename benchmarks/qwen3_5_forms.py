"""The two forms of Qwen3.5's gated delta rule: how far apart they land, and how fast each prefills.

The chunked form (matrix products within 64-token chunks, a scan over chunks) is what prompts and training use; the
recurrent form (a scan over tokens) is what one-token decode and latent steps use. Both are exact algebra, so they
differ only by floating-point rounding. This script measures:

* the rule alone, on random inputs with Qwen3.5-4B head sizes: each form's outputs and final state against a float64
  token loop written here in numpy, the two forms against each other, and each form's tokens/s;
* a whole random hybrid model (`--hidden`, 3 DeltaNet layers and one gated attention layer) prefilled over a fresh
  decode state both ways: max abs difference of the final hidden states and last logits, and prefill tokens/s.

Times are the median of `--repeats` calls after a warm-up; compile time is reported apart.

Results go to `benchmarks/results/qwen3_5-forms-<platform>.json` (an existing file is replaced only with
`--overwrite`; otherwise a timestamped name is used).

Usage:
  python benchmarks/qwen3_5_forms.py [--lengths 64,256,1024] [--batch 1] [--hidden 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flax import nnx  # noqa: E402

from rmas_jax.models.gated_deltanet import chunked_gated_delta_rule, recurrent_gated_delta_rule  # noqa: E402
from rmas_jax.models.qwen3_5 import Qwen3_5CausalLM, Qwen3_5Config  # noqa: E402
from rmas_jax.results import write_benchmark  # noqa: E402

FORMS = ("chunked", "recurrent")


def reference_rule(q, k, v, g, beta, state):
  """The gated delta rule token by token in float64 numpy: `[B, T, H, d]` inputs, `[B, H, dk, dv]` state."""
  q, k, v, g, beta, s = (np.asarray(a, np.float64) for a in (q, k, v, g, beta, state))
  out = np.zeros(v.shape, np.float64)
  for t in range(q.shape[1]):
    s = s * np.exp(g[:, t])[..., None, None]
    recalled = np.einsum("bhk,bhkv->bhv", k[:, t], s)
    s = s + k[:, t, :, :, None] * (beta[:, t, :, None] * (v[:, t] - recalled))[:, :, None, :]
    out[:, t] = np.einsum("bhk,bhkv->bhv", q[:, t], s)
  return out, s


def timed(fn, *args, repeats: int) -> float:
  """Median seconds of `fn(*args)` over `repeats` calls after a warm-up."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def kernel_row(length: int, repeats: int, seed: int = 0) -> dict:
  """Both forms of the rule alone against the float64 loop on random normalised inputs, and their speed (Qwen3.5-4B
  head sizes dk = dv = 128, 4 value heads)."""
  rng = np.random.default_rng(seed)
  b, h, dk, dv = 1, 4, 128, 128
  unit = lambda x: x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-6)  # noqa: E731
  q = unit(rng.normal(size=(b, length, h, dk))) * dk**-0.5
  k = unit(rng.normal(size=(b, length, h, dk)))
  v = rng.normal(size=(b, length, h, dv))
  g = -np.exp(rng.normal(size=(b, length, h)) - 2.0)  # decays around exp(-0.14): long memory
  beta = 1 / (1 + np.exp(-rng.normal(size=(b, length, h))))
  state = np.zeros((b, h, dk, dv))
  ref_out, ref_state = reference_rule(q, k, v, g, beta, state)
  args = [jnp.asarray(a, jnp.float32) for a in (q, k, v, g, beta, state)]
  row = {"tokens": length, "output_scale": float(np.abs(ref_out).max())}
  outs = {}
  for name, fn in (("chunked", chunked_gated_delta_rule), ("recurrent", recurrent_gated_delta_rule)):
    fn = jax.jit(fn)
    out, final = outs[name] = fn(*args)
    row[f"{name}_vs_float64_output"] = float(np.abs(np.asarray(out, np.float64) - ref_out).max())
    row[f"{name}_vs_float64_state"] = float(np.abs(np.asarray(final, np.float64) - ref_state).max())
    row[f"{name}_tokens_per_s"] = b * length / timed(fn, *args, repeats=repeats)
  row["chunked_vs_recurrent_output"] = float(jnp.max(jnp.abs(outs["chunked"][0] - outs["recurrent"][0])))
  return row


def bench_config(hidden: int) -> Qwen3_5Config:
  """A small hybrid model with Qwen3.5's proportions: one cycle of 3 DeltaNet layers and 1 gated attention layer."""
  heads = max(2, hidden // 64)
  return Qwen3_5Config(vocab_size=1024, hidden_size=hidden, intermediate_size=3 * hidden, num_layers=4,
                       num_heads=heads, num_kv_heads=max(1, heads // 2), head_dim=64, linear_num_key_heads=heads,
                       linear_num_value_heads=2 * heads, linear_key_head_dim=64, linear_value_head_dim=64,
                       layer_types=("linear_attention",) * 3 + ("full_attention",))  # fmt: skip


def random_model(cfg: Qwen3_5Config, seed: int = 0) -> Qwen3_5CausalLM:
  """Random weights with useful scales (the default init is tiny), shared by both forms' models."""
  model = Qwen3_5CausalLM(cfg, scan_layers=False, rngs=nnx.Rngs(seed))
  rng = np.random.default_rng(seed)
  graphdef, state = nnx.split(model)
  state = jax.tree.map(lambda x: x + jnp.asarray(0.05 * rng.normal(size=x.shape), x.dtype), state)
  return nnx.merge(graphdef, state)


def with_form(model: Qwen3_5CausalLM, form: str) -> Qwen3_5CausalLM:
  """The same weights, with every DeltaNet layer set to one form."""
  other = Qwen3_5CausalLM(dataclasses.replace(model.cfg, delta_rule_form=form), scan_layers=False,
                          rngs=nnx.Rngs(0))  # fmt: skip
  nnx.update(other, nnx.state(model))
  return other


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--lengths", default="64,256,1024")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--hidden", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args()
  lengths = [int(x) for x in args.lengths.split(",")]

  kernel = [kernel_row(n, args.repeats) for n in lengths]
  for row in kernel:
    print("kernel", json.dumps(row), file=sys.stderr, flush=True)

  cfg = bench_config(args.hidden)
  base = random_model(cfg)
  models = {form: with_form(base, form) for form in FORMS}
  rng = np.random.default_rng(1)
  prefill, agreement = [], []
  for n in lengths:
    ids = jnp.asarray(rng.integers(0, cfg.vocab_size, (args.batch, n)), jnp.int32)
    outs = {}
    for form, model in models.items():
      graphdef, state = nnx.split(model)

      @jax.jit
      def run(state, ids, graphdef=graphdef):
        m = nnx.merge(graphdef, state)
        out = m(ids, cache=m.init_cache(ids.shape[0], ids.shape[1]), return_logits=False)
        return out.hidden, m.logits(out.hidden[:, -1:])

      start = time.perf_counter()
      compiled = run.lower(state, ids).compile()
      compile_s = time.perf_counter() - start
      outs[form] = compiled(state, ids)
      seconds = timed(compiled, state, ids, repeats=args.repeats)
      row = dict(form=form, tokens=n, batch=args.batch, compile_s=compile_s, seconds=seconds,
                 tokens_per_s=args.batch * n / seconds)  # fmt: skip
      prefill.append(row)
      print("prefill", json.dumps(row), file=sys.stderr, flush=True)
    (hc, lc), (hr, lr) = outs["chunked"], outs["recurrent"]
    row = dict(tokens=n, hidden_max_abs_diff=float(jnp.max(jnp.abs(hc - hr))), hidden_scale=float(jnp.max(jnp.abs(hr))),
               last_logits_max_abs_diff=float(jnp.max(jnp.abs(lc - lr))))  # fmt: skip
    agreement.append(row)
    print("model", json.dumps(row), file=sys.stderr, flush=True)

  out = dict(
    device=str(jax.devices()[0]),
    cpu_count=os.cpu_count(),
    load_average_1m=os.getloadavg()[0],
    date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    model=dict(
      hidden=cfg.hidden_size,
      layers=list(cfg.layer_types),
      linear_heads=[cfg.linear_num_key_heads, cfg.linear_num_value_heads],
      head_dims=[cfg.linear_key_head_dim, cfg.linear_value_head_dim],
      chunk=cfg.chunk_size,
      params=cfg.num_params,
      dtype="float32",
    ),  # fmt: skip
    kernel=kernel,
    model_agreement=agreement,
    prefill=prefill,
  )
  path = write_benchmark(f"qwen3_5-forms-{jax.default_backend()}", out, overwrite=args.overwrite)
  print(json.dumps({k: out[k] for k in ("kernel", "model_agreement", "prefill")}, indent=2))
  print(f"written: {path}")


if __name__ == "__main__":
  main()
