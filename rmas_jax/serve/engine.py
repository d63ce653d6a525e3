"""The web app's engine: one loaded system kept warm, a queue answered one request at a time, and each request's
events (queue position, turns, streamed text, the inspector) kept for the page to read.

All model work happens on one worker thread, so requests never run at once and never compete for the CPU or
accelerator; the web server's threads only validate requests and read events.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import importlib.util
import itertools
import math
import os
import sys
import threading
import time
import traceback
from typing import Any

from rmas_jax.patterns.graph import PATTERNS
from rmas_jax.prompt_limits import PromptTooLongError, check_question_fits


class BadRequest(ValueError):
  """A request the server refuses; `status` is its HTTP status (4xx)."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
  """What a request may ask for (the page shows these; the server enforces them)."""

  rounds: tuple[int, int] = (1, 8)
  latent_steps: tuple[int, int] = (1, 64)
  max_new_tokens: tuple[int, int] = (1, 1024)
  top_k: tuple[int, int] = (0, 1000)
  inspect_k: tuple[int, int] = (1, 20)
  question_chars: int = 4000
  queue: int = 16
  prompt_tokens: int = 0  # a longest prompt, latent slots included (0: only the agents' contexts bound it)


@dataclasses.dataclass(frozen=True)
class AskRequest:
  """One validated request."""

  question: str
  style: str
  rounds: int
  latent_steps: int
  max_new_tokens: int
  greedy: bool
  temperature: float
  top_p: float
  top_k: int
  seed: int
  inspect_k: int


@dataclasses.dataclass
class Style:
  """A choosable style: its config spec and the config (cheap to load; the models are loaded on use)."""

  name: str
  spec: str
  config: Any

  def describe(self) -> dict:
    c = self.config
    g, inf = c.generation, c.inference
    return {
      "name": self.name,
      "spec": self.spec,
      "models": {a["role"]: a["model"] for a in c.agents},
      "defaults": dict(
        rounds=inf.rounds,
        latent_steps=inf.latent_steps,
        max_new_tokens=g.max_new_tokens,
        greedy=g.greedy,
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=g.top_k,
        seed=c.seed,
        inspect_k=5,
      ),  # fmt: skip
    }


def _style_name(config) -> str:
  pattern = config.get("pattern")
  return (pattern.get("name") if pattern else None) or config.style


