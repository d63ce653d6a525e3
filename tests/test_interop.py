"""The release's link files in and out (`rmas_jax.interop`), against torch modules of the release's structure.

The reference here is independent of our code: torch modules built the way the release builds its links
(`ln_res_adapter`, `outer_ln_res_adapter`), with randomised weights, saved with `torch.save(module.state_dict())` in
bf16 as the release's files are, next to manifests in each of the release's layouts, and loaded back with
`load_state_dict(strict=True)`. Agents are the tiny random ones of `configs/tiny.py` (planner 64, critic 48, solver
32 wide), so every outer link maps between unequal widths.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from rmas_jax.cli import main as cli_main
from rmas_jax.config_lib import load_config
from rmas_jax.interop import link_store
from rmas_jax.interop.pt_files import ReleaseFileError, read_state_dict
from rmas_jax.interop.release_files import resolve_inner_file
from rmas_jax.interop.release_import import import_release

ROOT = os.path.join(os.path.dirname(__file__), "..")
TINY = "configs/tiny.py"
WIDTHS = {"planner": 64, "critic": 48, "solver": 32}
EDGES = {"outer_12": ("planner", "critic"), "outer_23": ("critic", "solver"), "outer_31": ("solver", "planner")}
NAMES = {"planner": "Planner", "critic": "Critic", "solver": "Solver"}


class ReleaseInner(nn.Module):
  """The release's inner link: post_ln(x + proj2(gelu(proj1(pre_ln(x)))))."""

  def __init__(self, d: int):
    super().__init__()
    self.proj1, self.proj2 = nn.Linear(d, d), nn.Linear(d, d)
    self.pre_ln, self.post_ln = nn.LayerNorm(d), nn.LayerNorm(d)
    self.act = nn.GELU()

  def forward(self, x):
    return self.post_ln(x + self.proj2(self.act(self.proj1(self.pre_ln(x)))))


class ReleaseOuter(nn.Module):
  """The release's outer link: ln_target(proj2(gelu(proj1(ln_source(x)))) + residual_proj(x)), hidden 2·d_out."""

  def __init__(self, d_in: int, d_out: int):
    super().__init__()
    self.proj1, self.proj2 = nn.Linear(d_in, 2 * d_out), nn.Linear(2 * d_out, d_out)
    self.ln_source, self.ln_target = nn.LayerNorm(d_in), nn.LayerNorm(d_out)
    self.residual_proj = nn.Linear(d_in, d_out)
    self.act = nn.GELU()

  def forward(self, x):
    return self.ln_target(self.proj2(self.act(self.proj1(self.ln_source(x)))) + self.residual_proj(x))


