"""Deciding whether a model's text answers an example correctly.

Two modes:

- `strict` (default): the answer must be stated (a box, or an explicit "the answer is" statement); math answers are
  compared by math-verify (symbolic and numeric equivalence), options by exact letter, free-form answers by SQuAD-style
  exact match.
- `official`: the official release's lenient rules (reference §3; see `answers.official_*`), for comparing with the
  paper's numbers. It counts more answers as correct than `strict`: an unparsable multiple-choice answer is read as
  "A", and a math answer matches if its first number has the gold's integer part.

Code is not scored here: running tests is the sandbox runner's job, so `score("code", ...)` raises.
"""

from __future__ import annotations

import collections
import datetime
import re
import string
import threading
from collections.abc import Callable, Sequence

from rmas_jax.evaluation.answers import (
  extract_answer,
  extract_choice,
  last_boxed,
  official_extract_choice,
  official_extract_math,
  official_math_match,
)

MODES = ("strict", "official")

# --- math ------------------------------------------------------------------------------------------------------------


def _math_verify_configs():
  from math_verify import ExprExtractionConfig, LatexExtractionConfig

  # For text without a box, only anchored statements count ("the final answer is 7", "Answer: 7"); math-verify's
  # unanchored mode would otherwise take the last number anywhere in the reasoning.
  anchored = [
    LatexExtractionConfig(try_extract_without_anchor=False),
    ExprExtractionConfig(try_extract_without_anchor=False),
  ]
  return [LatexExtractionConfig(), ExprExtractionConfig()], anchored


def score_math(prediction_text: str, gold: str, *, timeout_s: int = 3) -> bool:
  """True when the model's final math answer equals `gold` up to mathematical equivalence.

  The answer is the last `\\boxed{...}`, handed to math-verify's parser as a box. math-verify is designed to read a
  whole model output, so when there is no box the whole text goes to it, but with its anchored extraction only (an
  explicit "final answer is ..." / "Answer: ..."): a number that merely appears in the reasoning is not an answer.
  Equivalent forms match: 1/2, 0.5 and \\frac{1}{2}; 3 and 3.0; x=3 and 3; 1,000 and 1000.

  math-verify guards parsing and each comparison with `timeout_s` seconds through SIGALRM, which works only in the
  main thread; elsewhere it runs unguarded (score in the main thread or in worker processes, not threads, when the
  outputs may be adversarial, e.g. `9^{9^{9^{9}}}`). A timeout counts as wrong.

  Args:
    prediction_text: model output.
    gold: the gold answer (LaTeX or plain, without `$` or a box).
    timeout_s: whole seconds per parse and per comparison.

  Returns:
    Whether the answer is correct; False when no answer can be read.
  """
  from math_verify import parse, verify

  gold = str(gold).strip()
  if not gold:
    raise ValueError("score_math: gold answer is empty; expected the reference answer string")
  timeout = timeout_s if threading.current_thread() is threading.main_thread() else None
  default, anchored = _math_verify_configs()
  boxed = last_boxed(prediction_text)
  if boxed is not None:
    pred = parse("\\boxed{" + boxed + "}", default, parsing_timeout=timeout)
  else:
    pred = parse(prediction_text, anchored, parsing_timeout=timeout)
  if not pred:
    return False
  gold_parsed = parse("\\boxed{" + gold + "}", default, parsing_timeout=timeout)
  if not gold_parsed:
    # A gold math-verify cannot read can still be matched verbatim.
    return boxed is not None and re.sub(r"\s+", "", boxed) == re.sub(r"\s+", "", gold)
  return bool(verify(gold_parsed, pred, timeout_seconds=timeout))


def official_score_math(prediction_text: str, gold: str) -> bool:
  """The official math scoring (lenient): official extraction, then any of the four official normalisations."""
  return official_math_match(official_extract_math(prediction_text), str(gold)) is not None


# --- multiple choice --------------------------------------------------------------------------------------------------


def _check_gold_letter(gold_letter: str, letters: str) -> str:
  gold = str(gold_letter).strip().upper()
  if len(gold) != 1 or gold not in letters:
    raise ValueError(f"score_choice: gold {gold_letter!r}; expected one letter of {letters!r}")
  return gold


def score_choice(text: str, gold_letter: str, *, letters: str = "ABCD") -> bool:
  """True when the option letter the text commits to (`answers.extract_choice`) is `gold_letter`.

  A text that commits to no option is wrong, whatever the gold letter.
  """
  gold = _check_gold_letter(gold_letter, letters)
  return extract_choice(text, letters) == gold


def official_score_choice(text: str, gold_letter: str, *, letters: str = "ABCD") -> bool:
  """The official multiple-choice scoring (lenient): an unparsable answer is read as "A"."""
  gold = _check_gold_letter(gold_letter, letters)
  return official_extract_choice(text, letters) == gold


# --- free-form answers (SQuAD-style) ----------------------------------------------------------------------------------


def normalize_answer(s: str) -> str:
  """SQuAD normalisation: lowercase, drop punctuation and the articles a/an/the, collapse whitespace."""
  s = str(s).lower()
  s = "".join(ch for ch in s if ch not in set(string.punctuation))
  s = re.sub(r"\b(a|an|the)\b", " ", s)
  return " ".join(s.split())


