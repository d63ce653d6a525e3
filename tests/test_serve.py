"""The web app and the latent-thought inspector.

* the inspector's nearest-token search against a numpy re-derivation;
* the turn-by-turn rounds (`ask(..., trace=True)`) against the one-program rounds;
* the app in a real browser: Debian's Chromium driven by playwright, a server on loopback with `configs/tiny.py`,
  a question answered with its text streamed, the timeline and the inspector drawn, bad requests refused with a
  4xx and a message on the page, and the server answering the next question, a queued one and another style.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rmas_jax.inspector import Space, nearest_tokens
from rmas_jax.patterns.graph import DISTILLATION
from rmas_jax.patterns.system import build_system, run_rounds, slot_order
from rmas_jax.patterns.traced import run_rounds_traced
from rmas_jax.prompts.slots import SegmentedPrompt, layout
from rmas_jax.weights.tiny import byte_tokenizer
from tiny_models import tiny_agent

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


# -- the nearest-token search ---------------------------------------------------------------------------------------


def numpy_nearest(vectors, table, valid, k):
  """Cosine against a row-normalised table, sorted by numpy: the definition, written out."""
  unit_table = table[:valid] / np.linalg.norm(table[:valid], axis=1, keepdims=True)
  unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
  cos = unit.astype(np.float64) @ unit_table.T.astype(np.float64)
  ids = np.argsort(-cos, axis=1, kind="stable")[:, :k]
  return ids, np.take_along_axis(cos, ids, axis=1)


def test_nearest_tokens_match_numpy():
  rng = np.random.default_rng(0)
  v, d, valid, k = 300, 24, 280, 6
  table = (rng.normal(size=(v, d)) * rng.uniform(0.2, 3.0, size=(v, 1))).astype(np.float32)  # rows of many norms
  vectors = rng.normal(size=(7, d)).astype(np.float32)
  vectors[0] = 4.0 * table[5]  # a scaled token: cosine 1 whatever the norm
  table[290] = vectors[1]  # a padding row past the vocabulary, as close as can be: never returned
  ids, cos, norms = jax.device_get(nearest_tokens(jnp.asarray(vectors), jnp.asarray(table), valid, k=k))
  ref_ids, ref_cos = numpy_nearest(vectors, table, valid, k)
  np.testing.assert_array_equal(ids, ref_ids)
  np.testing.assert_allclose(cos, ref_cos, atol=1e-5)
  np.testing.assert_allclose(norms, np.linalg.norm(vectors, axis=1), rtol=1e-6)
  assert ids[0, 0] == 5 and cos[0, 0] == pytest.approx(1.0, abs=1e-5)
  assert (ids < valid).all()


def test_space_lookup_reports_norms_against_the_scaled_table():
  """Gemma scales its table by sqrt(d) before use: cosines ignore it, the mean token norm includes it."""
  rng = np.random.default_rng(1)
  tok = byte_tokenizer()
  d = 16
  table = rng.normal(size=(320, d)).astype(np.float32)  # 320 rows, 259 tokens: the rest is padding
  backbone = types.SimpleNamespace(embed_tokens=types.SimpleNamespace(embedding=table),
                                   cfg=types.SimpleNamespace(hidden_size=d, embed_scale=True))  # fmt: skip
  space = Space(backbone, tok)
  assert space.valid == len(tok) == 259
  mean = np.linalg.norm(table[:259] * d**0.5, axis=1).mean()
  assert space.mean_norm == pytest.approx(mean, rel=1e-5)
  vectors = rng.normal(size=(3, d)).astype(np.float32)
  found = space.lookup(vectors, k=3)
  ref_ids, ref_cos = numpy_nearest(vectors, table, 259, 3)
  for row, ids, cos, vec in zip(found, ref_ids, ref_cos, vectors, strict=True):
    assert [n["id"] for n in row["nearest"]] == ids.tolist()
    np.testing.assert_allclose([n["cos"] for n in row["nearest"]], cos, atol=1e-5)
    assert row["norm_ratio"] == pytest.approx(np.linalg.norm(vec) / mean, rel=1e-5)
    assert all(n["token"] for n in row["nearest"])


# -- turn-by-turn rounds ----------------------------------------------------------------------------------------------


def test_traced_rounds_equal_the_one_program_rounds():
  """Two rounds of a two-agent system (round 1 without feedback, the last round with it), two examples of different
  lengths."""
  steps, rounds = 2, 2
  system = build_system(DISTILLATION, {"expert": tiny_agent("qwen2", 48), "learner": tiny_agent("llama3", 32)}, seed=2)
  rng = np.random.default_rng(3)

  def prompt(n, slots):
    cuts = sorted(rng.choice(np.arange(1, n), size=len(slots), replace=False)) if slots else []
    ids = rng.integers(3, 128, n)
    return SegmentedPrompt(segments=tuple(tuple(int(x) for x in s) for s in np.split(ids, cuts)), slots=slots)

  lays = []
  for r in range(rounds):
    slots = {role: slot_order(DISTILLATION, role, r == 0) for role in DISTILLATION.roles}
    lays.append({role: layout([prompt(n, s) for n in (9, 5)], s, steps, 32) for role, s in slots.items()})
  graphdef, state = nnx.split(system)
  whole = jax.jit(lambda s, f, la: run_rounds(nnx.merge(graphdef, s), f, None, la, steps=steps))
  expected = whole(state, lays[0], lays[-1])
  seen = []
  got, turns = run_rounds_traced(system, lays, steps=steps, on_turn=seen.append)
  np.testing.assert_allclose(got.embeds, expected.embeds, atol=2e-5)
  np.testing.assert_array_equal(got.mask, expected.mask)
  # the expert thinks every round; the learner thinks in round 1 (its feedback) and writes in round 2
  assert [(t.round, t.role) for t in turns] == [(1, "expert"), (1, "learner"), (2, "expert")]
  assert [(e["round"], e["role"], e["kind"], e["latent_steps"]) for e in seen] == [
    (t.round, t.role, "think", steps) for t in turns
  ]
  assert turns[0].thoughts.shape == (2, steps, 48) and turns[0].sent["expert->learner"].shape == (2, steps, 32)
  assert set(turns[-1].sent) == {"expert->learner"}  # the last round sends no feedback


# -- the app in a browser ---------------------------------------------------------------------------------------------


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _get(url: str) -> dict:
  with urllib.request.urlopen(url, timeout=30) as r:
    return json.load(r)


def _post(url: str, body) -> tuple[int, dict]:
  data = body if isinstance(body, bytes) else json.dumps(body).encode()
  req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
  try:
    with urllib.request.urlopen(req, timeout=30) as r:
      return r.status, json.load(r)
  except urllib.error.HTTPError as e:
    return e.code, json.load(e)


def _events(url: str) -> list[dict]:
  """A finished request's events, replayed by its server-sent-event stream (which then ends)."""
  with urllib.request.urlopen(url, timeout=60) as r:
    lines = r.read().decode().splitlines()
  return [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]


