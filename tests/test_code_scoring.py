"""Code answers are scored by running the benchmark's tests on the model's code in the sandbox."""

import json
import os
import time

import pytest

from rmas_jax.evaluation.code_tests import score_code
from rmas_jax.evaluation.datasets import load_examples
from rmas_jax.tools.sandbox import isolation


def fenced(code: str) -> str:
  return f"Here is my solution.\n```python\n{code}\n```\nDone."


@pytest.fixture(scope="module")
def humaneval():
  return load_examples("humaneval", limit=3)


def test_humaneval_reference_passes_and_wrong_code_fails(humaneval):
  ex = humaneval[0]  # has_close_elements
  right = (
    "def has_close_elements(numbers, threshold):\n"
    "  return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
  )
  assert score_code(fenced(right), ex.answer, ex.meta)
  assert not score_code(fenced(right.replace("< threshold", "<= -1")), ex.answer, ex.meta)
  # The body alone, without the signature, is completed with the problem's prompt.
  body = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
  assert score_code(fenced(body), ex.answer, ex.meta)


def test_strict_needs_a_fenced_block_official_does_not(humaneval):
  ex = humaneval[0]
  bare = (
    "def has_close_elements(numbers, threshold):\n"
    "  return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
  )
  assert not score_code(bare, ex.answer, ex.meta, mode="strict")
  assert score_code(bare, ex.answer, ex.meta, mode="official")
  assert not score_code("I do not know.", ex.answer, ex.meta)


def test_assertion_scripts_with_imports():
  meta = {"harness": "assertions", "test_imports": ["import math"]}
  gold = "assert hyp(3, 4) == 5.0\nassert math.isclose(hyp(1, 1), 2 ** 0.5)\n"
  assert score_code(fenced("def hyp(a, b):\n  return math.sqrt(a * a + b * b)"), gold, meta)
  assert not score_code(fenced("def hyp(a, b):\n  return a + b"), gold, meta)
  assert not score_code(fenced("def hyp(a, b):\n  raise RuntimeError('no')"), gold, meta)


def test_livecodebench_stdin_and_functional_cases():
  stdin_cases = json.dumps([{"input": "3\n1 2 3\n", "output": "6\n", "testtype": "stdin"},
                            {"input": "2\n5 5\n", "output": "10", "testtype": "stdin"}])  # fmt: skip
  reader = "n = int(input())\nprint(sum(map(int, input().split())))"
  assert score_code(fenced(reader), stdin_cases, {"harness": "livecodebench"})
  assert not score_code(fenced("print(6)"), stdin_cases, {"harness": "livecodebench"})
  functional = json.dumps([{"input": "[1, 2, 3]\n2", "output": "[2, 4, 6]", "testtype": "functional"}])
  meta = {"harness": "livecodebench", "metadata": json.dumps({"func_name": "scale"})}
  good = "class Solution:\n  def scale(self, nums: List[int], k: int) -> List[int]:\n    return [x * k for x in nums]"
  assert score_code(fenced(good), functional, meta)
  assert not score_code(fenced(good.replace("x * k", "x + k")), functional, meta)


def test_hanging_code_is_wrong_and_stopped(humaneval):
  ex = humaneval[0]
  start = time.perf_counter()
  assert not score_code(fenced("def has_close_elements(numbers, threshold):\n  while True:\n    pass"), ex.answer,
                        ex.meta, timeout_s=2)  # fmt: skip
  assert time.perf_counter() - start < 10


def test_huge_allocation_is_wrong():
  code = "def f():\n  return len(bytearray(8 * 2**30))"
  assert not score_code(fenced(code), "assert f() > 0\n", {"harness": "assertions"}, memory_mb=512)


def test_fork_bomb_is_contained():
  code = "import os\ndef f():\n  while True:\n    os.fork()"
  start = time.perf_counter()
  assert not score_code(fenced(code), "f()\n", {"harness": "assertions"}, timeout_s=3)
  assert time.perf_counter() - start < 20


def test_writing_outside_the_temp_dir_is_refused(tmp_path):
  if not isolation().filesystem:
    pytest.skip("Landlock unavailable: writes outside the sandbox directory are not blocked on this platform")
  target = tmp_path / "escaped.txt"
  code = f"def f():\n  open({str(target)!r}, 'w').write('x')\n  return 1"
  assert not score_code(fenced(code), "assert f() == 1\n", {"harness": "assertions"})
  assert not os.path.exists(target)
