"""Runs model-written Python in a confined subprocess and formats what it printed for the model.

The code never runs in this process. Each call gets a fresh temporary directory and a new interpreter started
in isolated mode (`-I`) with a minimal environment, in its own session so the whole process group can be killed.
The confinement itself happens in `sandbox_child.py` before the model's code starts:

* resource limits: address space (`memory_mb`), CPU seconds, file size, task count, no core dumps;
* no network, when `unshare --user --map-root-user --net` works on this machine;
* a fresh PID namespace where the platform allows one, so every process the code starts dies with it;
* Landlock, where the kernel has it, so files can be written only inside the temporary directory and read only
  there and under Python's own installation and the system's libraries and programs (`read_roots()`): not /etc,
  not the home directory, not the project;
* the bytes written in all: a tmpfs of `disk_mb` over the temporary directory, in a private mount namespace
  (`unshare --mount`), where that works; elsewhere the watchdog below measures the directory;
* the memory of the whole process tree: a watchdog in this process sums the resident memory of the program's
  processes every few milliseconds and kills them all past `memory_mb` (the sum is checked again as PSS, shared
  pages counted once, before it kills).

Why a watchdog and not a cgroup: cgroup v2's memory.max would bound the tree in the kernel, but only a delegated
cgroup can be written without privileges, and a library cannot make one without moving its own (JAX) process;
machines with a hybrid hierarchy keep the memory controller on cgroup v1. The watchdog lets a tree overshoot by
what it allocates between two looks (a few ms: tens of MB a process).

`isolation()` reports which of these are active here. What stays open where a layer is missing: without Landlock
the code can write wherever its user can (only file size is bounded) and read whatever its user can; without a PID
namespace a process that calls `setsid()` after a double fork escapes the group kill and the watchdog, and (unless
Landlock >= 6 scopes signals) the code can signal its user's other processes; running as root on a kernel without
per-namespace `pid_max` leaves the task count unbounded, because the kernel exempts root from RLIMIT_NPROC. Memory
that no process maps (an unmapped memfd, a full pipe) is bounded per file and per descriptor, not in total.

Deliberate costs: `multiprocessing` fails (its semaphores live in /dev/shm, outside the writable directory), a
server cannot even use loopback (the network namespace's `lo` is down), and the time limit includes interpreter
start-up and the prelude (about 0.5 s with sympy).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_PRELUDE = """\
import math
import itertools
import functools
import fractions
import statistics
try:
  import sympy as sp
except Exception:
  pass
"""

FILE_SIZE_LIMIT_BYTES = 16 * 2**20
DEFAULT_DISK_MB = 64
# How often the watchdog looks at the tree's memory (and, without a tmpfs, the directory's size), at most.
_WATCH_INTERVAL_S = 0.005
_DISK_WATCH_INTERVAL_S = 0.05
# Read-only roots outside Python's installation: shared libraries (ctypes, extension modules), programs the code may
# run (`subprocess`), time zones. Files, not directories, where only one file is needed.
_SYSTEM_READ_ROOTS = ("/usr/lib", "/usr/lib64", "/usr/libexec", "/usr/local/lib", "/lib", "/lib64", "/lib32",
                      "/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/share/zoneinfo", "/etc/ld.so.cache",
                      "/etc/localtime", "/dev/urandom", "/dev/random", "/dev/zero")  # fmt: skip
# Tasks (processes and threads) the code may add on top of what its user already runs: RLIMIT_NPROC counts all
# of the user's tasks, so an absolute value would be either useless or already exceeded.
EXTRA_TASKS = 64
# The smallest pid_max the kernel accepts (RESERVED_PIDS + 1); it caps a PID namespace at about 300 tasks.
PID_NAMESPACE_PID_MAX = 301

_CHILD_SCRIPT = Path(__file__).with_name("sandbox_child.py")
_UNSHARE_ARGS = ("--user", "--map-root-user", "--net")
_MOUNT_ARG = "--mount"  # a private mount namespace, for the tmpfs
_PROBE_TIMEOUT_S = 15.0
_PROBE = f"""\
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(ctypes.c_int(0x20000000)) != 0:
  print("none")