def _randomised(module: nn.Module, seed: int, dtype=torch.bfloat16) -> nn.Module:
  """Every parameter random (LayerNorm gains away from 1, biases away from 0), so no mapping slip can hide."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1 + 0.3 * noise if "ln" in name and name.endswith("weight") else 0.2 * noise)
  return module.to(dtype)


def _save(module: nn.Module, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  torch.save(module.state_dict(), path)


def _json(path: str, value) -> None:
  with open(path, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)


def _outer_name(key: str, task: str | None) -> str:
  src, dst = EDGES[key]
  return f"{NAMES[src]}-{NAMES[dst]}-Outerlink{f'({task})' if task else ''}.pt"


def _entries(task: str | None, legacy_names: bool = False) -> list[dict]:
  return [dict(legacy_key=k, legacy_filename=f"{k}.pt", filename=f"{k}.pt" if legacy_names else _outer_name(k, task),
               source_role=NAMES[s], target_role=NAMES[d], adapter_type="outer_ln_res_adapter", in_dim=WIDTHS[s],
               out_dim=WIDTHS[d]) for k, (s, d) in EDGES.items()]  # fmt: skip


def write_outer_dir(directory: str, modules: dict, layout: str) -> str:
  """The math links of `modules[task][key]` in one of the release's outer-directory layouts."""
  os.makedirs(directory, exist_ok=True)
  legacy = layout in ("flat", "legacy-config", "legacy-names")
  tasks = ("math", "code") if layout == "task-scoped" else ("math",)
  for task in tasks:
    for key, module in modules[task].items():
      _save(module, os.path.join(directory, f"{key}.pt" if legacy else _outer_name(key, task)))
  dims = {f"{k}_{f}": v for k, (s, d) in EDGES.items()
          for f, v in (("in_dim", WIDTHS[s]), ("out_dim", WIDTHS[d]), ("type", "outer_ln_res_adapter"))}  # fmt: skip
  if layout == "task-scoped":  # the Sequential release
    _json(os.path.join(directory, "outerlink_config.json"), {"format_version": 1, "paradigm": "sequential",
          "variant": "light", "tasks": {t: {"legacy_config_filename": f"outer_adapter_config({t}).json", "task": t,
                                            "adapters": _entries(t)} for t in tasks}})  # fmt: skip
    for t in tasks:
      _json(os.path.join(directory, f"outer_adapter_config({t}).json"), dims)
  elif layout == "flat-meta":  # as the Deliberation release writes it
    _json(os.path.join(directory, "outerlink_config.json"), {"format_version": 1, "paradigm": "sequential",
          "legacy_config_filename": "outer_adapter_config.json", "meta": {"mas_shape": "chain", "mas_task": "math",
          "num_recursive_rounds": 3}, "adapters": _entries(None)})  # fmt: skip
    for key in modules["math"]:  # that layout names files without a task
      os.replace(os.path.join(directory, _outer_name(key, "math")), os.path.join(directory, _outer_name(key, None)))
  elif layout == "flat":  # as the release's training writes it
    _json(os.path.join(directory, "outerlink_config.json"), {"format_version": 1, "paradigm": "sequential",
          "legacy_config_filename": "outer_adapter_config.json",
          "adapters": [{k: e[k] for k in ("legacy_key", "filename", "adapter_type", "in_dim", "out_dim")}
                       for e in _entries(None, legacy_names=True)]})  # fmt: skip
  elif layout == "legacy-config":
    _json(os.path.join(directory, "outer_adapter_config(math).json"), dims)
  return directory


def write_role_repo(directory: str, modules: dict[str, nn.Module]) -> str:
  """A role repository's inner links: `adapter(task).pt` per task, its manifest and type file (no model)."""
  for task, module in modules.items():
    _save(module, os.path.join(directory, f"adapter({task}).pt"))
  _json(os.path.join(directory, "adapter_config.json"), {"adapter_type": "ln_res_adapter"})
  _json(os.path.join(directory, "innerlink_config.json"), {"tasks": {t: {"adapter.pt": f"adapter({t}).pt"}
                                                                     for t in modules}})  # fmt: skip
  return directory


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  """The synthetic release of the tiny sequential system: both tasks' links, bf16."""
  root = tmp_path_factory.mktemp("release")
  seeds = iter(range(1000))
  inner = {r: {t: _randomised(ReleaseInner(d), next(seeds)) for t in ("math", "code")} for r, d in WIDTHS.items()}
  outer = {t: {k: _randomised(ReleaseOuter(WIDTHS[s], WIDTHS[d]), next(seeds)) for k, (s, d) in EDGES.items()}
           for t in ("math", "code")}  # fmt: skip
  repos = {r: write_role_repo(str(root / f"role-{r}"), inner[r]) for r in WIDTHS}
  outer_dir = write_outer_dir(str(root / "outer"), outer, "task-scoped")
  return dict(root=root, inner=inner, outer=outer, repos=repos, outer_dir=outer_dir)


def _inner_args(repos: dict[str, str]) -> list[str]:
  return [a for role, path in repos.items() for a in ("--inner", f"{role}={path}")]


def convert(*args: str) -> tuple[int, str, str]:
  """`python -m rmas_jax convert ...` in-process: (exit code, stdout, stderr)."""
  import contextlib
  import io

  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = cli_main(["convert", *args])
  return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("work") / "w")
  code, out, err = convert("from-release", "--config", TINY, "--outer", release["outer_dir"], "--task", "math",
                           "--workdir", workdir, *_inner_args(release["repos"]))  # fmt: skip
  assert code == 0, err
  return workdir, json.loads(out)