def _golds(gold: str | Sequence[str]) -> list[str]:
  return [gold] if isinstance(gold, str) else [str(g) for g in gold]


def exact_match(pred: str, gold: str | Sequence[str]) -> bool:
  """SQuAD exact match: `pred` equals the gold (or any of several gold aliases) after `normalize_answer`."""
  p = normalize_answer(pred)
  return any(p == normalize_answer(g) for g in _golds(gold))


def _f1_one(pred: str, gold: str) -> float:
  p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
  if not p or not g:
    # SQuAD: an empty answer scores 1 only against an empty gold.
    return float(p == g)
  same = sum((collections.Counter(p) & collections.Counter(g)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(p), same / len(g)
  return 2 * precision * recall / (precision + recall)


def f1(pred: str, gold: str | Sequence[str]) -> float:
  """SQuAD token F1 between `pred` and the gold (the best over several gold aliases)."""
  return max(_f1_one(pred, g) for g in _golds(gold))


def score_qa(text: str, gold: str | Sequence[str]) -> bool:
  """Exact match of the stated answer (box, else "Final Answer:" line, else the whole stripped text) against gold."""
  stated = extract_answer(text)
  return exact_match(stated if stated is not None else text.strip(), gold)


_DATE_FORMATS = ("%Y-%m-%d", "%B %d %Y", "%b %d %Y", "%d %B %Y", "%d %b %Y", "%m/%d/%Y")


def _as_date(s: str) -> datetime.date | None:
  s = re.sub(r"(\d+)(st|nd|rd|th)\b", r"\1", str(s).strip().rstrip("."))
  s = " ".join(s.replace(",", " ").split())
  for fmt in _DATE_FORMATS:
    try:
      return datetime.datetime.strptime(s, fmt).date()
    except ValueError:
      continue
  return None


def official_score_qa(text: str, gold: str | Sequence[str]) -> bool:
  """The official free-form scoring: the official extraction, then a date match, an EM-normalised match or a
  lowercase match against any gold alias."""
  pred = official_extract_math(text)
  for g in _golds(gold):
    pd, gd = _as_date(pred), _as_date(g)
    if pd is not None and pd == gd:
      return True
    if normalize_answer(pred) == normalize_answer(g) or pred.strip().lower() == g.strip().lower():
      return True
  return False


# --- exact facts (the latent relay) ------------------------------------------------------------------------------


def stated_fact(text: str) -> str:
  """The answer as written, for exact match: the first non-empty line, without surrounding whitespace, quotes or
  backticks and without one closing period (a fact such as a code is asked to be written alone)."""
  line = next((ln for ln in str(text).splitlines() if ln.strip()), "")
  line = line.strip().strip("\"'`").strip()
  return line[:-1].rstrip() if line.endswith(".") else line


def score_exact(text: str, gold: str | Sequence[str]) -> bool:
  """Strict exact match: the stated fact equals the gold character for character (case included)."""
  stated = stated_fact(text)
  return any(stated == g.strip() for g in _golds(gold))


def lenient_score_exact(text: str, gold: str | Sequence[str]) -> bool:
  """Lenient exact match: the gold occurs anywhere in the text as a whole word (not inside a longer code)."""
  return any(re.search(rf"(?<![0-9A-Za-z]){re.escape(g.strip())}(?![0-9A-Za-z])", str(text)) for g in _golds(gold))


# --- dispatch --------------------------------------------------------------------------------------------------------

Scorer = Callable[..., bool]

SCORERS: dict[str, dict[str, Scorer]] = {
  "math": {"strict": score_math, "official": official_score_math},
  "choice": {"strict": score_choice, "official": official_score_choice},
  "qa": {"strict": score_qa, "official": official_score_qa},
  "reasoning": {"strict": score_qa, "official": official_score_qa},
  "exact": {"strict": score_exact, "official": lenient_score_exact},
}


def score(task: str, text: str, gold, mode: str = "strict", **options) -> bool:
  """Scores one model output for an example of kind `task`.

  Args:
    task: "math", "choice", "qa", "reasoning" (free-form, as "qa") or "exact" (a fact written alone). "code" is
      rejected: code is scored by the sandbox runner, which runs the tests.
    text: model output.
    gold: the example's answer (a letter for "choice"; a string or list of aliases for "qa").
    mode: "strict" (default) or "official" (the official release's lenient rules).
    **options: passed to the scorer, e.g. `letters="ABCDE"` for "choice", `timeout_s=` for strict "math".

  Returns:
    Whether the output is correct.
  """
  if mode not in MODES:
    raise ValueError(f"score: mode {mode!r}; expected one of {list(MODES)}")
  if task == "code":
    raise ValueError("score: task 'code' is scored by the sandbox runner (it runs the tests), not by score()")
  if task not in SCORERS:
    raise ValueError(f"score: task {task!r}; expected one of {sorted(SCORERS)}, or 'code' for the sandbox runner")
  return SCORERS[task][mode](text, gold, **options)
