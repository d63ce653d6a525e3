"""`python -m rmas_jax COMMAND`: command-line entry points for newcomers."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from rmas_jax.interop import cli as convert
from rmas_jax.weights.errors import ModelLoadError


def _generate_parser(sub) -> None:
  p = sub.add_parser("generate", help="continue a prompt with one model; prints only the generated text")
  p.add_argument("--model", required=True, help="registry name, .gguf file, HF checkpoint directory or hub id")
  p.add_argument("--prompt", required=True, help="the text to continue")
  p.add_argument("--max-new-tokens", type=int, default=64)
  p.add_argument("--chat", action="store_true", help="wrap the prompt as a user turn with the model's chat template")
  p.add_argument("--greedy", action="store_true", help="argmax decoding (ignores the sampling options)")
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--top-p", type=float, default=1.0)
  p.add_argument("--top-k", type=int, default=0, help="0 disables")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])


def _check_generate_args(args) -> None:
  if args.max_new_tokens < 1:
    raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
  if not args.greedy and args.temperature <= 0:
    raise ValueError(f"--temperature must be > 0 (use --greedy for argmax), got {args.temperature}")
  if not 0 < args.top_p <= 1:
    raise ValueError(f"--top-p must be in (0, 1], got {args.top_p}")
  if args.top_k < 0:
    raise ValueError(f"--top-k must be >= 0, got {args.top_k}")
  if not args.prompt:
    raise ValueError("--prompt is empty")


def run_generate(args) -> str:
  """Loads the model, generates, returns the decoded continuation."""
  from rmas_jax.generation.sampler import SamplingConfig, generate
  from rmas_jax.runtime import enable_compilation_cache
  from rmas_jax.weights.pretrained import load_pretrained
  from rmas_jax.weights.tokenizer import stop_token_ids

  _check_generate_args(args)
  enable_compilation_cache()
  pre = load_pretrained(args.model, dtype=args.dtype)
  tok = pre.tokenizer
  if args.chat:
    if not tok.chat_template:
      raise ValueError(f"{args.model}: the model has no chat template; drop --chat")
    text = tok.apply_chat_template(
      [{"role": "user", "content": args.prompt}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
  else:
    ids = tok(args.prompt)["input_ids"]
  sampling = SamplingConfig(
    greedy=args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed
  )
  new = generate(
    pre.model,
    [ids],
    max_new_tokens=args.max_new_tokens,
    stop_ids=stop_token_ids(tok, chat=args.chat),
    sampling=sampling,
  )[0]
  return tok.decode(new, skip_special_tokens=True)


def _ask_parser(sub) -> None:
  p = sub.add_parser("ask", help="ask a multi-agent system a question; prints only the answer")
  p.add_argument("--config", required=True, help="configs/<style>.py[:preset]")
  p.add_argument("--question", help="the question (or --questions-file)")
  p.add_argument("--questions-file", help="several questions: JSON lines with a \"question\" field, or one a line; "
                 "their answers print as JSON lines")  # fmt: skip
  p.add_argument("--batch-size", type=int, default=16, help="questions answered at once (default 16)")
  p.add_argument("--rounds", type=int, help="recursion rounds R (default: config.inference.rounds)")
  p.add_argument("--latent-steps", type=int, help="latent thoughts m per agent and round (config.inference)")
  p.add_argument("--max-new-tokens", type=int, help="the decoder's budget (config.generation.max_new_tokens)")
  p.add_argument("--num-samples", type=int, help="answers sampled from the same final latents (pass@k)")
  p.add_argument("--task", choices=["math", "choice", "code", "reasoning"], help="default: config.task")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config field, e.g. --set generation.greedy=False (repeatable)")  # fmt: skip
  p.add_argument("--report", help="write the accounting JSON here (an existing file is never overwritten)")
  p.add_argument("--inspect", metavar="FILE",
                 help="write the latent-thought inspector's JSON here (nearest tokens of every latent step; an "
                      "existing file is never overwritten); runs the rounds turn by turn")  # fmt: skip
  p.add_argument("--inspect-k", type=int, default=5, help="nearest tokens per latent vector (default 5)")
  _links_arguments(p)


def _links_arguments(p) -> None:
  p.add_argument("--workdir", help="a training run directory: answer with its trained links (DIR/checkpoints)")
  p.add_argument("--checkpoint", choices=["latest", "best"], default="latest",
                 help="which of --workdir's checkpoints (default latest)")  # fmt: skip
  p.add_argument("--max-prompt-tokens", type=int, default=0,
                 help="refuse a question whose prompt (latent slots included) is longer (default 0: only the "
                      "agents' contexts bound it)")  # fmt: skip


def _check_links_arguments(args) -> None:
  from rmas_jax.trained_links import check_links_dir

  if args.max_prompt_tokens < 0:
    raise ValueError(f"--max-prompt-tokens must be >= 0, got {args.max_prompt_tokens}")
  if args.workdir:
    check_links_dir(args.workdir, args.checkpoint)
  elif args.checkpoint != "latest":
    raise ValueError("--checkpoint needs --workdir (the run whose checkpoints to read)")


def run_ask(args) -> str:
  """Loads the config's agents, builds the system, answers; accounting goes to stderr and `--report`."""
  import json

  from rmas_jax.config_lib import apply_overrides, load_config, validate
  from rmas_jax.patterns.batched import answer_lines, ask_batched, questions_of
  from rmas_jax.patterns.from_config import load_system, sampling_of, toolbox_of
  from rmas_jax.prompt_limits import check_question_fits
  from rmas_jax.results import write_json_new
  from rmas_jax.runtime import enable_compilation_cache
  from rmas_jax.sharding.mesh import activate, single_process_only
  from rmas_jax.trained_links import load_trained_links

  questions = questions_of(args)
  for flag in ("rounds", "latent_steps", "max_new_tokens", "num_samples"):
    if getattr(args, flag) is not None and getattr(args, flag) < 1:
      raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
  for flag in ("report", "inspect"):
    path = getattr(args, flag)
    if path and os.path.exists(path):
      raise ValueError(f"--{flag} {path}: the file exists; choose a new name (results are never overwritten)")
  if args.inspect_k < 1:
    raise ValueError(f"--inspect-k must be >= 1, got {args.inspect_k}")
  _check_links_arguments(args)  # before any model loads
  config = load_config(args.config)
  apply_overrides(config, args.set)
  for flag, field in (("rounds", "inference.rounds"), ("latent_steps", "inference.latent_steps"),
                      ("num_samples", "inference.num_samples"), ("max_new_tokens", "generation.max_new_tokens"),
                      ("task", "task")):  # fmt: skip
    if getattr(args, flag) is not None:
      apply_overrides(config, [f"{field}={getattr(args, flag)!r}"])
  validate(config)
  activate(config)  # `config.mesh` (e.g. --set mesh.tensor=2): backbones sharded over this host's devices
  single_process_only("ask")
  enable_compilation_cache()
  loaded = load_system(config)
  tools = toolbox_of(config)
  inf = config.inference
  for question in questions:
    check_question_fits(loaded, question, rounds=inf.rounds, steps=inf.latent_steps, task=config.task,
                        max_new_tokens=config.generation.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens)
  if args.workdir:
    links = load_trained_links(config, loaded.system, args.workdir, args.checkpoint)
  else:
    links = f"fresh links (seed {config.seed}); pass --workdir DIR to answer with a training run's links"
  print(f"note: {links}", file=sys.stderr)
  result = ask_batched(loaded.system, loaded.tokenizers, questions, batch_size=args.batch_size, rounds=inf.rounds,
                       steps=inf.latent_steps, max_new_tokens=config.generation.max_new_tokens, task=config.task,
                       sampling=sampling_of(config), prompts=loaded.prompts, stop_strings=tuple(inf.stop_strings),
                       tools=tools, num_samples=inf.num_samples, chunk=inf.chunk,
                       max_tool_tokens=config.tools.result_tokens, trace=bool(args.inspect),
                       prefix_reuse=inf.get("prefix_reuse", True))  # fmt: skip
  answer = result.answers[0]
  report = dict(result.accounting, config=args.config, models=loaded.models, links=links,
                answer=dataclasses.asdict(answer))
  if len(questions) > 1:
    report["answers"] = [dataclasses.asdict(a) for a in result.answers]
  print(json.dumps(result.accounting), file=sys.stderr)
  if args.report:
    write_json_new(args.report, report)
  if args.inspect:
    from rmas_jax.inspector import Inspector

    found = Inspector(loaded.system, loaded.tokenizers, loaded.models).inspect(result.trace, questions,
                                                                               k=args.inspect_k)  # fmt: skip
    write_json_new(args.inspect, dict(found, config=args.config, timeline=result.accounting["timeline"]))
  if len(questions) > 1:
    return answer_lines(result.answers)
  if len(answer.samples) == 1:
    return answer.text
  return "\n".join(f"--- sample {i + 1} ---\n{t}" for i, t in enumerate(answer.samples))


