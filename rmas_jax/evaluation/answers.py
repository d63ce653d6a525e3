"""Pulling the final answer out of a model's text.

Two families live here:

- Strict extractors (`last_boxed`, `final_answer_line`, `extract_answer`, `extract_choice`, `extract_code`): they
  return None when the text states no answer, so a format failure is scored as wrong and never as a lucky default.
- `official_*` functions: our reading of the official release's lenient rules (reference notes §3, answer_utils.py
  `compare_answers` and lcb_utils.py). They exist so that numbers can be compared with the paper's; they accept
  answers that the strict rules reject (a multiple-choice parse failure counts as "A"; for math, gold 14/3 matches "4").
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_FINAL_LINE = re.compile(r"(?i:final\s+(?:answer|choice))\s*[:：]\s*(.*)")


def _balanced_group(text: str, open_at: int) -> str | None:
  """Content of the `{...}` group whose `{` is at `open_at`, or None when it never closes."""
  depth = 0
  for i in range(open_at, len(text)):
    if text[i] == "{":
      depth += 1
    elif text[i] == "}":
      depth -= 1
      if depth == 0:
        return text[open_at + 1 : i]
  return None


def _boxed_spans(text: str) -> list[tuple[int, str]]:
  """(start, content) of every closed `\\boxed{...}` / `\\fbox{...}`, plus the brace-less `\\boxed 5` form."""
  spans = []
  for command in _BOX_COMMANDS:
    for m in re.finditer(re.escape(command) + r"(?![A-Za-z])", text):
      rest = m.end()
      while rest < len(text) and text[rest] == " ":
        rest += 1
      if rest < len(text) and text[rest] == "{":
        content = _balanced_group(text, rest)
        if content is not None:
          spans.append((m.start(), content))
      elif rest > m.end():
        # MATH-style `\boxed 5`: the argument is the next token.
        token = re.match(r"[^\s$]+", text[rest:])
        if token:
          spans.append((m.start(), token.group(0)))
  return sorted(spans)


def last_boxed(text: str) -> str | None:
  """Returns the content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`.

  Braces are matched, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`. A box that never closes (a truncated output)
  does not count.

  Args:
    text: model output.

  Returns:
    The stripped content, or None when there is no closed box.
  """
  spans = _boxed_spans(text)
  return spans[-1][1].strip() if spans else None


def final_answer_line(text: str) -> str | None:
  """Returns what follows the last "Final Answer:" or "Final Choice:" label on its line, or None.

  The official answer-retry stage appends such a label (reference §3), so it is an explicit statement of the answer.
  """
  found = None
  for line in text.splitlines():
    m = _FINAL_LINE.search(line)
    if m and m.group(1).strip():
      found = m.group(1).strip()
  return found


def extract_answer(text: str) -> str | None:
  """Returns the stated final answer: the last box, else the last "Final Answer:" line, else None."""
  boxed = last_boxed(text)
  return boxed if boxed is not None else final_answer_line(text)


def _unwrap_text(s: str) -> str:
  """`\\text{(B)}` -> `(B)`; `\\textbf{B}` -> `B`. Only the wrapper goes, the content stays."""
  return re.sub(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}", r"\1", s)


def _letter_of(content: str, letters: str) -> str | None:
  """The option letter that `content` consists of: "B", "(B)", "B.", "B) 42", "**B**", "Option B"; else None."""
  s = _unwrap_text(content).strip().strip("*$ ").strip()
  s = re.sub(r"^(?i:option|choice)\s+", "", s)
  m = re.fullmatch(r"[(\[]?\s*([A-Za-z])\s*[)\].:]?(?:\s+.*)?", s, re.DOTALL)
  if not m:
    return None
  letter = m.group(1)
  # A bare lowercase word such as "a" is far more often an article than an option, unless it is the whole answer.
  if letter.islower() and s != letter and not re.fullmatch(r"[(\[]\s*[a-z]\s*[)\]]", s):
    return None
  letter = letter.upper()
  return letter if letter in letters else None


def _choice_statement(letters: str) -> re.Pattern[str]:
  cls = "[" + re.escape(letters) + "]"
  keyword = (
    r"(?i:(?:final\s+)?(?:answer|choice|option)(?:\s+is\s*[:：]?|\s*[:：])"
    r"|(?:correct|right|best)\s+(?:answer|option|choice)\s+is)"
  )
  # "the answer is (C)", "Answer: **C**", "the correct option is C" ...
  before = keyword + r"\s*(?i:option\s+)?[*_]*\s*[(\[]?\s*(" + cls + r")\s*[)\]]?(?![A-Za-z0-9])"
  # ... or "option C is correct".
  after = r"(?i:option|choice)\s+[(\[]?(" + cls + r")[)\]]?\s+(?i:is\s+(?:the\s+)?(?:correct|right|best))"
  return re.compile(before + "|" + after)


def extract_choice(text: str, letters: str = "ABCD") -> str | None:
  """Returns the option letter the text commits to, or None; never a default.

  Order: the last box whose content is a letter (`\\boxed{C}`, `\\boxed{(C)}`, `\\boxed{\\text{C}}`), then the last
  explicit statement ("the answer is (C)", "Answer: C", "Final Choice: C", "the correct option is C"). A letter that
  merely appears somewhere in the text is not an answer.

  Args:
    text: model output.
    letters: the valid option letters, uppercase.

  Returns:
    An uppercase letter from `letters`, or None when the text states no option.
  """
  boxed = last_boxed(text)
  if boxed is not None:
    letter = _letter_of(boxed, letters)
    if letter is not None:
      return letter
  matches = list(_choice_statement(letters).finditer(text))
  return (matches[-1].group(1) or matches[-1].group(2)) if matches else None


_FENCE = re.compile(r"```([^\n`]*)\n(.*?)```", re.DOTALL)


def _strip_think(text: str) -> str:
  # Code drafted inside a closed <think> section is scratch work, not the submission.
  return _THINK_BLOCK.sub("", text)


def extract_code(text: str) -> str | None:
  """Returns the last ```python fenced block, else the last fenced block of any kind, else None.

  Closed `<think>...</think>` sections are ignored. An unclosed fence (a truncated output) is not a block.

  Args:
    text: model output.

  Returns:
    The code inside the fence, or None.
  """
  blocks = _FENCE.findall(_strip_think(text))
  python = [code for tag, code in blocks if tag.strip().lower() in ("python", "py", "python3")]
  if python:
    return python[-1]
  return blocks[-1][1] if blocks else None


# --- The official release's lenient rules (reference §3). -----------------------------------------------------------


def official_extract_math(text: str) -> str:
  """The official math answer string: never None.

  The last `\\boxed{...}` without nested braces, otherwise a greedy `\\boxed{(.*)}`, otherwise the last
  "Final Answer:" line, otherwise the whole text.
  """
  flat = re.findall(r"\\boxed\{([^{}]*)\}", text)
  if flat:
    return flat[-1].strip()
  greedy = re.search(r"\\boxed\{(.*)\}", text, re.DOTALL)
  if greedy:
    return greedy.group(1).strip()
  line = final_answer_line(text)
  return line if line is not None else text.strip()


def _simple_fractions_to_values(s: str) -> str:
  """`\\frac{14}{3}` and `14/3` -> `4.666...`: the official "intpart" reads a fraction by its value."""

  def value(m: re.Match[str]) -> str:
    den = float(m.group(2))
    return m.group(0) if den == 0 else f"{float(m.group(1)) / den:.12f}"

  s = re.sub(r"\\[dt]?frac\s*\{\s*(-?\d+(?:\.\d+)?)\s*\}\s*\{\s*(-?\d+(?:\.\d+)?)\s*\}", value, s)
  return re.sub(r"(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)", value, s)


def official_intpart(s: str) -> str | None:
  """Normalisation 1, "intpart": the integer part of the first number, after reading simple fractions as values and
  stripping `\\text{}` wrappers and commas. Lenient by design: gold 14/3 and prediction "4" both give "4"."""
  s = _simple_fractions_to_values(_unwrap_text(s).replace(",", ""))
  m = re.search(r"-?\d+(?:\.\d+)?", s)
  if not m:
    return None
  return str(int(float(m.group(0))))


def official_latex_text(s: str) -> str:
  """Normalisation 2, "latex_text": without `\\left`, `\\right`, `$`, whitespace, braces and quotes."""
  s = re.sub(r"\\left|\\right", "", s)
  return re.sub(r"[\s${}\"'`]", "", s)


