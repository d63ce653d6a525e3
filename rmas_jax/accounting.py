"""What a run costs: wall time per stage, compile time, peak memory. Every command reports these as JSON."""

from __future__ import annotations

import contextlib
import resource
import threading
import time

import jax

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")  # fmt: skip
_lock = threading.Lock()
_compile_s = 0.0
_registered = False


def _on_event(name: str, seconds: float, **_) -> None:
  global _compile_s
  if name in _COMPILE_EVENTS:
    with _lock:
      _compile_s += seconds


def compile_seconds() -> float:
  """Seconds spent tracing, lowering and compiling in this process since accounting started."""
  global _registered
  with _lock:
    if not _registered:
      jax.monitoring.register_event_duration_secs_listener(_on_event)
      _registered = True
    return _compile_s


def peak_memory() -> dict[str, int | None]:
  """Peak host resident memory and, where the backend reports it, peak device memory, in bytes."""
  device = None
  stats = jax.local_devices()[0].memory_stats()
  if stats:
    device = stats.get("peak_bytes_in_use")
  return {"host_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "device_peak_bytes": device}


class Stages:
  """Wall time per named stage, and the compile time spent inside them."""

  def __init__(self):
    self.wall_s: dict[str, float] = {}
    self.compile_s = 0.0

  @contextlib.contextmanager
  def stage(self, name: str):
    compile_start, start = compile_seconds(), time.perf_counter()
    try:
      yield
    finally:
      self.wall_s[name] = self.wall_s.get(name, 0.0) + time.perf_counter() - start
      self.compile_s += compile_seconds() - compile_start
