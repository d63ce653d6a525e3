"""Tokenizers without torch: `tokenizer.json` of HF directories, and GGUF vocabularies rebuilt through
transformers' torch-free converter (cached on disk, since a 262k-token rebuild takes seconds)."""

from __future__ import annotations

import hashlib
import importlib
import os

from rmas_jax.user_cache import cache_root
from rmas_jax.weights.errors import ModelLoadError

# Turn formats for files that ship none. Gemma's turn markers are the model's own format.
FALLBACK_CHAT_TEMPLATES = {
  "gemma3": (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{% if message['role'] == 'system' %}{% set role = 'user' %}{% endif %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
  ),
}
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")


def tokenizer_from_dir(directory: str):
  """The tokenizer of an HF checkpoint directory."""
  from transformers import AutoTokenizer

  if not any(os.path.exists(os.path.join(directory, f)) for f in ("tokenizer.json", "tokenizer.model")):
    raise ModelLoadError(f"{directory}: no tokenizer.json (or tokenizer.model); the checkpoint has no tokenizer")
  try:
    return AutoTokenizer.from_pretrained(directory)
  except Exception as e:
    raise ModelLoadError(f"{directory}: tokenizer failed to load ({type(e).__name__}: {e})") from None


def _file_key(path: str) -> str:
  st = os.stat(path)
  return hashlib.sha256(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _build_from_gguf(meta: dict, path: str):
  from transformers import PreTrainedTokenizerFast

  mapping = importlib.import_module("transformers.integrations.gguf.gguf_tokenizer_mapping")
  arch = meta["general.architecture"]
  if "tokenizer.ggml.tokens" not in meta:
    raise ModelLoadError(f"{path}: the GGUF file carries no tokenizer (tokenizer.ggml.tokens)")
  tok = {
    name: meta[f"tokenizer.{key}"]
    for key, name in mapping.GGUF_TOKENIZER_MAPPING["tokenizer"].items()
    if f"tokenizer.{key}" in meta
  }
  kwargs = {
    name: meta[f"tokenizer.{key}"]
    for key, name in mapping.GGUF_TOKENIZER_MAPPING["tokenizer_config"].items()
    if f"tokenizer.{key}" in meta
  }
  if tok.get("tokenizer_type") == "llama":
    kwargs.setdefault("add_bos_token", True)
  for name, key in mapping._SPECIAL_TOKENS.items():
    token_id = meta.get(f"tokenizer.ggml.{key}")
    kwargs[name] = tok["tokens"][token_id] if token_id is not None else None
  try:
    backend, _ = mapping.convert_gguf_tokenizer(arch, tok)
  except Exception as e:
    raise ModelLoadError(f"{path}: cannot build the tokenizer from GGUF metadata ({type(e).__name__}: {e})") from None
  tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
  tokenizer.chat_template = meta.get("tokenizer.chat_template") or FALLBACK_CHAT_TEMPLATES.get(arch)
  return tokenizer


def tokenizer_from_gguf(meta: dict, path: str, cache_key: str | None = None):
  """The tokenizer stored in a GGUF file's metadata, cached under the user cache directory.

  Args:
    meta: the file's metadata (`gguf_io.metadata`).
    path: the file, for messages and the default cache key.
    cache_key: a stable key (e.g. the file's sha256); defaults to path, size and mtime.
  """
  from transformers import PreTrainedTokenizerFast

  directory = os.path.join(cache_root(), "tokenizers", cache_key or _file_key(path))
  if os.path.exists(os.path.join(directory, "tokenizer.json")):
    return PreTrainedTokenizerFast.from_pretrained(directory)
  tokenizer = _build_from_gguf(meta, path)
  tmp = directory + f".tmp{os.getpid()}"
  tokenizer.save_pretrained(tmp)
  try:
    os.replace(tmp, directory)
  except OSError:  # another process finished first; theirs is as good
    pass
  return tokenizer


def stop_token_ids(tokenizer, *, chat: bool = False, extra=()) -> tuple[int, ...]:
  """End-of-sequence ids: the tokenizer's eos, any ids given, and with `chat` the end-of-turn markers it knows."""
  ids = {int(i) for i in extra}
  if tokenizer.eos_token_id is not None:
    ids.add(int(tokenizer.eos_token_id))
  if chat:
    ids.update(_end_of_turn_ids(tokenizer))
  return tuple(sorted(ids))


def _end_of_turn_ids(tokenizer) -> tuple[int, ...]:
  # `get_vocab()` builds the whole vocabulary dict (tens of ms); training asks once per example, so keep the answer on
  # the tokenizer object.
  cached = getattr(tokenizer, "_rmas_end_of_turn_ids", None)
  if cached is None:
    vocab = tokenizer.get_vocab()
    cached = tuple(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    try:
      tokenizer._rmas_end_of_turn_ids = cached
    except AttributeError:  # a tokenizer that takes no new attributes just pays again
      pass
  return cached