def _torch_link(kind: str, path: str, d_in: int, d_out: int) -> nn.Module:
  module = ReleaseInner(d_in) if kind == "inner" else ReleaseOuter(d_in, d_out)
  module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
  return module.float().eval()


def test_imported_links_compute_what_the_release_modules_compute(release, converted):
  """`restore_links` (what eval.py and `ask --workdir` call) reads the converted links, and each link, inner and
  outer, maps inputs as the release's torch module from the same file does, fp32 compute, within 1e-5."""
  from rmas_jax.training.trainer import restore_links

  workdir, summary = converted
  config = load_config(TINY)
  system = link_store.link_skeleton(config, WIDTHS)  # the links of the loaded system, without its backbones
  step = restore_links(config, system, workdir)
  assert step == summary["step"] == config.train.inner_steps + config.train.outer_steps
  x = np.random.default_rng(0).normal(size=(2, 3, 64)).astype(np.float32) * 3
  for role, d in WIDTHS.items():
    ref = _torch_link("inner", os.path.join(release["repos"][role], "adapter(math).pt"), d, d)
    ours = np.asarray(system.agents[role].inner(x[..., :d]))
    np.testing.assert_allclose(ours, ref(torch.from_numpy(x[..., :d])).detach().numpy(), atol=1e-5, rtol=0)
  for key, (src, dst) in EDGES.items():
    ref = _torch_link("outer", os.path.join(release["outer_dir"], _outer_name(key, "math")), WIDTHS[src], WIDTHS[dst])
    ours = np.asarray(system.outer[f"{src}_to_{dst}"](x[..., : WIDTHS[src]]))
    assert ours.shape == (2, 3, WIDTHS[dst])
    np.testing.assert_allclose(ours, ref(torch.from_numpy(x[..., : WIDTHS[src]])).detach().numpy(), atol=1e-5,
                               rtol=0)  # fmt: skip

  with open(os.path.join(workdir, "links_source.json")) as f:
    source = json.load(f)
  assert source["kind"] == "release" and source["task"] == "math" and source["layout"] == "task-scoped manifest"
  assert source["outer"] == os.path.abspath(release["outer_dir"])
  wanted = {r: os.path.abspath(os.path.join(p, "adapter(math).pt")) for r, p in release["repos"].items()}
  assert source["inner"] == wanted
  assert len(source["files"]) == 6
  for path, digest in source["files"].items():
    with open(path, "rb") as f:
      assert hashlib.sha256(f.read()).hexdigest() == digest


def test_ask_answers_with_the_release_links_and_says_so(converted, capsys):
  """The issue's end-to-end check: tiny agents, converted links, `ask --workdir` answers and names their source."""
  workdir, _ = converted
  code = cli_main(["ask", "--config", TINY, "--workdir", workdir, "--question", "What is 2 + 3?", "--rounds", "1",
                   "--latent-steps", "1", "--max-new-tokens", "2"])  # fmt: skip
  err = capsys.readouterr().err
  assert code == 0, err
  assert f"of {os.path.join(workdir, 'checkpoints')}; from the release" in err and "task math" in err


