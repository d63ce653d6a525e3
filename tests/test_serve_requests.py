"""The web app's request handling: any JSON body is a 4xx with a message, never a 500; a question that does not fit
is one line of error; `--workdir` links are said.

The app is called as ASGI directly (no network, no browser); the engine's models load only for the last test.
"""

import asyncio
import json
import subprocess
import sys
import time

import pytest

from rmas_jax.serve.app import MAX_BODY_BYTES, create_app
from rmas_jax.serve.engine import Engine, Limits


@pytest.fixture(scope="module")
def engine():
  return Engine("configs/tiny.py")  # not started: requests are validated and queued, never answered


def _post(app, body: bytes, headers=None) -> tuple[int, dict]:
  """POSTs `body` to /api/ask through the ASGI interface; returns the status and the JSON reply."""
  sent = []
  chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]

  async def receive():
    chunk = chunks.pop(0) if chunks else b""
    return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

  async def send(message):
    sent.append(message)

  scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
           "path": "/api/ask", "raw_path": b"/api/ask", "query_string": b"", "root_path": "",
           "headers": [(b"content-type", b"application/json"), *(headers or [])], "client": ("127.0.0.1", 1),
           "server": ("127.0.0.1", 80)}  # fmt: skip
  asyncio.run(app(scope, receive, send))
  status = next(m["status"] for m in sent if m["type"] == "http.response.start")
  payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
  return status, json.loads(payload)