else:
  pid = os.fork()
  if pid == 0:
    try:
      fd = os.open("/proc/sys/kernel/pid_max", os.O_WRONLY)
      os.write(fd, b"{PID_NAMESPACE_PID_MAX}")
      os._exit(3)
    except OSError:
      os._exit(2)
  _, status = os.waitpid(pid, 0)
  print({{3: "pid_max", 2: "pid_namespace"}}.get(os.waitstatus_to_exitcode(status), "none"))
import tempfile
target = tempfile.mkdtemp()
ok = libc.mount(b"tmpfs", target.encode(), b"tmpfs", ctypes.c_ulong(6), b"size=1048576") == 0
print("tmpfs" if ok else "no-tmpfs")
if ok:
  libc.umount2(target.encode(), 0)
os.rmdir(target)
"""


@dataclasses.dataclass(frozen=True)
class Isolation:
  """Which confinement layers `run_python` applies on this machine.

  Attributes:
    network: the code runs in an empty network namespace (no interfaces but a down loopback).
    pid_namespace: the code runs as pid 1 of its own PID namespace; nothing it starts outlives it.
    task_limit: the number of processes/threads it can create is bounded.
    filesystem: Landlock restricts writes to the run's temporary directory, and reads to it and `read_roots()`.
    disk: how the bytes written in all are bounded: "tmpfs" (by the kernel) or "watchdog" (measured).
    memory: how the memory of all the program's processes is bounded: "watchdog".
  """

  network: bool
  pid_namespace: bool
  task_limit: bool
  filesystem: bool
  disk: str = "watchdog"
  memory: str = "watchdog"


@dataclasses.dataclass(frozen=True)
class SandboxResult:
  """What a sandboxed run produced.

  Attributes:
    stdout: the head of standard output (at most about 4 * max_output_chars bytes were read).
    stderr: the head of standard error, same bound.
    exit_code: the interpreter's exit status; negative for a signal, as in `subprocess`.
    timed_out: the run was killed after `timeout_s` seconds of wall time.
    timeout_s: the wall-time limit the run had.
    max_output_chars: how much text `tool_text` keeps.
    omitted_chars: output bytes written beyond what was read back (counted as characters).
    killed_for: why the watchdog killed the program's processes ("" when it did not), e.g. "memory: ...".
  """

  stdout: str
  stderr: str
  exit_code: int
  timed_out: bool
  timeout_s: float = 10.0
  max_output_chars: int = 6000
  omitted_chars: int = 0
  killed_for: str = ""

  def tool_text(self) -> str:
    """Formats the run for the model: stdout, `[stderr]` section, then the exit status or timeout note."""
    parts = [self.stdout.rstrip()]
    if self.stderr.strip():
      parts.append("[stderr]\n" + self.stderr.rstrip())
    body = "\n".join(p for p in parts if p)
    dropped = self.omitted_chars + max(0, len(body) - self.max_output_chars)
    if dropped:
      body = body[: self.max_output_chars] + f"\n... [truncated {dropped} chars]"
    # The status goes after the cut so that a flood of output cannot hide how the run ended.
    if self.killed_for:
      status = f"[killed] {self.killed_for}"
    elif self.timed_out:
      status = f"[timeout] Python tool exceeded {self.timeout_s:g} seconds."
    elif self.exit_code:
      status = f"[exit_code] {self.exit_code}"
      if self.exit_code < 0:
        status += f" ({_signal_name(-self.exit_code)})"
    else:
      status = ""
    text = "\n".join(p for p in (body, status) if p)
    return text or "[no output]"


def _signal_name(number: int) -> str:
  try:
    return signal.Signals(number).name
  except ValueError:
    return f"signal {number}"


def run_python(
  code: str,
  *,
  timeout_s: float = 10.0,
  memory_mb: int = 1024,
  max_output_chars: int = 6000,
  prelude: str = DEFAULT_PRELUDE,
  stdin: str | None = None,
  disk_mb: int = DEFAULT_DISK_MB,
) -> SandboxResult:
  """Runs `code` as a Python program in a confined subprocess.

  Args:
    code: the program's source; it runs as `__main__` from `main.py` in a fresh temporary directory.
    timeout_s: wall-time limit, interpreter start-up and prelude included; the CPU limit is ceil(timeout_s) + 1.
    memory_mb: address-space limit per process, and the bound on the resident memory of all its processes
      together, in MiB.
    max_output_chars: how much output `SandboxResult.tool_text` keeps (and roughly how much is read back).
    prelude: source executed in the program's namespace before `code` (imports for the model's convenience).
    stdin: text fed to the program's standard input; None gives it an empty one.
    disk_mb: the bytes all its processes may write under its directory in all, in MiB (each file is also bounded
      by 16 MiB).

  Returns:
    A `SandboxResult`. Failures of the program (exceptions, limits, timeouts) are reported there, not raised.

  Raises:
    ValueError: a limit is not positive.
  """
  if not timeout_s > 0:
    raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
  if memory_mb <= 0:
    raise ValueError(f"memory_mb must be > 0, got {memory_mb}")
  if max_output_chars <= 0:
    raise ValueError(f"max_output_chars must be > 0, got {max_output_chars}")
  if disk_mb <= 0:
    raise ValueError(f"disk_mb must be > 0, got {disk_mb}")
  iso = isolation()
  root = Path(tempfile.mkdtemp(prefix="rmas-sandbox-"))
  try:
    # The program writes only under work/; its captured output lives beside it, out of Landlock's reach.
    work = root / "work"
    work.mkdir(mode=0o700)
    # Model text can hold lone surrogates; they must reach the program as a visible oddity, not crash the caller.
    (work / "main.py").write_text(code, encoding="utf-8", errors="replace")
    stdin_path = root / "stdin"
    stdin_path.write_text(stdin or "", encoding="utf-8", errors="replace")
    config = {
      "work_dir": str(work),
      "prelude": prelude,
      "pid_namespace": iso.pid_namespace,
      "pid_max": PID_NAMESPACE_PID_MAX if _pid_max_settable() else 0,
      "landlock_abi": _landlock_abi(),
      "cpu_s": math.ceil(timeout_s) + 1,
      "address_space_bytes": memory_mb * 2**20,
      "file_size_bytes": FILE_SIZE_LIMIT_BYTES,
      "max_tasks": _user_task_count() + EXTRA_TASKS,
      "tmpfs_bytes": disk_mb * 2**20 if iso.disk == "tmpfs" else 0,
      "read_paths": list(read_roots()) if iso.filesystem else [],
    }
    argv = [*_unshare_prefix(), sys.executable, "-I", "-B", "-X", "utf8", str(_CHILD_SCRIPT), json.dumps(config)]
    with (
      open(stdin_path, "rb") as fin,
      open(root / "stdout", "wb") as fout,
      open(root / "stderr", "wb") as ferr,
    ):
      proc = subprocess.Popen(
        argv, stdin=fin, stdout=fout, stderr=ferr, cwd=work, env=_child_env(work), start_new_session=True
      )
      watchdog = _Watchdog(proc.pid, memory_mb, None if iso.disk == "tmpfs" else work, disk_mb,
                           sessions=not iso.pid_namespace)  # fmt: skip
      timed_out = _wait_then_kill_group(proc, timeout_s, watchdog)
    stdout, stdout_omitted = _read_head(root / "stdout", max_output_chars)
    stderr, stderr_omitted = _read_head(root / "stderr", max_output_chars)
    return SandboxResult(
      stdout=stdout,
      stderr=stderr,
      exit_code=proc.returncode,
      timed_out=timed_out,
      timeout_s=timeout_s,
      max_output_chars=max_output_chars,
      omitted_chars=stdout_omitted + stderr_omitted,
      killed_for=watchdog.killed_for,
    )
  finally:
    _remove_tree(root)


def _wait_then_kill_group(proc: subprocess.Popen, timeout_s: float, watchdog: _Watchdog | None = None) -> bool:
  """Waits for the group leader to exit, the deadline to pass or the watchdog to object, kills the whole group
  (and the watchdog's tree), reaps the leader; True on timeout."""
  deadline = time.monotonic() + timeout_s
  delay = 0.001
  timed_out = False
  # WNOWAIT leaves the leader unreaped, so its pid (the group id) cannot be reused before the group kill below.
  while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      timed_out = True
      break
    if watchdog is not None and watchdog.check():
      break
    time.sleep(min(delay, remaining))
    delay = min(delay * 2, _WATCH_INTERVAL_S)
  if watchdog is not None:
    watchdog.kill_tree()  # processes that left the group (setsid) but not the tree
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  proc.wait()
  return timed_out


class _Watchdog:
  """Bounds what the program's processes hold together: resident memory, and the directory's size without a tmpfs.

  The tree is the leader and its descendants, read from `/proc/<pid>/task/<tid>/children`; under a PID namespace
  that is every process the program has (orphans go to the namespace's init, itself in the tree). Without one,
  processes of the leader's session are added (a double fork leaves the tree but keeps the session).
  """

  def __init__(self, leader: int, memory_mb: int, work: Path | None, disk_mb: int, *, sessions: bool):
    self.leader, self.memory_bytes, self.memory_mb = leader, memory_mb * 2**20, memory_mb
    self.work, self.disk_bytes, self.disk_mb = work, disk_mb * 2**20, disk_mb
    self.sessions = sessions
    self.killed_for = ""
    self._next_disk = 0.0

  def check(self) -> bool:
    """Looks once; on a breach sets `killed_for`, kills the tree and returns True."""
    pids = self.tree()
    if sum(_resident_bytes(p) for p in pids) > self.memory_bytes:
      held = sum(_pss_bytes(p) for p in pids)  # shared pages (a fork's copy-on-write) counted once
      if held > self.memory_bytes:
        self.killed_for = (f"memory: the program's processes together held {held / 2**20:.0f} MiB, over the "
                           f"{self.memory_mb} MiB bound; all were killed")  # fmt: skip
    if not self.killed_for and self.work is not None and time.monotonic() >= self._next_disk:
      self._next_disk = time.monotonic() + _DISK_WATCH_INTERVAL_S
      used = _tree_bytes(self.work)
      if used > self.disk_bytes:
        self.killed_for = (f"disk: the program wrote {used / 2**20:.0f} MiB under its directory, over the "
                           f"{self.disk_mb} MiB bound; all its processes were killed")  # fmt: skip
    if self.killed_for:
      self.kill_tree()
      return True
    return False

  def tree(self) -> list[int]:
    """The leader and every live descendant (and, without a PID namespace, its session's processes)."""
    found, todo = [], [self.leader]
    seen = set()
    while todo:
      pid = todo.pop()
      if pid in seen:
        continue
      seen.add(pid)
      found.append(pid)
      try:
        tasks = os.listdir(f"/proc/{pid}/task")
      except OSError:
        continue  # gone already
      for tid in tasks:
        try:
          with open(f"/proc/{pid}/task/{tid}/children") as f:
            todo.extend(int(c) for c in f.read().split())
        except OSError:
          pass
    if self.sessions:
      found += [p for p in _session_members(self.leader) if p not in seen]
    return found

  def kill_tree(self) -> None:
    for pid in self.tree():
      try:
        os.kill(pid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        pass


def _resident_bytes(pid: int) -> int:
  try:
    with open(f"/proc/{pid}/statm") as f:
      return int(f.read().split()[1]) * _PAGE_BYTES
  except (OSError, IndexError, ValueError):
    return 0


def _pss_bytes(pid: int) -> int:
  try:
    with open(f"/proc/{pid}/smaps_rollup") as f:
      for line in f:
        if line.startswith("Pss:"):
          return int(line.split()[1]) * 1024
  except (OSError, IndexError, ValueError):
    pass
  return _resident_bytes(pid)  # a kernel without smaps_rollup: the cheaper, larger count


def _session_members(sid: int) -> list[int]:
  out = []
  for entry in os.scandir("/proc"):
    if entry.name.isdigit():
      try:
        with open(f"/proc/{entry.name}/stat") as f:
          fields = f.read().rpartition(")")[2].split()
        if int(fields[3]) == sid:  # fields after the command: state ppid pgrp session ...
          out.append(int(entry.name))
      except (OSError, IndexError, ValueError):
        pass
  return out


def _tree_bytes(root: Path) -> int:
  """Bytes the files under `root` occupy (allocated blocks, so sparse files count what they hold)."""
  total = 0
  for dirpath, dirnames, filenames in os.walk(root):
    for name in filenames + dirnames:
      try:
        total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
      except OSError:
        pass
  return total


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@functools.cache
def read_roots() -> tuple[str, ...]:
  """What sandboxed code may read (and run) besides its own directory, where Landlock restricts reads: Python's
  installation (prefixes and `sysconfig` paths: a virtual environment, never the checkout around it) and the
  system's libraries and programs; paths this machine lacks are left out."""
  import sysconfig

  roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sysconfig.get_paths().values(),
           os.path.dirname(os.path.realpath(sys.executable)), *_SYSTEM_READ_ROOTS}  # fmt: skip
  return tuple(sorted({os.path.realpath(p) for p in roots if p and os.path.exists(p)}))


def _read_head(path: Path, max_chars: int) -> tuple[str, int]:
  # UTF-8 needs at most 4 bytes a character, so this many bytes always covers max_chars characters.
  limit = 4 * max_chars + 4
  size = path.stat().st_size
  with open(path, "rb") as f:
    data = f.read(limit)
  return data.decode("utf-8", errors="replace"), max(0, size - len(data))


def _child_env(work: Path) -> dict[str, str]:
  env = {
    "PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "HOME": str(work),
    "TMPDIR": str(work),
  }
  # Native thread pools reserve address space per thread, which RLIMIT_AS counts against the program.
  for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    env[name] = "1"
  return env


def _remove_tree(root: Path) -> None:
  def make_writable_and_retry(func, path, _exc_info):
    # The program may have removed permissions from what it created; it is ours to delete regardless.
    try:
      os.chmod(os.path.dirname(path), stat.S_IRWXU)
      if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, stat.S_IRWXU)
      func(path)
    except OSError:
      pass

  shutil.rmtree(root, onerror=make_writable_and_retry)


