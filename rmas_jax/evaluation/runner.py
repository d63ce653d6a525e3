"""`eval.py`: a method over a dataset, scored strictly, with tokens and time per example; resumable.

Records go one per line to `DIR/eval/<name>.partial.jsonl` as batches finish, after a first line holding the
evaluation's identity (`rmas_jax.evaluation.identity`), so an interrupted evaluation picks up where it stopped, and
only if it is the same evaluation; the finished result is written once, atomically, to `DIR/eval/<name>.json` and
never replaced. `<name>` ends in a hash of the data, task and field map, so different data never share a file.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import sys
import time

from rmas_jax.accounting import peak_memory
from rmas_jax.evaluation.answers import extract_answer, extract_choice, extract_code
from rmas_jax.evaluation.code_tests import score_code
from rmas_jax.evaluation.datasets import TASKS, Example, describe_source, field_map, load_examples, registry_key
from rmas_jax.evaluation.identity import (
  canonical,
  check_same,
  examples_digest,
  fresh_link_digest,
  link_digest,
  name_key,
)
from rmas_jax.evaluation.scoring import MODES, SCORERS, score, stated_fact
from rmas_jax.evaluation.text_baselines import mixture_of_agents, single_agent, text_rounds
from rmas_jax.generation.sampler import bucket
from rmas_jax.patterns.ask import ask, segmented_prompts
from rmas_jax.patterns.from_config import LoadedSystem, load_system, sampling_of, toolbox_of
from rmas_jax.prompts import roles
from rmas_jax.results import write_json_new

METHODS = ("recursive_mas", "single", "text_mas", "recursive_text_mas", "moa")
CHECKPOINTS = ("latest", "best")  # `eval.checkpoint`: the newest intact checkpoint, or the lowest held-out loss
PACKAGES = ("jax", "flax", "optax", "transformers", "math-verify", "reasoning-gym")


def eval_rounds(config) -> int:
  """The recursion rounds `config.eval` runs: 1 for the single-pass methods, else `eval.rounds` or the default."""
  e = config.eval
  return 1 if e.method in ("text_mas", "single") else e.rounds or config.inference.rounds


def result_name(dataset: str, method: str, rounds: int, key: str = "") -> str:
  """`<dataset>-<method>-r<R>[-<key>]`: a readable base (a file's basename stands for a path) and the identity's
  `name_key`, which keeps results of different data apart when their files share a basename."""
  base = os.path.splitext(os.path.basename(dataset))[0] if os.sep in dataset or "." in dataset else dataset
  return f"{base}-{method}-r{rounds}" + (f"-{key}" if key else "")


def eval_examples(config) -> tuple[list[Example], dict]:
  """The examples `config.eval` evaluates and a description of their source (for the identity).

  A local file (`eval.dataset` a path, or a name with `eval.path`) takes `config.task` and `eval.fields`; a registry
  dataset keeps its own task and field map (`eval.fields` entries override the map of a hub benchmark). A dataset
  folder's split defaults to "test"; a single file has none.
  """
  e = config.eval
  if registry_key(e.dataset) is None and config.task not in TASKS:
    raise ValueError(f"config.task: {config.task!r}; expected one of {list(TASKS)}")
  where = dict(split=e.split or None, limit=e.limit or None, seed=config.seed, path=e.path or None,
               folder_split="test")  # fmt: skip
  fields = field_map(e.get("fields"))
  task = config.task if registry_key(e.dataset) is None else None
  examples = load_examples(e.dataset, fields=fields or None, task=task, **where)
  return examples, describe_source(e.dataset, **where)


def check_eval_settings(config) -> None:
  """Raises ValueError naming the first `config.eval` setting out of range."""
  e = config.eval
  if e.method not in METHODS:
    raise ValueError(f"config.eval.method: {e.method!r}; expected one of {METHODS}")
  for key, low in (("batch_size", 1), ("num_samples", 1), ("agent_tokens", 1), ("limit", 0), ("rounds", 0),
                   ("latent_steps", 0), ("max_prompt_tokens", 0)):  # fmt: skip
    value = e.get(key, low)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
      raise ValueError(f"config.eval.{key}: {value!r}; expected an int >= {low}" + (" (0: all)" if key == "limit" else
                                                                                    ""))  # fmt: skip
  if e.scoring not in MODES:
    raise ValueError(f"config.eval.scoring: {e.scoring!r}; expected one of {list(MODES)}")
  if e.get("checkpoint", "latest") not in CHECKPOINTS:
    raise ValueError(f"config.eval.checkpoint: {e.checkpoint!r}; expected one of {list(CHECKPOINTS)}")


def _extracted(task: str, text: str) -> str | None:
  if task == "code":
    return extract_code(text)
  if task == "exact":
    return stated_fact(text)
  return extract_choice(text) if task == "choice" else extract_answer(text)


def _correct(example: Example, text: str, mode: str) -> bool:
  if example.task == "code":
    return score_code(text, example.answer, example.meta, mode=mode)
  options = {"letters": example.meta["letters"]} if example.task == "choice" and "letters" in example.meta else {}
  return score(example.task, text, example.answer, mode=mode, **options)


def _run_batch(method: str, loaded: LoadedSystem, config, batch: list[Example], rounds: int, task: str):
  """Texts (per example, per sample) and decoded tokens per example for one batch."""
  e, g = config.eval, config.generation
  sampling = sampling_of(config)
  common = dict(max_new_tokens=g.max_new_tokens, sampling=sampling)
  questions = [x.question for x in batch]
  if method == "recursive_mas":
    inf = config.inference
    # The examples themselves, not their question text: a declared prompt may name any field of the record.
    out = ask(loaded.system, loaded.tokenizers, batch, rounds=rounds, steps=e.latent_steps or inf.latent_steps,
              task=task, prompts=loaded.prompts, stop_strings=tuple(inf.stop_strings), tools=toolbox_of(config),
              num_samples=e.num_samples, chunk=inf.chunk, prefix_reuse=inf.get("prefix_reuse", True),
              **common)  # fmt: skip
    return [a.samples for a in out.answers], [sum(a.decoded_tokens) for a in out.answers]
  if e.num_samples > 1:
    raise ValueError(f"config.eval.num_samples: pass@k is only written for recursive_mas, not {method}")
  if method == "single":
    role = e.single_role or loaded.system.pattern.decoder
    if role not in loaded.tokenizers:
      raise ValueError(f"config.eval.single_role: {role!r} is not a role of this system ({sorted(loaded.tokenizers)})")
    results, _ = single_agent(loaded.system.agents[role].backbone, loaded.tokenizers[role], questions, task=task,
                              **common)  # fmt: skip
    return [[r.text] for r in results], [len(r.ids) for r in results]
  baseline = mixture_of_agents if method == "moa" else text_rounds
  extra = {} if method == "moa" else {"book": loaded.prompts}
  asked = questions if method == "moa" else batch  # text rounds fill the pattern's prompts from the records too
  results, acc = baseline(loaded.system, loaded.tokenizers, asked, rounds=rounds, task=task,
                          agent_tokens=e.agent_tokens, **extra, **common)  # fmt: skip
  spent = sum(acc["decoded_tokens"].values())
  return [[r.text] for r in results], [spent / len(batch)] * len(batch)  # the batch's tokens, shared evenly


def evaluate(config, workdir: str, *, loaded: LoadedSystem | None = None, progress: bool = True,
             links_from: str | None = None) -> dict:  # fmt: skip
  """Runs `config.eval.method` on `config.eval.dataset` and returns the result (also written under `workdir`).

  The result and its partial file carry the evaluation's identity (`rmas_jax.evaluation.identity`); an existing one
  is resumed (or, finished, handed back with `read_back=True`) only when every compared part matches, else the
  evaluation is refused with an `IdentityMismatchError` naming what differs. A question whose prompt does not fit
  an agent's context, or `eval.max_prompt_tokens`, is recorded as skipped (and counted wrong) instead of run.

  Args:
    config: the run config; `config.eval` says what to evaluate.
    workdir: results go to `workdir/eval`; trained links come from `workdir/checkpoints` unless `links_from` names
      another run directory.
    loaded: an already loaded system to reuse (its links are replaced by the trained ones, if any).
    progress: show a progress bar.
    links_from: run directory whose checkpoints hold the links.
  """
  e = config.eval
  check_eval_settings(config)
  rounds = eval_rounds(config)
  examples, source = eval_examples(config)
  if not examples:
    raise ValueError(f"config.eval.dataset: {e.dataset!r} gave no examples")
  task = examples[0].task
  where = "config.task" if registry_key(e.dataset) is None else f"{e.dataset}'s task"
  if task != "code" and task not in SCORERS:
    raise ValueError(f"{where}: {task!r} has no scorer; expected one of {sorted(SCORERS)} or 'code'")
  try:
    roles.final_instruction(task)
  except ValueError:
    raise ValueError(f"{where}: {task!r} has no decoder instruction (rmas_jax.prompts.roles knows "
                     f"{sorted(roles.FINAL_INSTRUCTIONS)})") from None  # fmt: skip

  built_here = loaded is None
  loaded = loaded or load_system(config, progress=progress)
  if e.method == "single" and (e.single_role or loaded.system.pattern.decoder) not in loaded.tokenizers:
    raise ValueError(f"config.eval.single_role: {e.single_role!r} is not a role of this system "
                     f"({sorted(loaded.tokenizers)})")  # fmt: skip
  links_id, links = _links(config, loaded, links_from or workdir, built_here)
  if e.method == "recursive_mas":
    print(f"links: {links}", flush=True)
  identity = evaluation_identity(config, loaded, dataset=dict(source, examples=len(examples),
                                                              examples_sha256=examples_digest(examples)),
                                 task=task, rounds=rounds, links=links_id)  # fmt: skip
  name = result_name(e.dataset, e.method, rounds, name_key(identity))
  out_dir = os.path.join(workdir, "eval")
  final_path = os.path.join(out_dir, f"{name}.json")
  if os.path.exists(final_path):
    with open(final_path) as f:
      result = json.load(f)
    check_same(result.get("identity"), identity, final_path)
    print(f"result: {final_path} exists (results are never overwritten); delete it to evaluate again", flush=True)
    return dict(result, read_back=True)

  os.makedirs(out_dir, exist_ok=True)
  partial_path = os.path.join(out_dir, f"{name}.partial.jsonl")
  records = read_partial(partial_path, identity)
  resumed_from = len(records)
  done = {r["id"] for r in records}
  todo = [x for x in examples if x.id not in done]

  bar = None
  if progress:
    from tqdm import tqdm

    bar = tqdm(total=len(examples), initial=len(examples) - len(todo), desc=f"eval {name}", unit="q")
  with open(partial_path, "a") as sink:
    # Too-long prompts are decided before any batch, so no batch ever allocates for one.
    reasons = too_long(config, loaded, todo, rounds=rounds, task=task)
    for x, reason in zip(todo, reasons, strict=True):
      if reason is not None:
        record = dict(id=x.id, question=_clipped(x.question), gold=x.answer, output=None, extracted=None,
                      correct=False, pass_at_k=False, samples=None, tokens=0, seconds=0.0, skipped=reason)  # fmt: skip
        records.append(record)
        sink.write(json.dumps(record) + "\n")
    sink.flush()
    skipped_now = sum(r is not None for r in reasons)
    if skipped_now:
      print(f"{skipped_now} of {len(todo)} questions skipped (recorded as wrong): {next(r for r in reasons if r)}",
            file=sys.stderr, flush=True)  # fmt: skip
      if bar is not None:
        bar.update(skipped_now)
    todo = [x for x, reason in zip(todo, reasons, strict=True) if reason is None]
    if e.warmup and todo:
      # Compiles every program the timed batches will use (same shapes), so seconds per question exclude compiling.
      _run_batch(e.method, loaded, config, todo[: e.batch_size], rounds, task)
    for i in range(0, len(todo), e.batch_size):
      batch = todo[i : i + e.batch_size]
      start = time.perf_counter()
      texts, tokens = _run_batch(e.method, loaded, config, batch, rounds, task)
      seconds = (time.perf_counter() - start) / len(batch)
      for x, samples, spent in zip(batch, texts, tokens, strict=True):
        correct = [_correct(x, t, e.scoring) for t in samples]
        record = dict(id=x.id, question=x.question, gold=x.answer, output=samples[0],
                      extracted=_extracted(task, samples[0]), correct=correct[0], pass_at_k=any(correct),
                      samples=samples if len(samples) > 1 else None, tokens=spent, seconds=seconds,
                      skipped=None)  # fmt: skip
        records.append(record)
        sink.write(json.dumps(record) + "\n")
      sink.flush()
      if bar is not None:
        bar.update(len(batch))
        bar.set_postfix(acc=f"{sum(r['correct'] for r in records) / len(records):.3f}")
  if bar is not None:
    bar.close()

  by_id = {r["id"]: r for r in records}
  records = [by_id[x.id] for x in examples]
  n = len(records)
  answered = [r for r in records if not r.get("skipped")]
  per_answered = (lambda total: total / len(answered)) if answered else (lambda total: None)  # noqa: E731
  result = dict(
    dataset=e.dataset,
    task=task,
    method=e.method,
    rounds=rounds,
    links=links,
    n=n,
    answered=len(answered),
    skipped=n - len(answered),
    accuracy=sum(r["correct"] for r in records) / n,
    accuracy_answered=per_answered(sum(r["correct"] for r in answered)),
    pass_at_k=sum(r["pass_at_k"] for r in records) / n if e.num_samples > 1 else None,
    num_samples=e.num_samples,
    decoded_tokens=sum(r["tokens"] for r in records),
    decoded_tokens_per_question=per_answered(sum(r["tokens"] for r in answered)),
    wall_time_s=sum(r["seconds"] for r in records),
    seconds_per_question=per_answered(sum(r["seconds"] for r in answered)),
    scoring=e.scoring,
    compile_excluded=bool(e.warmup),
    resumed_from=resumed_from,
    models=loaded.models,
    identity=identity,
    config=json.loads(config.to_json_best_effort()),
    versions={p: _version(p) for p in PACKAGES},
    **peak_memory(),
    records=records,
  )
  write_json_new(final_path, result)
  os.unlink(partial_path)
  print(f"result: {final_path}", flush=True)
  return result


def _clipped(text: str, keep: int = 2000) -> str:
  """A skipped question as its record keeps it: the start, and how long it was (a 1 MB question stays out)."""
  return text if len(text) <= keep else f"{text[:keep]}... [{len(text)} characters]"


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


# --- identity --------------------------------------------------------------------------------------------------------


def _links(config, loaded: LoadedSystem, source: str, built_here: bool) -> tuple[dict, str]:
  """Restores the trained links `config.eval.checkpoint` picks from `source/checkpoints` (recursive_mas only) and
  returns their identity and a line saying what they are."""
  e = config.eval
  if e.method != "recursive_mas":
    return {"source": "not used"}, "not used"
  from rmas_jax.training.trainer import restore_links

  which = e.get("checkpoint", "latest")
  if "which" in inspect.signature(restore_links).parameters:
    step = restore_links(config, loaded.system, source, which=which)
  elif which != "latest":
    raise ValueError(f"config.eval.checkpoint: {which!r}; this version's training keeps no best checkpoint, expected "
                     "'latest'")  # fmt: skip
  else:
    step = restore_links(config, loaded.system, source)
  sha = link_digest(loaded.system)
  directory = os.path.abspath(os.path.join(source, "checkpoints"))
  if step:
    label = f"trained ({source}, checkpoint step {step}{', the best' if which == 'best' else ''})"
    return dict(source="checkpoint", step=step, which=which, dir=directory, sha256=sha), label
  # No checkpoint: a system built here has fresh links; one passed in may hold anything, so check what it holds.
  if built_here or sha == fresh_link_digest(config, loaded.system):
    return dict(source="fresh", seed=config.seed, sha256=sha), f"untrained (no checkpoint under {source})"
  return dict(source="given", sha256=sha), f"as given (no checkpoint under {source}; links {sha[:8]} of the caller)"


def evaluation_identity(config, loaded: LoadedSystem, *, dataset: dict, task: str, rounds: int, links: dict) -> dict:
  """The identity of evaluating `config.eval` (see `rmas_jax.evaluation.identity`), as plain JSON data.

  Only settings that change a method's answers enter its part: a greedy decode leaves temperature and seed out, the
  text methods leave latent steps out, and batch size, warm-up and mesh are never part of it.
  """
  e, g, inf = config.eval, config.generation, config.inference
  generation = dict(max_new_tokens=g.max_new_tokens, greedy=g.greedy)
  if not g.greedy:
    generation.update(temperature=g.temperature, top_p=g.top_p, top_k=g.top_k, seed=config.seed)
  method = dict(name=e.method, rounds=rounds, scoring=e.scoring, num_samples=e.num_samples,
                max_prompt_tokens=e.get("max_prompt_tokens", 0), generation=generation)  # fmt: skip
  agents = [dict(role=a["role"], model=a["model"]) for a in config.agents]
  system: dict = dict(dtype=config.dtype)
  if e.method == "single":
    role = e.single_role or loaded.system.pattern.decoder
    method["single_role"] = role
    system["agents"] = [a for a in agents if a["role"] == role]
  else:
    system.update(agents=agents, style=config.style, pattern=_plain_or_none(config.get("pattern")),
                  prompts=_plain_or_none(config.get("prompts")))  # fmt: skip
  if e.method == "recursive_mas":
    t = config.get("tools")
    method.update(latent_steps=e.latent_steps or inf.latent_steps, stop_strings=list(inf.stop_strings),
                  tools=dict(names=list(t.names), max_calls=t.max_calls, python_timeout_s=t.python_timeout_s,
                             search_corpus=t.search_corpus) if t and t.enabled else None)  # fmt: skip
    system["links"] = _plain_or_none(config.get("links"))
  elif e.method != "single":
    method["agent_tokens"] = e.agent_tokens
  identity = dict(dataset=dataset, task=task, fields=field_map(e.get("fields")), method=method, system=system,
                  links=links)  # fmt: skip
  return json.loads(canonical(identity))  # exactly what a file holds after a JSON round trip


def _plain_or_none(value):
  if not value:
    return None
  return value.to_dict() if hasattr(value, "to_dict") else value


def read_partial(path: str, identity: dict) -> list[dict]:
  """The records of an interrupted evaluation at `path`, after checking its identity; creates the file (its first
  line the identity) when there is none.

  A last line cut off by a kill is dropped with a warning and cut from the file, so appending continues on a clean
  line; damage anywhere else is a one-line error naming the line.
  """
  records: list[dict] = []
  header = None
  keep = 0  # bytes of the intact lines
  if os.path.exists(path):
    with open(path, "rb") as f:
      for n, raw in enumerate(f, 1):
        try:
          row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
          row = None
        if not isinstance(row, dict) or (header is not None and "id" not in row):
          if not raw.endswith(b"\n"):  # only the last line can be torn
            what = "its question is evaluated again" if header is not None else "the file starts over"
            print(f"warning: {path}:{n}: dropped the last line ({len(raw)} bytes), cut off when the evaluation was "
                  f"stopped; {what}", file=sys.stderr, flush=True)  # fmt: skip
            break
          raise ValueError(f"{path}:{n}: not an evaluation record; the partial file is damaged, delete it to start "
                           "over")  # fmt: skip
        if header is None:
          header = row
          check_same(row.get("identity"), identity, path)
        else:
          records.append(row)
        keep += len(raw)
    if keep < os.path.getsize(path):
      os.truncate(path, keep)
    elif keep and not raw.endswith(b"\n"):  # a whole record whose newline the kill cut off
      with open(path, "ab") as f:
        f.write(b"\n")
  if header is None:  # a new file (or only a torn header): the identity goes first, whole or not at all
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
      f.write(json.dumps({"identity": identity}) + "\n")
    os.replace(tmp, path)
  return records


# --- prompt lengths --------------------------------------------------------------------------------------------------


def _context(backbone) -> int | None:
  """The positions a backbone was built for (`max_position_embeddings`), or None when it does not say."""
  return getattr(getattr(backbone, "cfg", None), "max_position_embeddings", None)


_LONGEST_PIECE: dict[int, int] = {}


def _longest_piece(tok) -> int:
  """Characters of the tokenizer's longest vocabulary entry: no token covers more text, so a text of c characters
  has at least c / this many tokens, a bound that costs no tokenizing."""
  key = id(tok)
  if key not in _LONGEST_PIECE:
    try:
      _LONGEST_PIECE[key] = max(64, max(len(p) for p in tok.get_vocab()))
    except Exception:  # a tokenizer without a vocabulary listing: a bound no real vocabulary exceeds
      _LONGEST_PIECE[key] = 1024
  return _LONGEST_PIECE[key]


def too_long(config, loaded: LoadedSystem, examples: list[Example], *, rounds: int, task: str) -> list[str | None]:
  """Per example: why its prompts do not fit (a one-line reason), or None when they do.

  A role's prompt is its longest round's prompt of the pattern with every slot as wide as what fills it (m latent
  vectors for `recursive_mas`, `eval.agent_tokens` of text for the text methods; for `moa` and `single` the role's
  first-round prompt stands in for theirs, plus the answers it reads); it must fit `eval.max_prompt_tokens` (when
  set), and with what the role writes (latent steps, `eval.agent_tokens`, or the decoder's `max_new_tokens` and tool
  results) the role's context. A question too long by a character count alone is never tokenised.
  """
  e, g, inf = config.eval, config.generation, config.inference
  system, toks = loaded.system, loaded.tokenizers
  pattern = system.pattern
  cap = e.get("max_prompt_tokens", 0) or None
  method = e.method
  steps = e.latent_steps or inf.latent_steps
  if method == "single":
    roles_used = [e.single_role or pattern.decoder]
  else:
    roles_used = list(pattern.roles)
  width = steps if method == "recursive_mas" else 0 if method in ("moa", "single") else e.agent_tokens
  reads = {r: (len(pattern.roles) * e.agent_tokens if method == "moa" else 0) for r in roles_used}
  tools = toolbox_of(config) if method == "recursive_mas" else None
  room = (config.tools.max_calls + 1) * (bucket(256, minimum=8) + inf.chunk) if tools else 0
  writes = {r: (g.max_new_tokens + room if r == pattern.decoder or method == "single" else
                steps if method == "recursive_mas" else e.agent_tokens) for r in roles_used}  # fmt: skip
  context = {r: _context(system.agents[r].backbone) for r in roles_used}

  def limit(r: str) -> tuple[int, str] | None:
    bounds = []
    if cap is not None:
      bounds.append((cap, f"eval.max_prompt_tokens={cap}"))
    if context[r] is not None:
      bounds.append((context[r] - writes[r], f"the {r}'s context of {context[r]} less {writes[r]} to write"))
    return min(bounds) if bounds else None

  out: list[str | None] = []
  prompt_rounds = 1 if method in ("moa", "single") else rounds
  for x in examples:
    q = x.question
    reason = None
    for r in roles_used:
      bound = limit(r)
      least = -(-len(q) // _longest_piece(toks[r]))
      if bound is not None and least > bound[0]:
        reason = f"a question of {len(q)} characters has at least {least} tokens, more than {bound[1]} allows"
        break
    if reason is None:
      prompts = segmented_prompts(system, toks, [x], rounds=prompt_rounds, task=task, book=loaded.prompts)
      for r in roles_used:
        need = max(rp[r][0].length(width) for rp in prompts) + reads[r]
        bound = limit(r)
        if bound is not None and need > bound[0]:
          reason = f"the {r}'s prompt has {need} tokens, more than {bound[1]} allows"
          break
    out.append(reason)
  return out