def test_import_then_export_is_bit_exact_and_loads_strictly_in_torch(release, converted, tmp_path):
  workdir, _ = converted
  out = str(tmp_path / "export")
  code, _, err = convert("to-release", "--config", TINY, "--workdir", workdir, "--out", out, "--task", "math")
  assert code == 0, err
  files = {os.path.join(out, _outer_name(k, "math")): (release["outer"]["math"][k], "outer") for k in EDGES}
  files.update({os.path.join(out, r, "adapter(math).pt"): (release["inner"][r]["math"], "inner") for r in WIDTHS})
  for path, (module, kind) in files.items():
    back = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # mmap: storages 64-byte aligned
    original = module.state_dict()
    assert list(back) == list(original)  # the release's key order
    for key, value in original.items():
      assert back[key].dtype == torch.bfloat16 and torch.equal(back[key].view(torch.int16), value.view(torch.int16))
    d_in, d_out = original["proj1.weight"].shape[1], original["proj2.bias"].shape[0]
    (ReleaseInner(d_out) if kind == "inner" else ReleaseOuter(d_in, d_out)).load_state_dict(back, strict=True)
  manifest = json.load(open(os.path.join(out, "outerlink_config.json")))
  assert manifest["paradigm"] == "sequential" and list(manifest["tasks"]) == ["math"]
  assert {e["legacy_key"]: e["filename"] for e in manifest["tasks"]["math"]["adapters"]} == {
    k: _outer_name(k, "math") for k in EDGES}  # fmt: skip
  assert json.load(open(os.path.join(out, "outer_adapter_config(math).json")))["outer_23_out_dim"] == 32
  assert json.load(open(os.path.join(out, "planner", "adapter_config.json"))) == {"adapter_type": "ln_res_adapter"}
  # The same files are ours to read again, and a second task's links join the manifests; nothing is overwritten.
  assert resolve_inner_file(os.path.join(out, "critic"), "math") == os.path.join(out, "critic", "adapter(math).pt")
  code, _, err = convert("to-release", "--config", TINY, "--workdir", workdir, "--out", out, "--task", "math")
  assert code == 2 and "exists" in err and len(err.strip().splitlines()) == 1
  code, _, err = convert("to-release", "--config", TINY, "--workdir", workdir, "--out", out, "--task", "code",
                         "--dtype", "float32")  # fmt: skip
  assert code == 0, err
  assert set(json.load(open(os.path.join(out, "outerlink_config.json")))["tasks"]) == {"math", "code"}
  assert json.load(open(os.path.join(out, "solver", "innerlink_config.json")))["tasks"]["code"] == {
    "adapter.pt": "adapter(code).pt"}  # fmt: skip
  as_fp32 = torch.load(os.path.join(out, "solver", "adapter(code).pt"), weights_only=True)
  original = release["inner"]["solver"]["math"].state_dict()  # the workdir holds the math links, named for code
  assert all(as_fp32[k].dtype == torch.float32 and torch.equal(as_fp32[k], v.float()) for k, v in original.items())


@pytest.mark.parametrize("layout", ["flat-meta", "flat", "legacy-config", "legacy-names"])
def test_every_manifest_layout_resolves_to_the_same_links(release, layout, tmp_path):
  """The release's other layouts (and directories without a manifest) give each edge its own file's tensors."""
  outer_dir = write_outer_dir(str(tmp_path / "outer"), release["outer"], layout)
  config = load_config(TINY)
  record = import_release(config, config_spec=TINY, outer=outer_dir, inner=release["repos"], task="math",
                          workdir=str(tmp_path / "w"))  # fmt: skip
  assert record["layout"] == {"flat-meta": "flat manifest with meta", "flat": "flat manifest",
                              "legacy-config": "legacy config", "legacy-names": "legacy file names"}[layout]
  links, _ = link_store.load_links(config, str(tmp_path / "w"))
  for key, (src, dst) in EDGES.items():
    ours = links["outer"][f"{src}_to_{dst}"]
    ref = {k: v.float().numpy() for k, v in release["outer"]["math"][key].state_dict().items()}
    np.testing.assert_array_equal(np.asarray(ours["proj1"]["kernel"]), ref["proj1.weight"].T)
    np.testing.assert_array_equal(np.asarray(ours["residual_proj"]["kernel"]), ref["residual_proj.weight"].T)
    np.testing.assert_array_equal(np.asarray(ours["pre_ln"]["weight"]), ref["ln_source.weight"])
    np.testing.assert_array_equal(np.asarray(ours["post_ln"]["bias"]), ref["ln_target.bias"])


