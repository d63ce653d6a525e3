"""Answer extraction and scoring: strict rules, the official release's lenient rules, SQuAD EM/F1."""

from __future__ import annotations

import time

import pytest

from rmas_jax.evaluation.answers import (
  extract_choice,
  extract_code,
  last_boxed,
  official_extract_choice,
  official_extract_code,
  official_extract_math,
  official_intpart,
)
from rmas_jax.evaluation.scoring import SCORERS, exact_match, f1, score, score_choice, score_math


@pytest.mark.parametrize(
  "text, expected",
  [
    ("so \\boxed{\\frac{1}{\\sqrt{2}}} done", "\\frac{1}{\\sqrt{2}}"),
    ("\\boxed{a} then \\boxed{b{c}}", "b{c}"),
    ("\\boxed{\\boxed{5}}", "5"),
    ("\\fbox{7}", "7"),
    ("\\boxed 5 is it", "5"),
    ("\\boxed{3} and a truncated \\boxed{\\frac{1}{", "3"),
    ("\\boxed{\\frac{1}{", None),
    ("no box here, 42", None),
  ],
)
def test_last_boxed_matches_braces(text, expected):
  assert last_boxed(text) == expected


@pytest.mark.parametrize(
  "text, gold",
  [
    ("Thus \\boxed{\\frac{1}{2}}.", "0.5"),
    ("\\boxed{0.5}", "\\frac{1}{2}"),
    ("\\boxed{1/2}", "\\frac12"),
    ("\\boxed{3.0}", "3"),
    ("\\boxed{x=3}", "3"),
    ("The final answer is $x=3$.", "3"),
    ("\\boxed{1,000}", "1000"),
    ("\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "(3, \\frac{\\pi}{2})"),
    ("first \\boxed{3}, on reflection \\boxed{4}", "4"),
  ],
)
def test_math_accepts_equivalent_forms(text, gold):
  assert score_math(text, gold)
  assert score("math", text, gold)


@pytest.mark.parametrize(
  "text, gold",
  [
    ("\\boxed{3}", "4"),
    ("\\boxed{0.33}", "\\frac{1}{3}"),
    ("\\boxed{4}", "\\frac{14}{3}"),
    ("first \\boxed{3}, on reflection \\boxed{4}", "3"),
    # A number in the reasoning is not an answer without a box or an explicit statement.
    ("I computed 7 and then 9", "9"),
    ("\\boxed{", "3"),
    ("", "3"),
  ],
)
def test_math_rejects_wrong_or_missing_answers(text, gold):
  assert not score_math(text, gold)


def test_math_timeout_guards_adversarial_input():
  start = time.monotonic()
  assert not score_math("\\boxed{9^{9^{9^{9}}}}", "3", timeout_s=1)
  assert time.monotonic() - start < 10


@pytest.mark.parametrize(
  "text, letter",
  [
    ("... so \\boxed{C}", "C"),
    ("\\boxed{\\text{(B)}}", "B"),
    ("The answer is (B).", "B"),
    ("**Answer:** D", "D"),
    ("Final Choice: A", "A"),
    ("the correct option is C", "C"),
    ("Option B is correct.", "B"),
    ("The answer is (B). Wait, no: the answer is D", "D"),
  ],
)
def test_extract_choice_reads_explicit_answers(text, letter):
  assert extract_choice(text) == letter


@pytest.mark.parametrize(
  "text",
  [
    "I am not sure.",
    "The answer is Avogadro's number",
    "the answer is a mess",
    "\\boxed{42}",
    "Both A and B look fine",
    "",
  ],
)
def test_choice_parse_failure_is_wrong_never_a(text):
  assert extract_choice(text) is None
  assert not score_choice(text, "A")
  # The official release reads the same failures as "A".
  assert official_extract_choice(text) == "A"


def test_choice_rejects_bad_gold_letter():
  with pytest.raises(ValueError, match="gold 'E'"):
    score_choice("\\boxed{A}", "E")
  assert score_choice("\\boxed{E}", "E", letters="ABCDE")


def test_extract_code():
  text = "```python\nx = 1\n```\nand\n```\ny = 2\n```\nfinally\n```python\nz = 3\n```"
  assert extract_code(text) == "z = 3\n"
  assert extract_code("```\ny = 2\n```") == "y = 2\n"
  assert extract_code("<think>```python\nscratch\n```</think>no code after all") is None
  assert extract_code("```python\ndef f(:  # truncated") is None
  # Official: the first python block.
  assert official_extract_code(text) == "x = 1\n"


def test_exact_match_and_f1_hand_computed():
  assert exact_match("The Eiffel Tower!", "eiffel tower")
  assert not exact_match("Eiffel", "Eiffel Tower")
  assert exact_match("paris", ["London", "Paris"])
  # "cat sat on mat" vs "cat on mat": 3 shared tokens, precision 3/4, recall 1 -> 6/7.
  assert f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(6 / 7)
  # precision 1/2, recall 1 -> 2/3.
  assert f1("Barack Obama", "Obama") == pytest.approx(2 / 3)
  assert f1("New York City", "York") == pytest.approx(0.5)
  assert f1("London", "Paris") == 0.0
  assert f1("", "") == 1.0
  assert f1("the", "Paris") == 0.0
  assert f1("paris", ["London", "Paris"]) == 1.0


def test_qa_scores_the_stated_answer():
  assert score("qa", "Reasoning... Final Answer: The Beatles", "Beatles")
  assert score("reasoning", "\\boxed{Paris}", "paris")
  assert not score("qa", "It could be Paris or London.", "Paris")


def test_official_mode_is_more_lenient():
  # §3 "intpart": gold 14/3 matches "4".
  assert official_intpart("\\frac{14}{3}") == official_intpart("4") == "4"
  assert score("math", "\\boxed{4}", "\\frac{14}{3}", mode="official")
  assert not score("math", "\\boxed{4}", "\\frac{14}{3}", mode="strict")
  # §3: a choice parse failure counts as "A".
  assert score("choice", "I cannot decide.", "A", mode="official")
  assert not score("choice", "I cannot decide.", "A", mode="strict")
  # §3: without a box, the last "Final Answer:" line, else the whole text.
  assert official_extract_math("so...\nFinal Answer: 12") == "12"
  assert official_extract_math("just 12") == "just 12"
  assert score("math", "We get 12 in the end", "12", mode="official")
  assert not score("math", "We get 12 in the end", "12", mode="strict")
  assert score("qa", "\\boxed{March 5th, 2001}", "2001-03-05", mode="official")


def test_score_dispatch():
  assert set(SCORERS) >= {"math", "choice", "qa", "reasoning"}
  with pytest.raises(ValueError, match="sandbox runner"):
    score("code", "```python\npass\n```", "assert True")
  with pytest.raises(ValueError, match="mode 'loose'"):
    score("math", "\\boxed{1}", "1", mode="loose")
  with pytest.raises(ValueError, match="task 'poetry'"):
    score("poetry", "x", "y")
