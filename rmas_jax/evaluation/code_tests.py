"""Scoring code answers by running the benchmark's tests on the model's code, in the sandbox.

The model's program never runs in this process: every test program goes through `tools.sandbox.run_python`
(subprocess, time/memory/file/task limits, no network and writes only in its temporary directory where the kernel
allows). A program that hangs, crashes, exhausts memory or fails an assertion is wrong; so is an output with no code.

Harnesses (`Example.meta["harness"]`):

- `humaneval`: the answer is HumanEval's `check(candidate)` source; the model's code (after the problem's prompt when
  it does not define the entry point itself) runs, then `check(<entry point>)`.
- `assertions` (MBPP+, and any local code file): the answer is a test script that runs after the code (`test_imports`
  first, when the example has them).
- `livecodebench`: the answer is the public test cases as JSON: `stdin` cases run the program once per case and
  compare its output token by token; `functional` cases call the starter class's method on the JSON inputs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from rmas_jax.evaluation.answers import extract_code, official_extract_code
from rmas_jax.tools.sandbox import run_python

HARNESSES = ("humaneval", "assertions", "livecodebench")

# What solutions commonly use without importing it (LiveCodeBench starter code annotates with `List`).
CODE_PRELUDE = """\
from typing import *
import bisect, collections, functools, heapq, itertools, math, re, string
from collections import Counter, defaultdict, deque
"""


def harness_programs(code: str, gold: str, meta: Mapping) -> list[tuple[str, str | None, str | None]]:
  """The programs that test `code`: (source, stdin, expected stdout or None when the exit status decides).

  Args:
    code: the model's program.
    gold: the example's test material (`Example.answer`).
    meta: the example's meta; `harness` picks the format (default `assertions`).

  Returns:
    One or more programs; the code passes when every one passes.
  """
  harness = meta.get("harness", "assertions")
  if harness == "humaneval":
    entry = meta["entry_point"]
    head = code if f"def {entry}" in code else meta.get("prompt", "") + code
    return [(f"{head}\n\n{gold}\n\ncheck({entry})\n", None, None)]
  if harness == "assertions":
    imports = "\n".join(meta.get("test_imports") or [])
    return [(f"{imports}\n{code}\n\n{gold}\n", None, None)]
  if harness == "livecodebench":
    return _livecodebench_programs(code, gold, meta)
  raise ValueError(f"code_tests: meta['harness']={harness!r}; expected one of {HARNESSES}")


def _livecodebench_programs(code: str, gold: str, meta: Mapping) -> list[tuple[str, str | None, str | None]]:
  cases = json.loads(gold) if isinstance(gold, str) else gold
  if not cases:
    raise ValueError("code_tests: livecodebench example has no test cases")
  programs = []
  functional = [c for c in cases if c.get("testtype") == "functional"]
  for case in cases:
    if case.get("testtype") != "functional":
      programs.append((code, case["input"], case["output"]))
  if functional:
    info = meta.get("metadata") or "{}"
    name = (json.loads(info) if isinstance(info, str) else info).get("func_name")
    if not name:
      raise ValueError("code_tests: functional livecodebench case without metadata.func_name")
    pairs = [
      ([json.loads(x) for x in c["input"].split("\n") if x.strip()], json.loads(c["output"])) for c in functional
    ]
    # The cases travel as JSON text so that the harness never evaluates test data as code.
    check = (
      f"\n\nimport json as _json\n_cases = _json.loads({json.dumps(json.dumps(pairs))})\n"
      f"for _args, _want in _cases:\n"
      f"  assert Solution().{name}(*_args) == _want, (_args, _want)\n"
    )
    programs.append((code + check, None, None))
  return programs


def _same_output(got: str, want: str) -> bool:
  return got.split() == want.split()


def score_code(text: str, gold: str, meta: Mapping, *, mode: str = "strict", timeout_s: float = 10.0,
               memory_mb: int = 2048) -> bool:  # fmt: skip
  """True when the code in `text` passes all of the example's tests in the sandbox.

  Args:
    text: model output; `strict` reads the last fenced Python block (none: wrong), `official` the release's reading.
    gold: the example's test material.
    meta: the example's meta (harness, entry point, prompt, imports, metadata).
    mode: "strict" or "official".
    timeout_s: wall seconds per test program, interpreter start-up included.
    memory_mb: address-space limit per process.

  Returns:
    Whether every test program exited 0 (and printed the expected output, for stdin cases).
  """
  code = extract_code(text) if mode == "strict" else official_extract_code(text)
  if not code or not code.strip():
    return False
  for source, stdin, expected in harness_programs(code, gold, meta):
    result = run_python(source, timeout_s=timeout_s, memory_mb=memory_mb, prelude=CODE_PRELUDE, stdin=stdin,
                        max_output_chars=20_000)  # fmt: skip
    if result.timed_out or result.exit_code != 0 or result.omitted_chars:
      return False
    if expected is not None and not _same_output(result.stdout, expected):
      return False
  return True