def test_mixture_edges_map_to_their_legacy_keys(tmp_path):
  """Mixture's `1s/2s/3s` (experts to summarizer) and `s1/s2/s3` (back), one set of links without a task."""
  config = load_config("configs/tiny.py:mixture")
  widths = link_store.agent_widths(config)
  names = {"math_expert": "Math", "code_expert": "Code", "science_expert": "Science", "summarizer": "Summarizer"}
  experts = ["math_expert", "code_expert", "science_expert"]
  edges = {f"outer_{i + 1}s": (e, "summarizer") for i, e in enumerate(experts)}
  edges.update({f"outer_s{i + 1}": ("summarizer", e) for i, e in enumerate(experts)})
  outer_dir, modules = tmp_path / "outer", {}
  for n, (key, (s, d)) in enumerate(edges.items()):
    modules[key] = _randomised(ReleaseOuter(widths[s], widths[d]), 100 + n)
    _save(modules[key], str(outer_dir / f"{names[s]}-{names[d]}-Outerlink.pt"))
  _json(str(outer_dir / "outerlink_config.json"), {"format_version": 1, "paradigm": "mixture",
        "legacy_config_filename": "outer_adapter_config.json",
        "adapters": [{"legacy_key": k, "filename": f"{names[s]}-{names[d]}-Outerlink.pt"}
                     for k, (s, d) in edges.items()]})  # fmt: skip
  inner = {}
  for n, role in enumerate(names):
    inner[role] = str(tmp_path / role)
    _save(_randomised(ReleaseInner(widths[role]), 200 + n), os.path.join(inner[role], "adapter.pt"))
  with pytest.raises(ValueError, match="no task split"):
    import_release(config, config_spec="m", outer=str(outer_dir), inner=inner, task="math", workdir=str(tmp_path / "w"))
  import_release(config, config_spec="m", outer=str(outer_dir), inner=inner, task=None, workdir=str(tmp_path / "w"))
  links, _ = link_store.load_links(config, str(tmp_path / "w"))
  for key, (s, d) in edges.items():
    np.testing.assert_array_equal(np.asarray(links["outer"][f"{s}_to_{d}"]["proj2"]["kernel"]),
                                  modules[key].state_dict()["proj2.weight"].float().numpy().T)  # fmt: skip


def test_fp16_and_fp32_files_read_exactly(release, tmp_path):
  """The dtype is read from each file: fp16 and fp32 links import with their exact values (upcast to fp32)."""
  repos = dict(release["repos"])
  planner = _randomised(ReleaseInner(64), 7, torch.float16)
  critic = _randomised(ReleaseInner(48), 8, torch.float32)
  repos["planner"] = str(tmp_path / "p" / "adapter(math).pt")
  repos["critic"] = str(tmp_path / "c" / "adapter(math).pt")
  _save(planner, repos["planner"])
  _save(critic, repos["critic"])
  assert read_state_dict(repos["planner"]).tensors["proj1.weight"].dtype == np.float16
  config = load_config(TINY)
  record = import_release(config, config_spec=TINY, outer=release["outer_dir"], inner=repos, task="math",
                          workdir=str(tmp_path / "w"))  # fmt: skip
  assert record["dtypes"][os.path.abspath(repos["planner"])] == "float16"
  links, _ = link_store.load_links(config, str(tmp_path / "w"))
  for role, module in (("planner", planner), ("critic", critic)):
    ref = module.state_dict()
    ours = links["agents"][role]["inner"]
    np.testing.assert_array_equal(np.asarray(ours["proj2"]["kernel"]), ref["proj2.weight"].float().numpy().T)
    np.testing.assert_array_equal(np.asarray(ours["post_ln"]["weight"]), ref["post_ln.weight"].float().numpy())


