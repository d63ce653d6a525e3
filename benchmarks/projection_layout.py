"""Why backbone projections are stored `[out, in]`: a model's gated MLPs run in one jit-compiled function with
their weights in either layout, the same arithmetic, the same inputs.

For each layout (`[out, in]` as `rmas_jax.models.layers.Linear` stores them, `[in, out]` as `nnx.Linear` does) and
each input shape (one token at batch 1 and 4: the decode and latent steps; a 128-token prompt: prefill), the
model's MLP weights (all layers) are chained as residual blocks and timed after a warm-up call; medians in ms.
The two layouts alternate within each shape, so both see the same minutes.

Results go to `benchmarks/results/projection-layout-<platform>.json` (replaced only with `--overwrite`).

Usage:
  python benchmarks/projection_layout.py [--model qwen2.5-coder-0.5b-instruct] [--repeats 15] [--overwrite]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rmas_jax.results import write_benchmark  # noqa: E402
from rmas_jax.weights.pretrained import load_pretrained  # noqa: E402

# einsum specs of x [B, T, in] against a weight in each layout
SPECS = {"out_in": "bti,oi->bto", "in_out": "bti,io->bto"}


def mlp_chain(spec: str):
  """`x + down(silu(gate(x)) * up(x))` for every layer's weights in turn."""

  def run(weights, x):
    for gate, up, down in weights:
      x = x + jnp.einsum(spec, jax.nn.silu(jnp.einsum(spec, x, gate)) * jnp.einsum(spec, x, up), down)
    return x

  return jax.jit(run)


def median_ms(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args()

  model = load_pretrained(args.model, with_tokenizer=False, progress=False).model
  out_in = [tuple(p.weight[...] for p in (m.gate_proj, m.up_proj, m.down_proj)) for m in (x.mlp for x in model.layers)]
  in_out = [tuple(jnp.asarray(np.ascontiguousarray(np.asarray(w).T)) for w in ws) for ws in out_in]
  weights = {"out_in": out_in, "in_out": in_out}
  fns = {name: mlp_chain(spec) for name, spec in SPECS.items()}
  rows = []
  for batch, tokens in ((1, 1), (4, 1), (1, 128)):
    x = jnp.ones((batch, tokens, model.cfg.hidden_size), model.dtype)
    row = dict(batch=batch, tokens=tokens)
    for name in SPECS:
      row[f"{name}_ms"] = median_ms(fns[name], weights[name], x, repeats=args.repeats)
    row["in_out_over_out_in"] = row["in_out_ms"] / row["out_in_ms"]
    rows.append(row)
    print(row, file=sys.stderr, flush=True)
  out = dict(
    model=args.model,
    layers=len(out_in),
    mlp_bytes=sum(w.size * w.dtype.itemsize for ws in out_in for w in ws),
    device=str(jax.devices()[0]),
    cpu_count=os.cpu_count(),
    date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    repeats=args.repeats,
    rows=rows,
  )
  print("| batch | tokens | [out, in] ms | [in, out] ms | [in, out] / [out, in] |")
  print("|--:|--:|--:|--:|--:|")
  for r in rows:
    print(f"| {r['batch']} | {r['tokens']} | {r['out_in_ms']:.1f} | {r['in_out_ms']:.1f} | "
          f"{r['in_out_over_out_in']:.2f} |")  # fmt: skip
  print(f"written: {write_benchmark(f'projection-layout-{jax.default_backend()}', out, overwrite=args.overwrite)}")


if __name__ == "__main__":
  main()