def _wait_done(base: str, job_id: str, timeout: float = 600) -> dict:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    snap = _get(f"{base}/api/jobs/{job_id}")
    if snap["status"] in ("done", "error"):
      return snap
    time.sleep(0.2)
  raise TimeoutError(f"request {job_id} did not finish")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  port = _free_port()
  log_path = tmp_path_factory.mktemp("serve") / "server.log"
  env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
  cmd = [sys.executable, "-m", "rmas_jax", "serve", "--config", "configs/tiny.py", "--port", str(port)]
  with open(log_path, "w") as log:
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
  base = f"http://127.0.0.1:{port}"
  try:
    deadline = time.monotonic() + 600
    while True:
      assert proc.poll() is None, f"the server exited:\n{log_path.read_text()[-3000:]}"
      assert time.monotonic() < deadline, f"the server did not get ready:\n{log_path.read_text()[-3000:]}"
      try:
        if _get(f"{base}/api/status")["state"] == "ready":
          break
      except OSError:
        pass
      time.sleep(0.5)
    yield base
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
  print(log_path.read_text()[-2000:])


@pytest.fixture(scope="module")
def page(server):
  if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
      pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium")
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
  from playwright.sync_api import sync_playwright

  with sync_playwright() as p:
    # playwright's own browser builds cannot be downloaded here; it drives the system Chromium (root: no sandbox)
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(600_000)
    page.goto(server)
    page.wait_for_selector('#server[data-state="ready"]')
    yield page
    browser.close()


