"""The release's link state dicts and our link parameters, one to the other.

The release's inner link (`ln_res_adapter`) has the modules `proj1`, `proj2`, `pre_ln`, `post_ln`; its outer link
(`outer_ln_res_adapter`) `proj1`, `proj2`, `ln_source`, `ln_target`, `residual_proj`. Our `official` RecursiveLink
(`rmas_jax.links.recursive_link`) has the same maths with `pre_ln`/`post_ln` in both kinds, so `ln_source` is our
outer `pre_ln` and `ln_target` our outer `post_ln`. Linear weights are `[out, in]` there and `[in, out]` kernels here.
"""

from __future__ import annotations

import collections
from typing import Literal

import ml_dtypes
import numpy as np

from rmas_jax.interop.pt_files import ReleaseFileError, StateDict

Kind = Literal["inner", "outer"]
# The release's state-dict keys in the order its modules register them (the order `torch.save` writes).
KEYS: dict[str, tuple[str, ...]] = {
  "inner": ("proj1.weight", "proj1.bias", "proj2.weight", "proj2.bias", "pre_ln.weight", "pre_ln.bias",
            "post_ln.weight", "post_ln.bias"),  # fmt: skip
  "outer": ("proj1.weight", "proj1.bias", "proj2.weight", "proj2.bias", "ln_source.weight", "ln_source.bias",
            "ln_target.weight", "ln_target.bias", "residual_proj.weight", "residual_proj.bias"),  # fmt: skip
}
_OUR_MODULE = {"proj1": "proj1", "proj2": "proj2", "pre_ln": "pre_ln", "post_ln": "post_ln", "ln_source": "pre_ln",
               "ln_target": "post_ln", "residual_proj": "residual_proj"}  # fmt: skip
_OUTER_ONLY = ("ln_source.", "ln_target.", "residual_proj.")
DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float32": np.dtype(np.float32)}


def release_shapes(kind: Kind, d_in: int, d_out: int) -> dict[str, tuple[int, ...]]:
  """Each tensor's shape in the release's files for a link from `d_in` to `d_out` (outer hidden width 2·d_out)."""
  if kind == "inner":
    d = d_in
    return {"proj1.weight": (d, d), "proj1.bias": (d,), "proj2.weight": (d, d), "proj2.bias": (d,),
            "pre_ln.weight": (d,), "pre_ln.bias": (d,), "post_ln.weight": (d,), "post_ln.bias": (d,)}  # fmt: skip
  h = 2 * d_out
  return {"proj1.weight": (h, d_in), "proj1.bias": (h,), "proj2.weight": (d_out, h), "proj2.bias": (d_out,),
          "ln_source.weight": (d_in,), "ln_source.bias": (d_in,), "ln_target.weight": (d_out,),
          "ln_target.bias": (d_out,), "residual_proj.weight": (d_out, d_in),
          "residual_proj.bias": (d_out,)}  # fmt: skip


def _check_keys(sd: StateDict, kind: Kind, what: str) -> None:
  got, wanted = set(sd.tensors), set(KEYS[kind])
  if got == wanted:
    return
  looks_outer = any(k.startswith(_OUTER_ONLY) for k in got)
  if kind == "inner" and looks_outer:
    raise ReleaseFileError(f"{sd.path}: an outer link's keys (ln_source., ln_target., residual_proj.), but {what} "
                           "is an inner link")  # fmt: skip
  if kind == "outer" and not looks_outer and any(k.startswith(("pre_ln.", "post_ln.")) for k in got):
    raise ReleaseFileError(f"{sd.path}: an inner link's keys (pre_ln., post_ln.), but {what} is an outer link")
  missing, extra = sorted(wanted - got), sorted(got - wanted)
  problems = ([f"missing key{'s' * (len(missing) > 1)} {', '.join(missing)}"] if missing else []) + (
    [f"unexpected key{'s' * (len(extra) > 1)} {', '.join(extra)}"] if extra else [])  # fmt: skip
  raise ReleaseFileError(f"{sd.path}: {'; '.join(problems)} ({what} has exactly the {len(wanted)} keys "
                         f"{', '.join(KEYS[kind])})")  # fmt: skip


def link_from_release(sd: StateDict, kind: Kind, d_in: int, d_out: int, what: str) -> dict:
  """Our link's parameters (a pure dict, fp32) from a release state dict, checked strictly.

  Args:
    sd: the file's tensors.
    kind: `inner` or `outer`.
    d_in: the sending agent's width (for an inner link, the agent's).
    d_out: the receiving agent's width (for an inner link, the agent's).
    what: the link in words for errors, e.g. "the inner link of critic (tiny:gemma3:48, width 48)".

  Raises:
    ReleaseFileError: a missing or extra key, a shape that does not fit the widths, or a non-finite value.
  """
  _check_keys(sd, kind, what)
  shapes = release_shapes(kind, d_in, d_out)
  for key in KEYS[kind]:
    shape = tuple(sd.tensors[key].shape)
    if shape != shapes[key]:
      raise ReleaseFileError(f"{sd.path}: {key} has shape {list(shape)}, expected {list(shapes[key])} for {what}")
  pure: dict = collections.defaultdict(dict)
  for key in KEYS[kind]:
    module, leaf = key.split(".")
    value = sd.tensors[key].astype(np.float32)  # exact for bfloat16 and float16
    if not np.isfinite(value).all():
      raise ReleaseFileError(f"{sd.path}: {key} holds NaN or inf")
    if leaf == "weight" and value.ndim == 2:  # a Linear's [out, in] weight is our [in, out] kernel
      pure[_OUR_MODULE[module]]["kernel"] = np.ascontiguousarray(value.T)
    else:
      pure[_OUR_MODULE[module]][leaf] = value
  return dict(pure)


def link_to_release(pure: dict, kind: Kind, dtype: str = "bfloat16") -> collections.OrderedDict[str, np.ndarray]:
  """The release's state dict of one of our links (a pure dict of its parameters), in its key order and `dtype`."""
  out = collections.OrderedDict()
  for key in KEYS[kind]:
    module, leaf = key.split(".")
    node = pure[_OUR_MODULE[module]]
    value = np.asarray(node["kernel"]).T if (leaf == "weight" and "kernel" in node) else np.asarray(node[leaf])
    out[key] = np.ascontiguousarray(value.astype(np.float32).astype(DTYPES[dtype]))
  return out
