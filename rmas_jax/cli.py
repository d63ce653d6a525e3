"""`python -m rmas_jax COMMAND`: command-line entry points for newcomers."""

from __future__ import annotations

import argparse
import sys

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
  p.add_argument("--question", required=True)
  p.add_argument("--rounds", type=int, default=2, help="recursion rounds R")
  p.add_argument("--latent-steps", type=int, default=16, help="latent thoughts m per agent and round")
  p.add_argument("--max-new-tokens", type=int, default=256)
  p.add_argument("--task", default="math", choices=["math", "choice", "code", "reasoning"])


def run_ask(args) -> str:
  """Loads the config's agents, builds the system, answers; accounting goes to stderr."""
  import json

  from rmas_jax.config_lib import load_config
  from rmas_jax.patterns.ask import ask
  from rmas_jax.patterns.graph import PATTERNS
  from rmas_jax.patterns.system import build_system
  from rmas_jax.runtime import enable_compilation_cache
  from rmas_jax.weights.pretrained import load_pretrained

  if not args.question.strip():
    raise ValueError("--question is empty")
  if args.rounds < 1 or args.latent_steps < 1 or args.max_new_tokens < 1:
    raise ValueError("--rounds, --latent-steps and --max-new-tokens must be >= 1")
  config = load_config(args.config)
  if config.style not in PATTERNS:
    raise ValueError(f"config.style: {config.style!r}; expected one of {sorted(PATTERNS)}")
  enable_compilation_cache()
  by_spec = {}  # roles that name the same model share one copy of its weights
  for a in config.agents:
    if a["model"] not in by_spec:
      by_spec[a["model"]] = load_pretrained(a["model"], dtype=config.dtype)
  loaded = {a["role"]: by_spec[a["model"]] for a in config.agents}
  system = build_system(PATTERNS[config.style], {r: p.model for r, p in loaded.items()}, seed=config.seed)
  print("note: the links are freshly initialised (training and checkpoints are not implemented yet)", file=sys.stderr)
  answer = ask(system, {r: p.tokenizer for r, p in loaded.items()}, [args.question], rounds=args.rounds,
               steps=args.latent_steps, max_new_tokens=args.max_new_tokens, task=args.task)[0]  # fmt: skip
  record = {k: v for k, v in vars(answer).items() if k not in ("question", "text")}
  print(json.dumps(record), file=sys.stderr)
  return answer.text


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m rmas_jax", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  _generate_parser(sub)
  _ask_parser(sub)
  args = parser.parse_args(argv)
  try:
    if args.command == "generate":
      sys.stdout.write(run_generate(args) + "\n")
    elif args.command == "ask":
      sys.stdout.write(run_ask(args) + "\n")
  except (ModelLoadError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0