def _ask_on_page(page, question: str, **fields) -> None:
  page.fill("#question", question)
  for name, value in fields.items():
    if name == "greedy":
      page.set_checked("#greedy", value)
    elif name == "style":
      page.select_option("#style", value)
    else:
      page.fill(f"#{name.replace('_', '-')}", str(value))
  page.click("#ask")


def _wait_answered(page, previous_job: str | None = None) -> str:
  """Waits until the page shows a finished answer of a request other than `previous_job`; returns its id."""
  page.wait_for_function(
    "prev => { const a = document.getElementById('answer'); return a.dataset.job && a.dataset.job !== prev"
    " && a.dataset.state === 'done'; }",
    arg=previous_job,
  )
  return page.get_attribute("#answer", "data-job")


def test_page_answers_streams_times_and_inspects(server, page, tmp_path):
  _ask_on_page(page, "What is 2 + 3?", rounds=2, latent_steps=3, max_new_tokens=40, greedy=False, seed=3,
               inspect_k=4)  # fmt: skip
  job_id = _wait_answered(page)
  result = _get(f"{server}/api/jobs/{job_id}")["result"]
  answer, inspector = result["answer"], result["inspector"]

  # the answer on the page is the decoded answer, and it arrived in pieces (40 tokens, 16 per chunk)
  assert page.eval_on_selector("#answer", "e => e.textContent") == answer["text"]
  assert answer["decoded_tokens"] == [40]
  texts = [e["text"] for e in _events(f"{server}/api/jobs/{job_id}/events") if e["type"] == "text"]
  assert len(texts) >= 3 and all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
  assert len(texts[0]) < len(texts[-1])

  # the timeline: every agent of every round, with its latent steps and decoded tokens
  rows = page.query_selector_all("#timeline tbody tr.turn")
  cells = [[td.inner_text() for td in row.query_selector_all("td")] for row in rows]
  assert [(c[0], c[1], c[2], c[4], c[5]) for c in cells] == [
    ("1", "planner", "thinks", "3", "0"),
    ("1", "critic", "thinks", "3", "0"),
    ("1", "solver", "thinks", "3", "0"),
    ("2", "planner", "thinks", "3", "0"),
    ("2", "critic", "thinks", "3", "0"),
    ("2", "solver", "writes", "0", "40"),
  ]
  assert all(re.match(r"\d+(\.\d+)? m?s", c[3]) for c in cells)  # a wall time, maybe "(compile ...)" after it
  assert [e["wall_s"] > 0 for e in result["accounting"]["timeline"]] == [True] * 6

  # the inspector: five thinking turns, three steps each, k = 4 tokens per vector, inner and outer
  turns = page.query_selector_all("#inspector details.turn")
  assert [(t.get_attribute("data-round"), t.get_attribute("data-role")) for t in turns] == [
    ("1", "planner"), ("1", "critic"), ("1", "solver"), ("2", "planner"), ("2", "critic")]  # fmt: skip
  planner = turns[0]
  steps = planner.query_selector_all("tr.step")
  assert len(steps) == 3
  first = steps[0].query_selector_all("td")
  assert len(first) == 3  # step, inner(h) in the planner's space, planner->critic in the critic's space
  assert len(first[1].query_selector_all(".tok")) == 4 and len(first[2].query_selector_all(".tok")) == 4
  assert "× mean (planner)" in first[1].inner_text() and "× mean (critic)" in first[2].inner_text()
  data = inspector["questions"][0]["turns"][0]["steps"][0]
  assert first[1].query_selector(".tok").get_attribute("data-id") == str(data["inner"]["nearest"][0]["id"])
  assert first[2].query_selector(".tok").get_attribute("data-id") == str(
    data["sent"]["planner->critic"]["nearest"][0]["id"]
  )
  assert set(inspector["spaces"]) == {"planner", "critic", "solver"}
  assert all(s["vocab"] == 259 and s["mean_token_norm"] > 0 for s in inspector["spaces"].values())

  shot = tmp_path / "serve-tiny.png"
  page.screenshot(path=str(shot), full_page=True)
  assert shot.stat().st_size > 20_000


