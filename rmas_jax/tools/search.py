"""BM25 search over a local passage corpus, the backend of the `<search>` tool.

A corpus is a `.jsonl` file (one object per line with "text" and an optional "title") or a `.txt` file (one
passage per non-empty line). Ranking is bm25s with its own regex tokenizer, English stop words and no stemming.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

PASSAGE_CHARS = 320
_NO_CORPUS = "search tool: no corpus configured; set tools.search_corpus to a .jsonl or .txt file"


@dataclasses.dataclass(frozen=True)
class Passage:
  """One retrieved passage and its BM25 score."""

  title: str
  text: str
  score: float


class SearchIndex:
  """A BM25 index over (title, text) passages."""

  def __init__(self, passages: Sequence[tuple[str, str]]):
    """Indexes the passages; the title takes part in matching.

    Args:
      passages: (title, text) pairs; the title may be empty.

    Raises:
      ValueError: there are no passages.
    """
    if not passages:
      raise ValueError("search index: got 0 passages; expected at least one")
    # Imported here because bm25s pulls in scipy (about a second), which users of the other tools never need.
    import bm25s

    self._bm25s = bm25s
    self._passages = [(str(title), str(text)) for title, text in passages]
    tokens = bm25s.tokenize([f"{title}\n{text}" for title, text in self._passages], stopwords="en", show_progress=False)
    self._index = bm25s.BM25()
    self._index.index(tokens, show_progress=False)

  def __len__(self) -> int:
    return len(self._passages)

  @classmethod
  def from_file(cls, path: str | os.PathLike[str]) -> SearchIndex:
    """Builds an index from a `.jsonl` or `.txt` corpus file.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: the suffix is neither .jsonl nor .txt, a line is malformed, or the file holds no passages.
    """
    path = Path(path)
    if not path.is_file():
      raise FileNotFoundError(f"search tool: corpus file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
      passages = _read_jsonl(path)
    elif suffix == ".txt":
      passages = [("", line.strip()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
      raise ValueError(f"search corpus {path}: suffix {suffix or '(none)'!r} unsupported; expected .jsonl or .txt")
    if not passages:
      raise ValueError(f"search corpus {path}: no passages; expected at least one non-empty line")
    return cls(passages)

  def search(self, query: str, k: int = 4) -> list[Passage]:
    """Returns up to `k` passages sharing at least one term with `query`, best first."""
    if k < 1:
      raise ValueError(f"search k must be >= 1, got {k}")
    terms = self._bm25s.tokenize(query, stopwords="en", return_ids=False, show_progress=False)[0]
    if not terms:
      return []
    docs, scores = self._index.retrieve(
      [terms], k=min(k, len(self._passages)), show_progress=False, backend_selection="numpy", n_threads=0
    )
    hits = []
    for doc, score in zip(docs[0].tolist(), scores[0].tolist(), strict=True):
      if score > 0:
        title, text = self._passages[doc]
        hits.append(Passage(title=title, text=text, score=float(score)))
    return hits

  def tool_text(self, query: str, k: int = 4) -> str:
    """Formats the top `k` passages for the model, each cut to PASSAGE_CHARS characters."""
    lines = [f"Query: {_compact(query)}"]
    hits = self.search(query, k)
    if not hits:
      lines.append("No passages matched.")
    for rank, hit in enumerate(hits, start=1):
      lines.append(f"[{rank}] {_compact(hit.title) or '(untitled)'}")
      text = _compact(hit.text)
      lines.append(text if len(text) <= PASSAGE_CHARS else text[:PASSAGE_CHARS].rstrip() + "...")
    return "\n".join(lines)


def _compact(text: str) -> str:
  return re.sub(r"\s+", " ", text).strip()


def _read_jsonl(path: Path) -> list[tuple[str, str]]:
  passages = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"search corpus {path} line {line_no}: invalid JSON ({e.msg}); expected one object") from None
      if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise ValueError(f"search corpus {path} line {line_no}: expected an object with a string 'text' field")
      title = row.get("title") or ""
      if not isinstance(title, str):
        raise ValueError(f"search corpus {path} line {line_no}: 'title' is {type(title).__name__}; expected a string")
      passages.append((title, row["text"]))
  return passages


def search_tool(corpus: str | os.PathLike[str] | None, *, k: int = 4) -> Callable[[str], str]:
  """Builds the `<search>` tool: a callable from query text to formatted passages.

  Args:
    corpus: path of the `.jsonl` or `.txt` corpus (the `tools.search_corpus` setting).
    k: passages per query.

  Raises:
    ValueError: no corpus is configured, or the corpus is malformed.
    FileNotFoundError: the corpus file does not exist.
  """
  if corpus is None or not str(corpus).strip():
    raise ValueError(_NO_CORPUS)
  return functools.partial(SearchIndex.from_file(corpus).tool_text, k=k)