def _serve_parser(sub) -> None:
  p = sub.add_parser("serve", help="a local web app: ask in a browser, watch the rounds, inspect latent thoughts")
  p.add_argument("--config", required=True, help="configs/<style>.py[:preset]: the style loaded first")
  p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback: only this machine)")
  p.add_argument("--port", type=int, default=8000)
  _links_arguments(p)  # --workdir's links serve the --config style; the other styles on offer keep fresh links


def run_serve(args) -> None:
  """Serves the web app until interrupted."""
  from rmas_jax.serve.app import serve

  if not 0 < args.port < 65536:
    raise ValueError(f"--port must be in 1..65535, got {args.port}")
  _check_links_arguments(args)
  serve(args.config, host=args.host, port=args.port, workdir=args.workdir, checkpoint=args.checkpoint,
        max_prompt_tokens=args.max_prompt_tokens)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m rmas_jax", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  _generate_parser(sub)
  _ask_parser(sub)
  _serve_parser(sub)
  convert.add_convert_parser(sub)
  args = parser.parse_args(argv)
  try:
    if args.command == "generate":
      sys.stdout.write(run_generate(args) + "\n")
    elif args.command == "ask":
      sys.stdout.write(run_ask(args) + "\n")
    elif args.command == "serve":
      run_serve(args)
    elif args.command == "convert":
      convert.run_convert(args)
  except (ModelLoadError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0
