"""The text protocol between a model and its tools: `<python>`/`<search>` calls in, ` <result> ... </result>` out.

Decoding stops at one of `CLOSING_TAGS`; the caller then finds the call with `find_call`, runs it through a
`ToolBox`, appends the returned result text, and lets decoding continue.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence

from rmas_jax.tools.sandbox import run_python
from rmas_jax.tools.search import search_tool

CLOSING_TAGS = ("</python>", "</search>")
TOOL_NAMES = ("python", "search")

_OPEN = re.compile(r"<(python|search)>", re.IGNORECASE)
_CLOSE = re.compile(r"</(python|search)>", re.IGNORECASE)
_RESULT_CLOSE = re.compile(r"</result>", re.IGNORECASE)
_FENCE_OPEN = re.compile(r"\A[ \t]*```[^\n]*\n")
_FENCE_CLOSE = re.compile(r"\n[ \t]*```[ \t]*\Z")


@dataclasses.dataclass(frozen=True)
class ToolCall:
  """A complete tool call found in model text.

  Attributes:
    name: the tool, lower-cased ("python" or "search").
    body: the exact text between the tags.
    start: index of the opening tag.
    end: index just after the closing tag.
  """

  name: str
  body: str
  start: int
  end: int


def find_call(text: str, start: int = 0) -> ToolCall | None:
  """Finds the first complete `<python>...</python>` or `<search>...</search>` opening at or after `start`.

  "First" means the earliest closing tag, paired with the nearest opening tag of the same name before it; that
  is the call at which decoding paused. So a call nested in another is found before the outer one, and in
  `<python>a<python>b</python>` the call is `b`. Tag names are case-insensitive; bodies may span lines.

  Returns:
    The call, or None when no call in that range is closed.
  """
  for close in _CLOSE.finditer(text, start):
    name = close.group(1).lower()
    opening = None
    for candidate in _OPEN.finditer(text, start, close.start()):
      if candidate.group(1).lower() == name:
        opening = candidate
    if opening is not None:
      return ToolCall(name=name, body=text[opening.end() : close.start()], start=opening.start(), end=close.end())
  return None


def format_result(text: str) -> str:
  """Wraps tool output as ` <result> ... </result>`, defusing any `</result>` inside it."""
  return f" <result> {_RESULT_CLOSE.sub('< /result>', text.strip())} </result>"


def strip_fences(code: str) -> str:
  """Removes a surrounding ``` fence (with or without a language tag) and common indentation from code."""
  code = code.strip("\n")
  if _FENCE_OPEN.match(code):
    code = _FENCE_OPEN.sub("", code, count=1)
    code = _FENCE_CLOSE.sub("", code.rstrip(), count=1)
  return textwrap.dedent(code).strip("\n")


def python_tool(
  *, timeout_s: float = 10.0, memory_mb: int = 1024, max_output_chars: int = 6000
) -> Callable[[str], str]:
  """Builds the `<python>` tool: runs the (unfenced) code in the sandbox and returns its formatted output."""

  def run(code: str) -> str:
    result = run_python(strip_fences(code), timeout_s=timeout_s, memory_mb=memory_mb, max_output_chars=max_output_chars)
    return result.tool_text()

  return run


class ToolBox:
  """Runs a model's tool calls, at most `max_calls` of them.

  Attributes:
    calls: calls run so far (unknown tools included: the model spent a turn on them).
    exhausted: a call arrived after the limit was reached.
  """

  def __init__(self, tools: Mapping[str, Callable[[str], str]], *, max_calls: int = 5):
    """Creates a toolbox with a fresh call budget.

    Args:
      tools: tool name -> callable from the call's body to result text.
      max_calls: how many calls run before further calls only get the limit notice.
    """
    if max_calls < 0:
      raise ValueError(f"max_calls must be >= 0, got {max_calls}")
    self.tools = dict(tools)
    self.max_calls = max_calls
    self.calls = 0
    self.exhausted = False

  def run(self, call: ToolCall) -> str:
    """Runs `call` and returns its formatted ` <result> ... </result>` text.

    Mistakes of the model (an unknown or disabled tool, calls beyond the limit) come back as result text; errors
    raised by a tool itself propagate, since they are ours.
    """
    if self.calls >= self.max_calls:
      self.exhausted = True
      return format_result(f"[tool limit reached after {self.max_calls} calls]")
    self.calls += 1
    tool = self.tools.get(call.name)
    if tool is None:
      available = ", ".join(sorted(self.tools)) or "none"
      return format_result(f"[error] unknown tool '{call.name}'; available: {available}")
    return format_result(tool(call.body))

  def reset(self) -> None:
    """Starts a fresh budget, e.g. for the next problem."""
    self.calls = 0
    self.exhausted = False


def make_toolbox(
  names: Sequence[str],
  *,
  search_corpus: str | None = None,
  max_calls: int = 5,
  python_timeout_s: float = 10.0,
) -> ToolBox:
  """Builds a `ToolBox` with the named tools.

  Args:
    names: tools to enable, from `TOOL_NAMES`.
    search_corpus: corpus file for "search"; required when "search" is enabled.
    max_calls: the toolbox's call limit.
    python_timeout_s: wall-time limit for each python call.

  Raises:
    ValueError: an unknown name, or "search" without a corpus.
  """
  tools: dict[str, Callable[[str], str]] = {}
  for name in names:
    if name == "python":
      tools[name] = python_tool(timeout_s=python_timeout_s)
    elif name == "search":
      tools[name] = search_tool(search_corpus)
    else:
      raise ValueError(f"tool name {name!r} unknown; expected one of {', '.join(TOOL_NAMES)}")
  return ToolBox(tools, max_calls=max_calls)
