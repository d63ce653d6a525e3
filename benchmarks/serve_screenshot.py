"""A screenshot of the web app after it has answered a question, with the latent-thought inspector open.

Starts `python -m rmas_jax serve` on loopback with the config (default: the sequential style's real small
agents; loading takes a minute or two and about 4 GB of memory), asks one question in Debian's Chromium (driven
by playwright), waits for the answer and the inspector, and saves a full-page screenshot and the request's result
JSON (answer, accounting, inspector). Existing files are replaced only with `--overwrite`.

Usage:
  python benchmarks/serve_screenshot.py [--config configs/sequential.py] [--out benchmarks/results/serve-screenshot.png]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTION = "Tom has 3 apples and buys 5 more. How many apples does he have?"


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/sequential.py")
  p.add_argument("--out", default="benchmarks/results/serve-screenshot.png")
  p.add_argument("--question", default=QUESTION)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--latent-steps", type=int, default=6)
  p.add_argument("--max-new-tokens", type=int, default=96)
  p.add_argument("--chromium", default="/usr/bin/chromium")
  p.add_argument("--overwrite", action="store_true")
  args = p.parse_args()
  result_path = os.path.splitext(args.out)[0] + ".json"
  for path in (args.out, result_path):
    if os.path.exists(path) and not args.overwrite:
      print(f"error: {path} exists (use --overwrite)", file=sys.stderr)
      return 2

  from playwright.sync_api import sync_playwright

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  base = f"http://127.0.0.1:{port}"
  server = subprocess.Popen([sys.executable, "-m", "rmas_jax", "serve", "--config", args.config, "--port", str(port)],
                            cwd=ROOT)  # fmt: skip
  try:
    with sync_playwright() as pw:
      browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
      page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
      page.set_default_timeout(1_800_000)
      for _ in range(600):  # the page is served while the models load
        try:
          page.goto(base)
          break
        except Exception:
          time.sleep(1)
      page.wait_for_selector('#server[data-state="ready"]')
      page.fill("#question", args.question)
      page.fill("#rounds", str(args.rounds))
      page.fill("#latent-steps", str(args.latent_steps))
      page.fill("#max-new-tokens", str(args.max_new_tokens))
      start = time.perf_counter()
      page.click("#ask")
      page.wait_for_selector('#answer[data-state="done"]')
      print(f"answered in {time.perf_counter() - start:.1f} s", file=sys.stderr)
      page.wait_for_function("document.getElementById('queue-length').textContent === 'queue empty'")
      job = page.get_attribute("#answer", "data-job")
      with urllib.request.urlopen(f"{base}/api/jobs/{job}") as r:
        result = json.load(r)["result"]
      os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
      page.screenshot(path=args.out, full_page=True)
      with open(result_path, "w") as f:
        json.dump(dict(result, config=args.config), f, indent=1)
      browser.close()
  finally:
    server.terminate()
    server.wait(timeout=60)
  print(f"wrote {args.out} and {result_path}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