def official_nospace(s: str) -> str:
  """Normalisation 3, "nospace": the string without whitespace."""
  return re.sub(r"\s+", "", s)


def official_digits(s: str) -> str:
  """Normalisation 4, "digits": the digits that appear before the first decimal point (e.g. "3.0" -> "3")."""
  return re.sub(r"\D", "", s.split(".", 1)[0])


OFFICIAL_MATH_NORMALISATIONS = {
  "intpart": official_intpart,
  "latex_text": official_latex_text,
  "nospace": official_nospace,
  "digits": official_digits,
}


def official_math_match(prediction: str, gold: str) -> str | None:
  """Returns the name of the first official normalisation under which `prediction` equals `gold`, or None.

  `prediction` is an already extracted answer (see `official_extract_math`). Empty normal forms never match.
  """
  for name, normalise in OFFICIAL_MATH_NORMALISATIONS.items():
    p, g = normalise(prediction), normalise(gold)
    if p and g and p == g:
      return name
  return None


def official_extract_choice(text: str, letters: str = "ABCD") -> str:
  """The official multiple-choice reading: never None, a parse failure gives "A".

  The letter in the last box, else on the last "Final Choice/Answer:" line, else from the whole text ("answer/option/
  choice: X" statements or a leading letter); else "A", as in the official release.
  """
  boxed = last_boxed(text)
  if boxed is not None:
    letter = _letter_of(boxed, letters)
    if letter is not None:
      return letter
  line = final_answer_line(text)
  if line is not None:
    letter = _letter_of(line, letters)
    if letter is not None:
      return letter
  cls = "[" + re.escape(letters) + re.escape(letters.lower()) + "]"
  stated = re.findall(r"(?i:answer|option|choice)\s*(?:is)?\s*[:：]?[\s*]*[(\[]?(" + cls + r")(?![A-Za-z])", text)
  if stated:
    return stated[-1].upper()
  leading = re.match(r"\s*[(\[]?(" + cls + r")(?![A-Za-z])", text)
  if leading:
    return leading.group(1).upper()
  return letters[0]


def official_extract_code(text: str) -> str:
  """The official code reading (lcb_utils.py): drop `<think>` sections, take the first ```python block, drop stray
  fences. Never None: with no fenced block the remaining text, minus fence lines, is the code."""
  text = _strip_think(text)
  first = re.search(r"```(?:python|py|python3)[^\n]*\n(.*?)```", text, re.DOTALL | re.IGNORECASE)
  if first:
    return first.group(1)
  opened = re.search(r"```(?:python|py|python3)[^\n]*\n", text, re.IGNORECASE)
  if opened:
    text = text[opened.end() :]
  return "\n".join(line for line in text.splitlines() if not line.strip().startswith("```"))
