"""PyTorch `.pt` state-dict files read and written without torch, and never with a full unpickler.

A file written by `torch.save(module.state_dict())` (torch >= 1.6) is a zip archive whose members share one prefix
(the file's stem at save time): `data.pkl`, a pickle of an `OrderedDict` mapping names to tensors, and one member
`data/<key>` per storage holding its raw little-endian bytes, plus small records (`version`, `byteorder`,
`.format_version`, `.storage_alignment`). Each tensor in the pickle is a call of `torch._utils._rebuild_tensor_v2` on a
persistent id `("storage", <dtype>Storage, key, location, numel)` and its offset, size and stride.

The reader unpickles with an allow-list: `collections.OrderedDict`, the tensor rebuild function and the storage types
of bfloat16, float16 and float32. Any other global (a class, `os.system`, ...) stops the read before anything is
called, so a hostile or unexpected file cannot run code. The writer emits the same layout, pickle opcode by opcode
(without torch there are no torch objects to hand to `pickle`), so that `torch.load(path, weights_only=True)` reads it.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping

import ml_dtypes
import numpy as np

# Storage type name in the pickle -> element dtype. Links are 16-bit or fp32; anything else is not a link file.
STORAGE_DTYPES: dict[str, np.dtype] = {
  "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
  "HalfStorage": np.dtype(np.float16),
  "FloatStorage": np.dtype(np.float32),
}
_STORAGE_OF = {dtype: name for name, dtype in STORAGE_DTYPES.items()}
_ALIGNMENT = 64  # torch aligns every member's data to 64 bytes (its `.storage_alignment` record), so we do too


class ReleaseFileError(ValueError):
  """A release file or directory is unusable; the message is one line naming the file and what is wrong."""


@dataclasses.dataclass
class StateDict:
  """The tensors of one `.pt` file.

  Attributes:
    path: the file.
    tensors: name -> array, in the file's order, in the dtype stored (bfloat16 as `ml_dtypes.bfloat16`).
    sha256: hex digest of the file's bytes.
  """

  path: str
  tensors: collections.OrderedDict[str, np.ndarray]
  sha256: str


class _Refused(Exception):
  """Raised inside the unpickler for anything outside the allow-list."""


class _StorageType:
  """Stands for one `torch.<X>Storage` class in the pickle."""

  __slots__ = ("name",)

  def __init__(self, name: str):
    self.name = name


class _Tensor:
  """A rebuilt tensor; a plain slotted holder, so a pickle cannot set attributes on it (BUILD fails)."""

  __slots__ = ("array",)

  def __init__(self, array: np.ndarray):
    self.array = array


def _int_tuple(value, what: str) -> tuple[int, ...]:
  if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
    raise _Refused(f"tensor {what} {value!r} is not a tuple of ints")
  return value


def _rebuild_tensor(storage, offset, size, stride, requires_grad, hooks, metadata=None):
  """What `torch._utils._rebuild_tensor_v2` does, for a numpy storage: a strided view, copied out."""
  del requires_grad, metadata  # irrelevant to the values
  if not isinstance(storage, np.ndarray):
    raise _Refused("a tensor whose storage is not a storage record")
  if hooks is not None and (not isinstance(hooks, collections.OrderedDict) or hooks):
    raise _Refused("a tensor with backward hooks")
  size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
  if not isinstance(offset, int) or offset < 0 or len(size) != len(stride) or min(size + stride, default=0) < 0:
    raise _Refused(f"a tensor with offset {offset!r}, size {size}, stride {stride}")
  if 0 in size:
    return _Tensor(np.zeros(size, storage.dtype))
  last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
  if last >= storage.size:
    raise _Refused(f"a tensor of size {size} reaching element {last} of a storage of {storage.size}")
  item = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * item for s in stride])
  return _Tensor(np.array(view))


class _WeightsUnpickler(pickle.Unpickler):
  """Admits only the globals a state dict of tensors needs; reads storages from the zip on demand."""

  def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, big_endian: bool):
    super().__init__(io.BytesIO(data))
    self._archive, self._prefix, self._big = archive, prefix, big_endian
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module: str, name: str):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if module == "torch" and name in STORAGE_DTYPES:
      return _StorageType(name)
    if module == "torch" and name.endswith("Storage"):
      raise _Refused(f"storage type torch.{name} (link files hold bfloat16, float16 or float32)")
    raise _Refused(f"the global {module}.{name}, which a state dict of tensors does not need")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
      raise _Refused(f"a persistent id {pid!r:.80} that is not a storage record")
    _, kind, key, _location, numel = pid
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
      raise _Refused(f"a storage record with key {key!r:.40} and size {numel!r:.40}")
    if key not in self._storages:
      dtype = STORAGE_DTYPES[kind.name]
      member = f"{self._prefix}/data/{key}"
      try:
        raw = self._archive.read(member)
      except KeyError:
        raise _Refused(f"storage {key}, whose member {member} is missing") from None
      if len(raw) != numel * dtype.itemsize:
        raise _Refused(f"storage {key}: {len(raw)} bytes for {numel} {dtype} elements")
      bits = np.frombuffer(raw, np.dtype(f"{'>' if self._big else '<'}u{dtype.itemsize}"))
      self._storages[key] = bits.astype(f"=u{dtype.itemsize}").view(dtype)
    return self._storages[key]


def _prefix_of(archive: zipfile.ZipFile, path: str) -> str:
  pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
  if len(pickles) != 1:
    raise ReleaseFileError(f"{path}: not a torch state-dict file ({len(pickles)} <prefix>/data.pkl members, "
                           "expected 1)")  # fmt: skip
  return pickles[0].split("/")[0]


def file_sha256(path: str) -> str:
  """Hex SHA-256 of a file, read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def read_state_dict(path: str) -> StateDict:
  """Reads a `torch.save`d state dict of tensors, without torch and without a full unpickler.

  Args:
    path: a `.pt` file in torch's zip format.

  Returns:
    Its tensors as numpy arrays, in the file's order and stored dtype.

  Raises:
    ReleaseFileError: not a zip-format torch file, a pickle needing anything beyond tensors (named), a storage type
      other than bfloat16/float16/float32, a missing or short storage, or a value that is not a tensor.
  """
  if not os.path.isfile(path):
    raise ReleaseFileError(f"{path}: no such file")
  if not zipfile.is_zipfile(path):
    raise ReleaseFileError(f"{path}: not a zip-format torch file (torch.save of torch >= 1.6); re-save it with "
                           "torch.save")  # fmt: skip
  try:
    with zipfile.ZipFile(path) as archive:
      prefix = _prefix_of(archive, path)
      names = set(archive.namelist())
      order = f"{prefix}/byteorder"
      big = order in names and archive.read(order).strip() == b"big"
      unpickler = _WeightsUnpickler(archive.read(f"{prefix}/data.pkl"), archive, prefix, big)
      loaded = unpickler.load()
  except _Refused as e:
    raise ReleaseFileError(f"{path}: refused to unpickle {e}") from None
  except ReleaseFileError:
    raise
  except Exception as e:  # noqa: BLE001 - a malformed pickle or zip can fail in many ways; each is one line here
    reason = str(e).splitlines()[0] if str(e) else ""
    raise ReleaseFileError(f"{path}: unreadable state dict ({type(e).__name__}: {reason})") from None
  if not isinstance(loaded, dict):
    raise ReleaseFileError(f"{path}: holds a {type(loaded).__name__}, not a state dict (a mapping of names to tensors)")
  tensors: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
  for key, value in loaded.items():
    if not isinstance(key, str) or not isinstance(value, _Tensor):
      raise ReleaseFileError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
    tensors[key] = value.array
  return StateDict(path, tensors, file_sha256(path))