def _broken(release, tmp_path, how: str) -> list[str]:
  """Arguments of a `from-release` run over a copy of the release with one fault, and the text the error names."""
  outer = shutil.copytree(release["outer_dir"], tmp_path / "outer")
  repos = {r: str(shutil.copytree(p, tmp_path / f"role-{r}")) for r, p in release["repos"].items()}
  critic_file = os.path.join(repos["critic"], "adapter(math).pt")
  manifest = outer / "outerlink_config.json"
  if how in ("missing key", "extra key"):
    sd = torch.load(critic_file, weights_only=True)
    if how == "missing key":
      del sd["post_ln.bias"]
    else:
      sd["post_ln.scale"] = torch.ones(48, dtype=torch.bfloat16)
    torch.save(sd, critic_file)
  elif how == "width":
    _save(_randomised(ReleaseInner(64), 1), critic_file)
  elif how == "outer width":
    _save(_randomised(ReleaseOuter(64, 64), 1), str(outer / _outer_name("outer_12", "math")))
  elif how == "missing file":
    os.remove(outer / _outer_name("outer_23", "math"))
  elif how == "paradigm":
    data = json.load(open(manifest))
    _json(str(manifest), dict(data, paradigm="mixture"))
  elif how == "task":
    data = json.load(open(manifest))
    _json(str(manifest), dict(data, tasks={"code": data["tasks"]["code"]}))
  elif how == "non-tensor":
    torch.save({"proj1.weight": 3, "note": "hello"}, critic_file)
  elif how == "legacy format":
    torch.save(torch.load(critic_file, weights_only=True), critic_file, _use_new_zipfile_serialization=False)
  elif how == "outer as inner":
    shutil.copy(outer / _outer_name("outer_12", "math"), critic_file)
  return ["from-release", "--config", TINY, "--outer", str(outer), "--task", "math",
          "--workdir", str(tmp_path / "w"), *_inner_args(repos)]  # fmt: skip


@pytest.mark.parametrize("how, names, says", [
  ("missing key", "role-critic/adapter(math).pt", "missing key post_ln.bias"),
  ("extra key", "role-critic/adapter(math).pt", "unexpected key post_ln.scale"),
  ("width", "role-critic/adapter(math).pt", "has shape [64, 64], expected [48, 48]"),
  ("outer width", "outer/Planner-Critic-Outerlink(math).pt", "proj1.weight has shape [128, 64], expected [96, 64]"),
  ("missing file", "outer/outerlink_config.json", "outer_23's file Critic-Solver-Outerlink(math).pt is missing"),
  ("paradigm", "outer/outerlink_config.json", "'mixture', a mixture system, but the config's pattern is sequential"),
  ("task", "outer/outerlink_config.json", "no links for task 'math' (it has code)"),
  ("non-tensor", "role-critic/adapter(math).pt", "is a int, not a tensor"),
  ("legacy format", "role-critic/adapter(math).pt", "not a zip-format torch file"),
  ("outer as inner", "role-critic/adapter(math).pt", "an outer link's keys"),
])  # fmt: skip
def test_each_malformed_input_is_one_line_naming_the_file(release, tmp_path, how, names, says):
  code, out, err = convert(*_broken(release, tmp_path, how))
  lines = err.strip().splitlines()
  assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: "), err
  assert names in lines[0] and says in lines[0], lines[0]
  assert not os.path.exists(tmp_path / "w" / "checkpoints")  # checked before anything is written


def test_a_converted_workdir_is_never_converted_over(release, converted):
  workdir, _ = converted
  code, _, err = convert("from-release", "--config", TINY, "--outer", release["outer_dir"], "--task", "math",
                         "--workdir", workdir, *_inner_args(release["repos"]))  # fmt: skip
  assert code == 2 and "links_source.json: exists" in err and len(err.strip().splitlines()) == 1


def _hostile_file(path: str, marker: str) -> None:
  """A zip laid out like a torch file whose pickle calls os.system: what a full unpickler would run."""

  class Payload:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps(collections.OrderedDict(w=Payload()), protocol=2))
    z.writestr("archive/version", "3\n")