def _user_task_count() -> int:
  """Counts the tasks (threads included, as RLIMIT_NPROC does) that belong to this process's real user."""
  uid = str(os.getuid())
  total = 0
  for entry in os.scandir("/proc"):
    if not entry.name.isdigit():
      continue
    try:
      with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
      continue  # the process exited while we looked
    if fields.get("Uid", "").split()[:1] == [uid]:
      total += int(fields.get("Threads", "1").strip() or 1)
  return total


@functools.cache
def _landlock_abi() -> int:
  """The kernel's Landlock ABI version, or 0 where Landlock is unavailable (asking changes nothing)."""
  if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
    return 0
  import ctypes

  libc = ctypes.CDLL(None, use_errno=True)
  libc.syscall.restype = ctypes.c_long
  landlock_create_ruleset, version_flag = 444, 1
  abi = libc.syscall(ctypes.c_long(landlock_create_ruleset), None, ctypes.c_size_t(0), ctypes.c_long(version_flag))
  return max(0, int(abi))


@functools.cache
def _probe() -> tuple[tuple[str, ...], str]:
  """Finds how to start the child: the unshare prefix that works (or none) and what PID namespacing it allows."""
  unshare = shutil.which("unshare")
  candidates = [(unshare, *_UNSHARE_ARGS, _MOUNT_ARG), (unshare, *_UNSHARE_ARGS)] if unshare else []
  candidates.append(())
  for prefix in candidates:
    try:
      out = subprocess.run(
        [*prefix, sys.executable, "-I", "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=_PROBE_TIMEOUT_S,
        env=_child_env(Path(tempfile.gettempdir())),
        cwd=tempfile.gettempdir(),
      )
    except (OSError, subprocess.TimeoutExpired):
      continue
    if out.returncode == 0:
      words = out.stdout.split()
      # A tmpfs is only private to the run inside its own mount namespace.
      if words[1:] == ["tmpfs"] and _MOUNT_ARG not in prefix:
        words[1] = "no-tmpfs"
      return tuple(prefix), " ".join(words)
  raise RuntimeError(f"sandbox: cannot start {sys.executable} even without namespaces")


def _unshare_prefix() -> tuple[str, ...]:
  return _probe()[0]


def _pid_max_settable() -> bool:
  return _probe()[1].split()[0] == "pid_max"


def isolation() -> Isolation:
  """Which confinement layers `run_python` applies here; probed once per process (one short subprocess)."""
  prefix, probed = _probe()
  pid_support, *rest = probed.split() or ["none"]
  return Isolation(
    network=bool(prefix),
    pid_namespace=pid_support in ("pid_namespace", "pid_max"),
    # Root is exempt from RLIMIT_NPROC, so for root only a namespace pid_max bounds the task count.
    task_limit=os.getuid() != 0 or pid_support == "pid_max",
    filesystem=_landlock_abi() > 0,
    disk="tmpfs" if rest == ["tmpfs"] else "watchdog",
  )


def network_isolated() -> bool:
  """True when sandboxed code runs without network access on this machine."""
  return isolation().network