HOSTILE = {
  "huge float": b'{"question": "q", "rounds": 1e999}',
  "huge float temperature": b'{"question": "q", "greedy": false, "temperature": 1e999}',
  "huge float top_p": b'{"question": "q", "top_p": 1e999}',
  "negative huge": b'{"question": "q", "seed": -1e999}',
  "NaN": b'{"question": "q", "latent_steps": NaN}',
  "NaN top_p": b'{"question": "q", "top_p": NaN}',
  "Infinity": b'{"question": "q", "max_new_tokens": Infinity}',
  "huge int": b'{"question": "q", "top_k": ' + b"9" * 400 + b"}",
  "list style": b'{"question": "q", "style": ["sequential"]}',
  "dict style": b'{"question": "q", "style": {"a": 1}}',
  "number style": b'{"question": "q", "style": 3}',
  "list number": b'{"question": "q", "rounds": [1]}',
  "dict number": b'{"question": "q", "rounds": {"a": 1}}',
  "bool number": b'{"question": "q", "rounds": true}',
  "string greedy": b'{"question": "q", "greedy": "yes"}',
  "fraction int": b'{"question": "q", "rounds": 1.5}',
  "word int": b'{"question": "q", "rounds": "two"}',
  "string inf": b'{"question": "q", "rounds": "1e999"}',
  "negative temperature": b'{"question": "q", "greedy": true, "temperature": -1}',
  "list question": b'{"question": ["q"]}',
  "dict question": b'{"question": {"q": 1}}',
  "deeply nested": b'{"question": "q", "rounds": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
  "deeply nested objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
  "top-level list": b"[1, 2, 3]",
  "top-level number": b"1e999",
  "top-level string": b'"question"',
  "null": b"null",
  "not utf-8": b'{"question": "\xff\xfe"}',
  "empty": b"",
  "lone surrogate": b'{"question": "\\ud800"}',
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_any_json_body_is_a_4xx_with_a_message(engine, name):
  app = create_app(engine)
  status, reply = _post(app, HOSTILE[name])
  if name == "lone surrogate":  # a valid JSON string: the question is queued (the model sees a replacement char)
    assert status == 202
    return
  assert 400 <= status < 500, (status, reply)
  assert reply["error"] and "\n" not in reply["error"] and len(reply["error"]) < 300


def test_an_oversized_body_is_413_before_it_is_read_whole(engine):
  app = create_app(engine)
  big = json.dumps({"question": "q" * (MAX_BODY_BYTES + 1)}).encode()
  status, reply = _post(app, big)
  assert status == 413 and "over" in reply["error"]
  status, _ = _post(app, b'{"question": "q"}', headers=[(b"content-length", str(10**12).encode())])
  assert status == 413


def test_numbers_in_range_still_pass(engine):
  app = create_app(engine)
  status, reply = _post(app, b'{"question": "q", "rounds": "2", "top_p": 0.5, "seed": 7.0, "greedy": false,'
                             b' "temperature": 0.7}')  # fmt: skip
  assert status == 202, reply
  job = engine.jobs[reply["id"]]
  assert (job.request.rounds, job.request.top_p, job.request.seed, job.request.temperature) == (2, 0.5, 7, 0.7)


def test_a_question_past_the_prompt_limit_is_one_line_and_the_server_goes_on(request):
  engine = Engine("configs/tiny.py", Limits(prompt_tokens=600))
  engine.start()
  request.addfinalizer(engine.close)
  too_long = engine.submit({"question": "How many? " * 100, "max_new_tokens": 2, "rounds": 1, "latent_steps": 1})
  fine = engine.submit({"question": "What is 2 + 3?", "max_new_tokens": 2, "rounds": 1, "latent_steps": 1})
  deadline = time.monotonic() + 600
  while fine.status not in ("done", "error") and time.monotonic() < deadline:
    time.sleep(0.2)
  assert too_long.status == "error"
  assert too_long.error.startswith("the question is too long: ") and "the limit is 600" in too_long.error
  assert "\n" not in too_long.error
  assert fine.status == "done", fine.error
  assert engine.status()["links"].startswith("fresh links (seed 0)")


def test_serve_workdir_problems_are_one_line_before_anything_loads(tmp_path):
  for workdir, expected in ((tmp_path / "none", "no such directory"), (tmp_path, "holds no checkpoints/")):
    result = subprocess.run([sys.executable, "-m", "rmas_jax", "serve", "--config", "configs/tiny.py", "--workdir",
                             str(workdir), "--port", "1"], capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"error: --workdir {workdir}: {expected}")


def test_serve_workdir_answers_with_the_trained_links_and_says_which(tmp_path, request):
  import jax
  from flax import nnx

  from rmas_jax.config_lib import load_config
  from rmas_jax.links.recursive_link import LinkParam
  from rmas_jax.patterns.from_config import load_system
  from rmas_jax.sharding.placement import init_opt_state
  from rmas_jax.training.checkpoints import CheckpointStore
  from rmas_jax.training.optimizer import split_links, stage_optimizer
  from rmas_jax.training.trainer import StagePlan, run_fingerprint

  # A checkpoint as training writes it (step 1, inner stage), with links no fresh system has.
  config = load_config("configs/tiny.py")
  _, links, _ = split_links(load_system(config, progress=False).system)
  links = jax.tree.map(lambda x: x + 0.25, links)
  plan = StagePlan(config.train.inner_steps, config.train.outer_steps)
  opt_state = init_opt_state(stage_optimizer("inner", config.train, plan.steps_in("inner")), links, None)
  with CheckpointStore(tmp_path / "checkpoints", fingerprint=run_fingerprint(config)) as store:
    assert store.save(1, links, opt_state, {})
  (tmp_path / "links_source.json").write_text(json.dumps({"kind": "release", "outer": "repos/outer", "task": "math"}))

  engine = Engine("configs/tiny.py", workdir=str(tmp_path))
  engine.start()
  request.addfinalizer(engine.close)
  job = engine.submit({"question": "What is 2 + 3?", "max_new_tokens": 2, "rounds": 1, "latent_steps": 1})
  deadline = time.monotonic() + 600
  while job.status not in ("done", "error") and time.monotonic() < deadline:
    time.sleep(0.2)
  assert job.status == "done", job.error
  said = f"trained links: step 1 (latest) of {tmp_path / 'checkpoints'}; from the release (outer repos/outer, " \
    "task math)"
  assert engine.status()["links"] == said
  assert job.events[1]["links"] == said  # the page's "started" event carries it too
  served = nnx.state(engine.current.loaded.system, LinkParam)
  for a, b in zip(jax.tree.leaves(served), jax.tree.leaves(links), strict=True):
    assert (a == b).all()