def test_files_are_never_read_with_full_pickle(tmp_path, monkeypatch):
  marker = str(tmp_path / "ran")
  _hostile_file(str(tmp_path / "adapter.pt"), marker)
  # The reader must not fall back to a plain unpickle (nor to torch) for anything it reads.
  monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("pickle.load used"))
  monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle.loads used"))
  with pytest.raises(ReleaseFileError, match=r"adapter\.pt: refused to unpickle the global (posix|os)\.system"):
    read_state_dict(str(tmp_path / "adapter.pt"))
  assert not os.path.exists(marker)
  # torch's own weights-only reader refuses it too: the file is hostile, not merely unusual.
  with pytest.raises(pickle.UnpicklingError):
    torch.load(str(tmp_path / "adapter.pt"), weights_only=True)
  # The runtime reads release files without torch.
  good = str(tmp_path / "good.pt")
  torch.save(_randomised(ReleaseInner(16), 3).state_dict(), good)
  probe = ("import sys; from rmas_jax.interop.pt_files import read_state_dict; "
           f"sd = read_state_dict({good!r}); assert len(sd.tensors) == 8; "
           "assert 'torch' not in sys.modules")  # fmt: skip
  subprocess.run([sys.executable, "-c", probe], check=True, cwd=ROOT, timeout=60)
  assert not os.path.exists(marker)


def test_hub_ids_and_the_config_release_defaults(release, tmp_path, monkeypatch):
  """Without --outer / --inner the config's `release` repositories are fetched (only the task's links)."""
  from rmas_jax.interop import release_files

  fetched = []
  local = {"org/outer": release["outer_dir"], **{f"org/{r}": p for r, p in release["repos"].items()}}

  def fake_fetch(repo_id, patterns):
    fetched.append((repo_id, patterns))
    return local[repo_id]

  monkeypatch.setattr(release_files, "fetch_repo", fake_fetch)
  config = load_config(TINY)
  config.release = {"outer": "org/outer", "roles": {r: f"org/{r}" for r in WIDTHS}}
  import_release(config, config_spec=TINY, outer=None, inner={}, task="code", workdir=str(tmp_path / "w"))
  assert fetched[0] == ("org/outer", ["*.json", "*(code).pt", "outer_*.pt"])
  assert ("org/critic", ["innerlink_config.json", "adapter_config.json", "adapter.pt", "adapter(code).pt"]) in fetched
  links, _ = link_store.load_links(config, str(tmp_path / "w"))
  np.testing.assert_array_equal(np.asarray(links["agents"]["solver"]["inner"]["proj1"]["bias"]),
                                release["inner"]["solver"]["code"].state_dict()["proj1.bias"].float().numpy())


def test_a_role_repository_as_an_agent_brings_its_inner_link(release, tmp_path):
  """An agent's model directory holding a full HF model and `adapter(task).pt` loads both; the task picks the file."""
  import transformers

  from rmas_jax.patterns.from_config import load_system
  from rmas_jax.weights.tiny import byte_tokenizer

  repo = str(tmp_path / "Sequential-Planner")
  hf = transformers.Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
  transformers.AutoModelForCausalLM.from_config(hf).save_pretrained(repo)
  byte_tokenizer().save_pretrained(repo)
  write_role_repo(repo, release["inner"]["planner"])
  config = load_config(TINY)
  config.agents[0]["model"] = repo
  config.task = "code"
  loaded = load_system(config, progress=False)
  assert loaded.inner_links == {"planner": os.path.join(repo, "adapter(code).pt")}
  ref = _torch_link("inner", os.path.join(repo, "adapter(code).pt"), 64, 64)
  x = np.random.default_rng(1).normal(size=(3, 64)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(loaded.system.agents["planner"].inner(x)),
                             ref(torch.from_numpy(x)).detach().numpy(), atol=1e-5, rtol=0)  # fmt: skip
  # The converter takes the agent's own role repository when --inner does not name one.
  agents = [dict(role="planner", model=repo), dict(role="critic", model="tiny:gemma3:48"),
            dict(role="solver", model="tiny:llama:32")]  # fmt: skip
  code, _, err = convert("from-release", "--config", TINY, "--set", f"agents={agents!r}", "--outer",
                         release["outer_dir"], "--task", "math", "--workdir", str(tmp_path / "w"),
                         "--inner", f"critic={release['repos']['critic']}",
                         "--inner", f"solver={release['repos']['solver']}")  # fmt: skip
  assert code == 0, err
  source = json.load(open(tmp_path / "w" / "links_source.json"))
  assert source["inner"]["planner"] == os.path.abspath(os.path.join(repo, "adapter(math).pt"))