def test_bad_requests_get_4xx_and_the_server_goes_on(server, page):
  # on the page: an empty question and too many rounds, each refused with its reason
  refused = [("   ", {}, "the question is empty"),
             ("What is 1 + 1?", {"rounds": 99}, "rounds must be between 1 and 8, got 99")]  # fmt: skip
  for question, fields, message in refused:
    with page.expect_response("**/api/ask") as response:
      _ask_on_page(page, question, **fields)
    assert response.value.status == 400
    page.wait_for_selector("#error:not([hidden])")
    assert message in page.inner_text("#error") and page.get_attribute("#error", "data-status") == "400"
  # over HTTP: an unknown style, latent steps out of range, a body that is not JSON
  for body, status, message in [({"question": "q", "style": "nope"}, 400, "unknown style 'nope'"),
                                ({"question": "q", "latent_steps": 0}, 400, "latent_steps must be between 1 and 64"),
                                (b"{not json", 400, "not JSON")]:  # fmt: skip
    code, reply = _post(f"{server}/api/ask", body)
    assert code == status and message in reply["error"]
  assert _get(f"{server}/api/status")["state"] == "ready"

  # the next question is answered
  previous = page.get_attribute("#answer", "data-job")
  _ask_on_page(page, "What is 1 + 1?", rounds=2, latent_steps=3, max_new_tokens=8, greedy=True)
  _wait_answered(page, previous)
  assert page.is_hidden("#error")
  assert len(page.query_selector_all("#timeline tbody tr.turn")) == 6


def test_requests_queue_and_switching_style_swaps_the_models(server):
  body = dict(question="What is 4 + 4?", rounds=2, latent_steps=3, max_new_tokens=8)
  (c1, first), (c2, second) = _post(f"{server}/api/ask", body), _post(f"{server}/api/ask", body)
  assert (c1, c2) == (202, 202)
  assert second["ahead"] >= 1  # the first one is running or waiting ahead of it
  assert _events(f"{server}/api/jobs/{second['id']}/events")[0] == {"type": "queued", "ahead": second["ahead"]}
  assert _wait_done(server, first["id"])["status"] == "done"
  assert _wait_done(server, second["id"])["status"] == "done"

  # the same settings as the `ask --inspect` test below, whose compiled programs then come from JAX's disk cache
  switch = dict(question="What is 6 * 7?", style="distillation", rounds=1, latent_steps=2, max_new_tokens=4)
  code, job = _post(f"{server}/api/ask", switch)
  assert code == 202
  snap = _wait_done(server, job["id"])
  assert snap["status"] == "done", snap["error"]
  timeline = snap["result"]["accounting"]["timeline"]
  assert [(e["role"], e["kind"]) for e in timeline] == [("expert", "think"), ("learner", "write")]
  events = [e["type"] for e in _events(f"{server}/api/jobs/{job['id']}/events")]
  assert events[:3] == ["queued", "loading", "started"]
  status = _get(f"{server}/api/status")
  assert (status["style"], status["state"], status["queue"]) == ("distillation", "ready", 0)


def test_ask_writes_the_inspector_json_and_never_overwrites_it(tmp_path, capsys):
  from rmas_jax.cli import main

  path = tmp_path / "inspect.json"
  argv = ["ask", "--config", "configs/tiny.py:distillation", "--question", "What is 6 * 7?", "--rounds", "1",
          "--latent-steps", "2", "--max-new-tokens", "4", "--inspect", str(path), "--inspect-k", "3"]  # fmt: skip
  assert main(argv) == 0
  found = json.loads(path.read_text())
  assert found["config"] == "configs/tiny.py:distillation" and found["k"] == 3
  (turn,) = found["questions"][0]["turns"]  # one round: the expert thinks, the learner writes
  assert (turn["round"], turn["role"], len(turn["steps"])) == (1, "expert", 2)
  step = turn["steps"][1]
  assert step["step"] == 2 and len(step["inner"]["nearest"]) == 3
  assert step["sent"]["expert->learner"]["to"] == "learner" and len(step["sent"]["expert->learner"]["nearest"]) == 3
  assert [(e["role"], e["kind"]) for e in found["timeline"]] == [("expert", "think"), ("learner", "write")]
  before = path.read_text()
  capsys.readouterr()
  assert main(argv) == 2
  assert "the file exists" in capsys.readouterr().err and path.read_text() == before
