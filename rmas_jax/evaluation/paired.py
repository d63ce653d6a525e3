"""Statistics for comparing systems on the same questions: Wilson score intervals for one accuracy, and the exact
McNemar test for two systems answering the same questions (only the questions where exactly one was right count).

Both are written out here from their definitions, so the report needs no statistics package.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def wilson_interval(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
  """The Wilson score interval of `correct / n` (95 % for the default `z`); (0, 1) when `n` is 0."""
  if n <= 0:
    return 0.0, 1.0
  if not 0 <= correct <= n:
    raise ValueError(f"wilson_interval: correct={correct} is outside [0, {n}]")
  p = correct / n
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_a: int, only_b: int) -> float:
  """Two-sided exact McNemar p-value: under the null each discordant question is a fair coin, so the p-value is
  twice the binomial tail of the rarer side (capped at 1). `only_a`: questions A got right and B wrong."""
  if only_a < 0 or only_b < 0:
    raise ValueError(f"mcnemar_exact: counts must be >= 0, got {only_a}, {only_b}")
  n = only_a + only_b
  if n == 0:
    return 1.0
  k = min(only_a, only_b)
  tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
  return min(1.0, 2 * tail)


def paired_counts(a: Mapping[str, bool], b: Mapping[str, bool]) -> dict:
  """Counts over the questions both systems answered (by id): both right, only A, only B, both wrong.

  Raises:
    ValueError: the two share no question.
  """
  shared = sorted(set(a) & set(b))
  if not shared:
    raise ValueError("paired_counts: the two results share no question id")
  both = sum(a[i] and b[i] for i in shared)
  only_a = sum(a[i] and not b[i] for i in shared)
  only_b = sum(b[i] and not a[i] for i in shared)
  return dict(n=len(shared), both=both, only_a=only_a, only_b=only_b, neither=len(shared) - both - only_a - only_b)