# ----- writing -----


def _unicode(text: str) -> bytes:
  data = text.encode("utf-8")
  return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
  return pickle.BININT + struct.pack("<i", value)


def _tuple(items: list[bytes]) -> bytes:
  return pickle.MARK + b"".join(items) + pickle.TUPLE


def _global(module: str, name: str) -> bytes:
  return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _state_dict_pickle(entries: list[tuple[str, np.ndarray]]) -> bytes:
  """Protocol-2 pickle of `OrderedDict(name -> tensor)` with storage `i` for entry `i`, as torch writes it."""
  ordered_dict = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
  out = [pickle.PROTO + b"\x02", ordered_dict, pickle.MARK]
  for i, (name, array) in enumerate(entries):
    strides = [int(np.prod(array.shape[k + 1 :], dtype=np.int64)) for k in range(array.ndim)]
    storage = _tuple([_unicode("storage"), _global("torch", _STORAGE_OF[array.dtype]), _unicode(str(i)),
                      _unicode("cpu"), _int(array.size)])  # fmt: skip
    args = _tuple([storage + pickle.BINPERSID, _int(0), _tuple([_int(n) for n in array.shape]),
                   _tuple([_int(s) for s in strides]), pickle.NEWFALSE, ordered_dict])  # fmt: skip
    out += [_unicode(name), _global("torch._utils", "_rebuild_tensor_v2"), args, pickle.REDUCE]
  out += [pickle.SETITEMS, pickle.STOP]
  return b"".join(out)


def _write_aligned(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
  """One stored member whose data starts on a 64-byte boundary (padding in the local header's extra field)."""
  info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
  info.compress_type = zipfile.ZIP_STORED
  start = archive.fp.tell() + 30 + len(name.encode()) + 4  # local header, name, extra field's own 4-byte header
  info.extra = struct.pack("<HH", 0x4246, (-start) % _ALIGNMENT) + b"Z" * ((-start) % _ALIGNMENT)
  archive.writestr(info, data)


def write_state_dict(path: str, tensors: Mapping[str, np.ndarray]) -> str:
  """Writes `tensors` as a torch state-dict file that `torch.load(path, weights_only=True)` reads.

  Args:
    path: the `.pt` file to create (written to a temporary name, then renamed into place).
    tensors: name -> array of dtype bfloat16 (`ml_dtypes`), float16 or float32, in the order to keep.

  Returns:
    The SHA-256 of the written file.
  """
  entries = []
  for name, array in tensors.items():
    array = np.ascontiguousarray(array)
    if array.dtype not in _STORAGE_OF:
      raise ValueError(f"{path}: tensor {name} has dtype {array.dtype}; expected bfloat16, float16 or float32")
    entries.append((name, array))
  prefix = os.path.splitext(os.path.basename(path))[0]  # torch names the archive after the file's stem
  serialization_id = hashlib.sha1(b"".join(a.tobytes() for _, a in entries)).hexdigest()
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
      _write_aligned(archive, f"{prefix}/data.pkl", _state_dict_pickle(entries))
      _write_aligned(archive, f"{prefix}/.format_version", b"1")
      _write_aligned(archive, f"{prefix}/.storage_alignment", str(_ALIGNMENT).encode())
      _write_aligned(archive, f"{prefix}/byteorder", b"little")
      for i, (_, array) in enumerate(entries):
        little = array.view(f"u{array.dtype.itemsize}").astype(f"<u{array.dtype.itemsize}")  # torch's files are LE
        _write_aligned(archive, f"{prefix}/data/{i}", little.tobytes())
      _write_aligned(archive, f"{prefix}/version", b"3\n")
      _write_aligned(archive, f"{prefix}/.data/serialization_id", serialization_id.encode())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return file_sha256(path)
