"""Prompt records: the fields of one data record that role prompts may name.

A prompt is filled from a record, not from a question string alone, so one role can see a field the others never
see (a reader that alone gets `{context}`, a decoder that gets only `{question}`). A record always has `question`;
every other scalar field of the data row comes along under its own name. `where` says which file and row a record
came from, so a prompt that names a field the row lacks is one line naming both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class PromptRecord:
  """The fields a role prompt can use.

  Attributes:
    fields: field name -> text (always holds "question").
    where: the record's origin for error messages, e.g. "data/relay_test.jsonl row 17".
  """

  fields: Mapping[str, str]
  where: str = "the question"

  @property
  def question(self) -> str:
    return self.fields["question"]

  def get(self, name: str, role: str) -> str:
    """The text of field `name` for `role`'s prompt; a missing field is a one-line error naming record and field."""
    if name not in self.fields:
      have = ", ".join(sorted(self.fields))
      raise ValueError(f"{self.where}: the prompt of role {role!r} names {{{name}}}, which this record lacks "
                       f"(it has {have})")  # fmt: skip
    return self.fields[name]


def _text(value: Any) -> str | None:
  if isinstance(value, bool) or value is None:
    return None
  if isinstance(value, (str, int, float)):
    return str(value)
  return None  # lists and dicts (options, test cases) are not prompt text


def prompt_record(item: Any) -> PromptRecord:
  """A `PromptRecord` from a question string, a field mapping, an `Example` or a record itself.

  An `Example` contributes its question, its scalar `meta` fields (the data row's other columns) and its id; its
  `meta["source"]` (when the loader recorded one) names the file in errors.
  """
  if isinstance(item, PromptRecord):
    return item
  if isinstance(item, str):
    return PromptRecord({"question": item})
  if isinstance(item, Mapping):
    if "question" not in item:
      raise ValueError(f"prompt record {dict(item)!r:.120}: expected a 'question' field")
    return PromptRecord({k: t for k, v in item.items() if (t := _text(v)) is not None})
  question = getattr(item, "question", None)
  if question is None:
    raise TypeError(f"prompt_record: expected a str, mapping or Example, got {type(item).__name__}")
  meta = getattr(item, "meta", None) or {}
  fields = {k: t for k, v in meta.items() if (t := _text(v)) is not None}
  fields["question"] = question
  source = meta.get("source") if isinstance(meta.get("source"), str) else None
  where = f"{source} record {item.id}" if source else f"record {item.id}"
  return PromptRecord(fields, where)
