"""The web app: a Starlette application over the engine, served by uvicorn.

Routes:
  GET  /                      the page (plain HTML, JS and CSS from `static/`; nothing from the network)
  GET  /api/status            loaded style, state, queue length, the styles on offer with their defaults, limits
  POST /api/ask               queue a question: 202 `{id, ahead}`, or 4xx `{error}` for a bad request
  GET  /api/jobs/{id}         a request's state, text so far and result
  GET  /api/jobs/{id}/events  the request's events as server-sent events (replayed from the start)
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from rmas_jax.serve.engine import BadRequest, Engine, Limits

STATIC = os.path.join(os.path.dirname(__file__), "static")
_FILES = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
          "/style.css": ("style.css", "text/css")}  # fmt: skip
# Everything the page needs comes from this server: a CDN could not be reached, and should not be trusted.
_HEADERS = {"Content-Security-Policy": "default-src 'self'", "X-Content-Type-Options": "nosniff"}
KEEPALIVE_S = 15.0
# A request is a question of at most `Limits.question_chars` and a few numbers; anything much larger is not one.
MAX_BODY_BYTES = 64 * 1024


def create_app(engine: Engine) -> Starlette:
  """The application over a (started or not) engine."""

  async def static(request: Request) -> Response:
    name, media_type = _FILES[request.url.path]
    return FileResponse(os.path.join(STATIC, name), media_type=media_type, headers=_HEADERS)

  async def status(request: Request) -> Response:
    return JSONResponse(engine.status())

  async def ask(request: Request) -> Response:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
      return JSONResponse({"error": f"the request body is over {MAX_BODY_BYTES} bytes"}, status_code=413)
    raw = b""
    async for chunk in request.stream():  # a body without a length is cut off at the same bound
      raw += chunk
      if len(raw) > MAX_BODY_BYTES:
        return JSONResponse({"error": f"the request body is over {MAX_BODY_BYTES} bytes"}, status_code=413)
    try:
      body = json.loads(raw)
    # RecursionError: JSON nested a few thousand levels deep; ValueError covers JSONDecodeError.
    except (ValueError, UnicodeDecodeError, RecursionError):
      return JSONResponse({"error": "the request body is not JSON"}, status_code=400)
    try:
      job = engine.submit(body)
    except BadRequest as e:
      return JSONResponse({"error": str(e)}, status_code=e.status)
    return JSONResponse({"id": job.id, "ahead": job.events[0]["ahead"]}, status_code=202)

  def find(request: Request):
    return engine.jobs.get(request.path_params["job_id"])

  async def job(request: Request) -> Response:
    found = find(request)
    if found is None:
      return JSONResponse({"error": "no such request"}, status_code=404)
    return JSONResponse(found.snapshot())

  async def events(request: Request) -> Response:
    found = find(request)
    if found is None:
      return JSONResponse({"error": "no such request"}, status_code=404)

    async def stream():
      index, last = 0, time.monotonic()
      while True:
        new, ended = found.since(index)
        for event in new:
          yield f"data: {json.dumps(event)}\n\n"
        index += len(new)
        if new:
          last = time.monotonic()
        if ended:
          return
        if time.monotonic() - last > KEEPALIVE_S:  # a comment line keeps proxies and browsers from timing out
          yield ": keepalive\n\n"
          last = time.monotonic()
        await asyncio.sleep(0.05)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

  routes = [Route(path, static) for path in _FILES]
  routes += [
    Route("/api/status", status),
    Route("/api/ask", ask, methods=["POST"]),
    Route("/api/jobs/{job_id}", job),
    Route("/api/jobs/{job_id}/events", events),
  ]
  return Starlette(routes=routes)


def _is_loopback(host: str) -> bool:
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def serve(spec: str, *, host: str = "127.0.0.1", port: int = 8000, workdir: str | None = None,
          checkpoint: str = "latest", max_prompt_tokens: int = 0) -> None:  # fmt: skip
  """Loads `spec`'s system (with `workdir`'s trained links, when given) and serves the app until interrupted."""
  import uvicorn

  if not _is_loopback(host):
    print(f"serve: warning: listening on {host}; anyone who can reach it can run the models", file=sys.stderr)
  engine = Engine(spec, Limits(prompt_tokens=max_prompt_tokens), workdir=workdir, checkpoint=checkpoint)
  engine.start()
  # Open event streams last as long as their request; on Ctrl-C they are cut after a few seconds, not waited for.
  config = uvicorn.Config(create_app(engine), host=host, port=port, log_level="warning", access_log=False,
                          timeout_graceful_shutdown=3)  # fmt: skip
  server = uvicorn.Server(config)
  shown = f"[{host}]" if ":" in host else host
  print(f"serve: http://{shown}:{port}/ (styles: {', '.join(engine.styles)})", file=sys.stderr, flush=True)
  server.run()