def discover_styles(spec: str) -> dict[str, Style]:
  """The styles the page offers, the served config's first.

  A config file whose presets span several styles (`configs/tiny.py`) offers each of them; the built-in styles it
  does not cover are taken from their own files next to it (`configs/mixture.py` beside `configs/sequential.py`).
  """
  from rmas_jax.config_lib import load_config

  served = load_config(spec)
  styles = {_style_name(served): Style(_style_name(served), spec, served)}
  path = spec.partition(":")[0]
  module_spec = importlib.util.spec_from_file_location(f"rmas_serve_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  candidates = [f"{path}:{p}" for p in getattr(module, "PRESETS", {})]
  directory = os.path.dirname(path)
  candidates += [os.path.join(directory, f"{name}.py") for name in PATTERNS]
  for candidate in candidates:
    if not os.path.isfile(candidate.partition(":")[0]):
      continue
    try:
      config = load_config(candidate)
    except ValueError:  # a preset that cannot be used here is not offered
      continue
    styles.setdefault(_style_name(config), Style(_style_name(config), candidate, config))
  return styles


def _shown(value: Any) -> str:
  """`repr(value)` cut to a readable length: request values can be megabytes of nested JSON."""
  text = repr(value)
  return text if len(text) <= 60 else text[:57] + "..."


def _number(body: dict, key: str, default, kind, lo=None, hi=None):
  """`body[key]` as a bool, int or finite float within [lo, hi]; `default` when absent. Any other value (a list, a
  dict, a bool for a number, 1e999, NaN, 10**400, a string that is not a number) is a `BadRequest`."""
  value = body.get(key)
  if value is None or value == "":
    return default
  if kind is bool:
    if not isinstance(value, bool):
      raise BadRequest(f"{key}: expected true or false, got {_shown(value)}")
    return value
  if isinstance(value, bool) or not isinstance(value, int | float | str):
    raise BadRequest(f"{key}: expected a number, got {_shown(value)}")
  try:
    real = float(value)
    number = kind(real) if kind is int else real
  except (TypeError, ValueError, OverflowError):  # "abc", 1e999 and NaN as an int, 10**400
    raise BadRequest(f"{key}: expected a finite number, got {_shown(value)}") from None
  if not math.isfinite(real):
    raise BadRequest(f"{key}: expected a finite number, got {_shown(value)}")
  if kind is int and number != real:
    raise BadRequest(f"{key}: expected a whole number, got {_shown(value)}")
  if (lo is not None and number < lo) or (hi is not None and number > hi):
    raise BadRequest(f"{key} must be between {lo} and {hi}, got {_shown(value)}")
  return number


def parse_request(body: Any, styles: dict[str, Style], limits: Limits) -> AskRequest:
  """Validates a request body; raises `BadRequest` with a message naming the field."""
  if not isinstance(body, dict):
    raise BadRequest("expected a JSON object")
  question = body.get("question")
  if not isinstance(question, str) or not question.strip():
    raise BadRequest("the question is empty")
  if len(question) > limits.question_chars:
    raise BadRequest(f"the question is {len(question)} characters long; the limit is {limits.question_chars}")
  style = body.get("style") or next(iter(styles))
  if not isinstance(style, str) or style not in styles:
    raise BadRequest(f"unknown style {_shown(style)}; expected one of {', '.join(styles)}")
  d = styles[style].describe()["defaults"]
  greedy = _number(body, "greedy", d["greedy"], bool)
  temperature = _number(body, "temperature", d["temperature"], float)
  if not greedy and not 0 < temperature <= 10:  # noqa: PLR2004
    raise BadRequest(f"temperature must be in (0, 10] when sampling, got {temperature}")
  if temperature < 0:
    raise BadRequest(f"temperature must be >= 0, got {temperature}")
  top_p = _number(body, "top_p", d["top_p"], float)
  if not 0 < top_p <= 1:
    raise BadRequest(f"top_p must be in (0, 1], got {top_p}")
  return AskRequest(
    question=question.strip(),
    style=style,
    rounds=_number(body, "rounds", d["rounds"], int, *limits.rounds),
    latent_steps=_number(body, "latent_steps", d["latent_steps"], int, *limits.latent_steps),
    max_new_tokens=_number(body, "max_new_tokens", d["max_new_tokens"], int, *limits.max_new_tokens),
    greedy=greedy,
    temperature=temperature,
    top_p=top_p,
    top_k=_number(body, "top_k", d["top_k"], int, *limits.top_k),
    seed=_number(body, "seed", d["seed"], int, 0, 2**31 - 1),
    inspect_k=_number(body, "inspect_k", d["inspect_k"], int, *limits.inspect_k),
  )


class Job:
  """One request: its events in order (the page replays them), and its outcome."""

  def __init__(self, job_id: str, request: AskRequest):
    self.id, self.request = job_id, request
    self.status = "queued"  # queued | running | done | error
    self.events: list[dict] = []
    self.text = ""
    self.result: dict | None = None
    self.error: str | None = None
    self._lock = threading.Lock()

  def emit(self, event: dict) -> None:
    with self._lock:
      if event["type"] in ("loading", "started"):
        self.status = "running"
      elif event["type"] == "text":
        self.text = event["text"]
      elif event["type"] == "done":
        self.status, self.result = "done", event
      elif event["type"] == "error":
        self.status, self.error = "error", event["message"]
      self.events.append(event)

  def since(self, index: int) -> tuple[list[dict], bool]:
    """Events from `index` on, and whether the job has ended."""
    with self._lock:
      return self.events[index:], self.status in ("done", "error")

  def snapshot(self) -> dict:
    with self._lock:
      return {"id": self.id, "status": self.status, "text": self.text, "error": self.error, "result": self.result}


@dataclasses.dataclass
class _Loaded:
  style: str
  loaded: Any  # patterns.from_config.LoadedSystem
  inspector: Any  # inspector.Inspector
  links: str = ""  # which links: "trained links: step N (latest) of DIR/checkpoints ..." or "fresh links (seed S)"


class Engine:
  """Loads the served style, then answers queued requests one at a time on its own thread.

  Args:
    spec: the served config (`configs/<style>.py[:preset]`).
    limits: request limits.
    workdir: a training run of `spec`'s config whose links the served style answers with; the other styles on
      offer have other link designs and keep fresh links.
    checkpoint: which of `workdir`'s checkpoints, "latest" or "best".
  """

  def __init__(self, spec: str, limits: Limits | None = None, *, workdir: str | None = None,
               checkpoint: str = "latest"):  # fmt: skip
    self.limits = limits or Limits()
    self.workdir, self.checkpoint = workdir, checkpoint
    self.styles = discover_styles(spec)
    self.initial = next(iter(self.styles))
    self.state = f"loading {self.initial}"
    self.current: _Loaded | None = None
    self.jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
    self.pending: collections.deque[Job] = collections.deque()
    self.running: Job | None = None
    self._ids = itertools.count(1)
    self._cv = threading.Condition()
    self._thread = threading.Thread(target=self._work, name="rmas-engine", daemon=True)
    self._closing = False

  def start(self) -> None:
    self._thread.start()

  def close(self, timeout: float = 60.0) -> None:
    """Stops the worker once its current request is done and lets go of the loaded system."""
    with self._cv:
      self._closing = True
      self._cv.notify_all()
    if self._thread.is_alive():
      self._thread.join(timeout)
    self.current = None

  # -- the web side ---------------------------------------------------------------------------------------------

  def status(self) -> dict:
    with self._cv:
      return {
        "state": self.state,
        "style": self.current.style if self.current else None,
        "links": self.current.links if self.current else None,
        "queue": len(self.pending) + (self.running is not None),
        "styles": [s.describe() for s in self.styles.values()],
        "limits": dataclasses.asdict(self.limits),
      }

  def submit(self, body: Any) -> Job:
    """Validates and queues a request; raises `BadRequest`."""
    try:
      request = parse_request(body, self.styles, self.limits)
    except BadRequest:
      raise
    except Exception as e:  # whatever a body holds, it is the request's fault: a 400, never a 500
      raise BadRequest(f"the request could not be read ({type(e).__name__})") from None
    with self._cv:
      if len(self.pending) >= self.limits.queue:
        raise BadRequest(f"the queue is full ({self.limits.queue} waiting); try again later", status=429)
      job = Job(str(next(self._ids)), request)
      ahead = len(self.pending) + (self.running is not None)
      job.emit({"type": "queued", "ahead": ahead})
      self.jobs[job.id] = job
      while len(self.jobs) > 64:  # keep recent requests only; a running or queued one is never dropped
        oldest = next(iter(self.jobs.values()))
        if oldest.status in ("queued", "running"):
          break
        self.jobs.popitem(last=False)
      self.pending.append(job)
      self._cv.notify()
    return job

  # -- the worker -----------------------------------------------------------------------------------------------

  def _work(self) -> None:
    from rmas_jax.runtime import enable_compilation_cache

    enable_compilation_cache()
    try:
      self._load(self.initial)
    except ValueError as e:  # a bad --workdir or checkpoint: its one line says it all
      self._set_state(f"error: could not load {self.initial}: {e}")
    except Exception as e:  # keep serving: a later request may load another style
      traceback.print_exc()
      self._set_state(f"error: could not load {self.initial}: {e}")
    while True:
      with self._cv:
        while not self.pending and not self._closing:
          self._cv.wait()
        if self._closing:
          return
        job = self.pending.popleft()
        self.running = job
        for i, waiting in enumerate(self.pending):
          waiting.emit({"type": "queued", "ahead": i + 1})
      try:
        self._answer(job)
      except PromptTooLongError as e:  # the request's fault, said in one line; nothing was allocated for it
        job.emit({"type": "error", "message": str(e)})
      except Exception as e:
        traceback.print_exc()
        job.emit({"type": "error", "message": f"{type(e).__name__}: {e}"})
      finally:
        with self._cv:
          self.running = None

  def _set_state(self, state: str) -> None:
    with self._cv:
      self.state = state
    print(f"serve: {state}", file=sys.stderr, flush=True)

  def _load(self, style: str) -> None:
    import jax

    from rmas_jax.inspector import Inspector
    from rmas_jax.patterns import ask as ask_module
    from rmas_jax.patterns import traced
    from rmas_jax.patterns.from_config import load_system

    if self.current is not None:
      # Drop every reference to the old weights and their compiled programs before the new ones load, so two
      # systems never sit in memory together.
      self.current = None
      traced._turn_fn.cache_clear()
      ask_module._rounds_fn.cache_clear()
      jax.clear_caches()
      gc.collect()
    self._set_state(f"loading {style}")
    start = time.perf_counter()
    config = self.styles[style].config
    loaded = load_system(config, progress=False)
    if self.workdir and style == self.initial:
      from rmas_jax.trained_links import load_trained_links

      links = load_trained_links(config, loaded.system, self.workdir, self.checkpoint)
    else:
      links = f"fresh links (seed {config.seed})"
    self.current = _Loaded(style, loaded, Inspector(loaded.system, loaded.tokenizers, loaded.models), links)
    print(f"serve: {style}: {links}", file=sys.stderr, flush=True)
    self._set_state("ready")
    print(f"serve: {style} loaded in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)

  def _answer(self, job: Job) -> None:
    from rmas_jax.generation.sampler import SamplingConfig
    from rmas_jax.patterns.ask import ask
    from rmas_jax.patterns.from_config import toolbox_of

    req = job.request
    if self.current is None or self.current.style != req.style:
      job.emit({"type": "loading", "style": req.style})
      try:
        self._load(req.style)
      except Exception as e:
        self._set_state(f"error: could not load {req.style}: {e}")
        raise
    cur, config = self.current, self.styles[req.style].config
    check_question_fits(cur.loaded, req.question, rounds=req.rounds, steps=req.latent_steps, task=config.task,
                        max_new_tokens=req.max_new_tokens, max_prompt_tokens=self.limits.prompt_tokens)
    job.emit({"type": "started", "style": req.style, "models": cur.loaded.models, "links": cur.links})
    sampling = SamplingConfig(greedy=req.greedy, temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                              seed=req.seed)  # fmt: skip
    result = ask(cur.loaded.system, cur.loaded.tokenizers, [req.question], rounds=req.rounds,
                 steps=req.latent_steps, max_new_tokens=req.max_new_tokens, task=config.task, sampling=sampling,
                 prompts=cur.loaded.prompts, stop_strings=tuple(config.inference.stop_strings),
                 tools=toolbox_of(config), chunk=config.inference.chunk, max_tool_tokens=config.tools.result_tokens,
                 prefix_reuse=config.inference.get("prefix_reuse", True), trace=True,
                 on_text=lambda _, text: job.emit({"type": "text", "text": text}),
                 on_turn=lambda entry: job.emit({"type": "turn", **entry}))  # fmt: skip
    job.emit({"type": "inspecting"})
    start = time.perf_counter()
    inspector = cur.inspector.inspect(result.trace, [req.question], k=req.inspect_k)
    inspector["wall_s"] = time.perf_counter() - start
    answer = dataclasses.asdict(result.answers[0])
    job.emit({"type": "text", "text": answer["text"]})
    job.emit({"type": "done", "answer": answer, "accounting": result.accounting, "inspector": inspector,
              "request": dataclasses.asdict(req), "models": cur.loaded.models})  # fmt: skip
