"""`eval.py`: a method over a dataset, scored strictly, with tokens and time per example; resumable.

Records go one per line to `DIR/eval/<name>.partial.jsonl` as batches finish, so an interrupted evaluation picks up
where it stopped; the finished result is written once, atomically, to `DIR/eval/<name>.json` and never replaced.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import time

from rmas_jax.accounting import peak_memory
from rmas_jax.evaluation.answers import extract_answer, extract_choice, extract_code
from rmas_jax.evaluation.code_tests import score_code
from rmas_jax.evaluation.datasets import Example, load_examples
from rmas_jax.evaluation.scoring import score
from rmas_jax.evaluation.text_baselines import mixture_of_agents, single_agent, text_rounds
from rmas_jax.patterns.ask import ask
from rmas_jax.patterns.from_config import LoadedSystem, load_system, sampling_of, toolbox_of
from rmas_jax.results import write_json_new

METHODS = ("recursive_mas", "single", "text_mas", "recursive_text_mas", "moa")
PACKAGES = ("jax", "flax", "optax", "transformers", "math-verify", "reasoning-gym")


def eval_rounds(config) -> int:
  """The recursion rounds `config.eval` runs: 1 for the single-pass methods, else `eval.rounds` or the default."""
  e = config.eval
  return 1 if e.method in ("text_mas", "single") else e.rounds or config.inference.rounds


def result_name(dataset: str, method: str, rounds: int) -> str:
  base = os.path.splitext(os.path.basename(dataset))[0] if os.sep in dataset or "." in dataset else dataset
  return f"{base}-{method}-r{rounds}"


def _extracted(task: str, text: str) -> str | None:
  if task == "code":
    return extract_code(text)
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
    out = ask(loaded.system, loaded.tokenizers, questions, rounds=rounds, steps=e.latent_steps or inf.latent_steps,
              task=task, prompts=loaded.prompts, stop_strings=tuple(inf.stop_strings), tools=toolbox_of(config),
              num_samples=e.num_samples, chunk=inf.chunk, **common)  # fmt: skip
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
  results, acc = baseline(loaded.system, loaded.tokenizers, questions, rounds=rounds, task=task,
                          agent_tokens=e.agent_tokens, **extra, **common)  # fmt: skip
  spent = sum(acc["decoded_tokens"].values())
  return [[r.text] for r in results], [spent / len(batch)] * len(batch)  # the batch's tokens, shared evenly


def evaluate(config, workdir: str, *, loaded: LoadedSystem | None = None, progress: bool = True,
             links_from: str | None = None) -> dict:  # fmt: skip
  """Runs `config.eval.method` on `config.eval.dataset` and returns the result (also written under `workdir`).

  Args:
    config: the run config; `config.eval` says what to evaluate.
    workdir: results go to `workdir/eval`; trained links come from `workdir/checkpoints` unless `links_from` names
      another run directory.
    loaded: an already loaded system to reuse (its links are replaced by the trained ones, if any).
    progress: show a progress bar.
    links_from: run directory whose checkpoints hold the links.
  """
  e = config.eval
  if e.method not in METHODS:
    raise ValueError(f"config.eval.method: {e.method!r}; expected one of {METHODS}")
  rounds = eval_rounds(config)
  name = result_name(e.dataset, e.method, rounds)
  out_dir = os.path.join(workdir, "eval")
  final_path = os.path.join(out_dir, f"{name}.json")
  if os.path.exists(final_path):
    with open(final_path) as f:
      result = json.load(f)
    print(f"{final_path} exists (results are never overwritten); delete it to evaluate again", flush=True)
    return result
  examples = load_examples(e.dataset, split=e.split or None, limit=e.limit or None, seed=config.seed,
                           path=e.path or None)  # fmt: skip
  if not examples:
    raise ValueError(f"config.eval.dataset: {e.dataset!r} gave no examples")
  task = examples[0].task

  loaded = loaded or load_system(config, progress=progress)
  links = "not used"
  if e.method == "recursive_mas":
    from rmas_jax.training.trainer import restore_links

    source = links_from or workdir
    step = restore_links(config, loaded.system, source)
    links = f"trained ({source}, checkpoint step {step})" if step else f"untrained (no checkpoint under {source})"
    print(f"links: {links}", flush=True)

  os.makedirs(out_dir, exist_ok=True)
  partial_path = os.path.join(out_dir, f"{name}.partial.jsonl")
  records = []
  if os.path.exists(partial_path):
    with open(partial_path) as f:
      records = [json.loads(line) for line in f if line.strip()]
  done = {r["id"] for r in records}
  todo = [x for x in examples if x.id not in done]

  bar = None
  if progress:
    from tqdm import tqdm

    bar = tqdm(total=len(examples), initial=len(examples) - len(todo), desc=f"eval {name}", unit="q")
  if e.warmup and todo:
    # Compiles every program the timed batches will use (same shapes), so seconds per question exclude compiling.
    _run_batch(e.method, loaded, config, todo[: e.batch_size], rounds, task)
  with open(partial_path, "a") as sink:
    for i in range(0, len(todo), e.batch_size):
      batch = todo[i : i + e.batch_size]
      start = time.perf_counter()
      texts, tokens = _run_batch(e.method, loaded, config, batch, rounds, task)
      seconds = (time.perf_counter() - start) / len(batch)
      for x, samples, spent in zip(batch, texts, tokens, strict=True):
        correct = [_correct(x, t, e.scoring) for t in samples]
        record = dict(id=x.id, question=x.question, gold=x.answer, output=samples[0],
                      extracted=_extracted(task, samples[0]), correct=correct[0], pass_at_k=any(correct),
                      samples=samples if len(samples) > 1 else None, tokens=spent, seconds=seconds)  # fmt: skip
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
  result = dict(
    dataset=e.dataset,
    method=e.method,
    rounds=rounds,
    links=links,
    n=n,
    accuracy=sum(r["correct"] for r in records) / n,
    pass_at_k=sum(r["pass_at_k"] for r in records) / n if e.num_samples > 1 else None,
    num_samples=e.num_samples,
    decoded_tokens=sum(r["tokens"] for r in records),
    decoded_tokens_per_question=sum(r["tokens"] for r in records) / n,
    wall_time_s=sum(r["seconds"] for r in records),
    seconds_per_question=sum(r["seconds"] for r in records) / n,
    scoring=e.scoring,
    compile_excluded=bool(e.warmup),
    models=loaded.models,
    config=json.loads(config.to_json_best_effort()),
    versions={p: _version(p) for p in PACKAGES},
    **peak_memory(),
    records=records,
  )
  write_json_new(final_path, result)
  os.unlink(partial_path)
  return result


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None
