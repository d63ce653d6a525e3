"""Child-side half of the Python sandbox: confine this process, then run the model's code.

`sandbox.run_python` starts this file as a script (`python -I -B -X utf8 sandbox_child.py CONFIG_JSON`) inside a
fresh temporary directory, optionally under `unshare --user --map-root-user --net [--mount]`. Everything here runs
before any model-written code and uses only the standard library, because the script runs in isolated mode.

In order: a tmpfs of fixed size over the work directory (in the private mount namespace, so it bounds the bytes the
program can write in all), the PID namespace, Landlock (writes only under the work directory; reads only under the
paths the parent lists, Python's own files, and the work directory), then the resource limits.

The confinement is done here rather than in a `preexec_fn`: CPython documents `preexec_fn` as unsafe when the
parent has threads, and the parent is usually a JAX process with many.
"""

from __future__ import annotations

import builtins
import ctypes
import json
import os
import resource
import signal
import sys
import traceback
import types

SETUP_FAILED_EXIT = 125

_CLONE_NEWPID = 0x20000000
_PR_SET_NO_NEW_PRIVS = 38
# Landlock syscall numbers come from the generic table, shared by x86_64 and aarch64.
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_RULE_PATH_BENEATH = 1
_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_TRUNCATE = 1 << 14
_MS_NOSUID, _MS_NODEV = 2, 4
# Empty files cost memory in a tmpfs too; this many is plenty for a program's scratch files.
_TMPFS_INODES = 10_000
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_SCOPE_SIGNAL = 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
  _fields_ = [
    ("handled_access_fs", ctypes.c_uint64),
    ("handled_access_net", ctypes.c_uint64),
    ("scoped", ctypes.c_uint64),
  ]


class _PathBeneathAttr(ctypes.Structure):
  _pack_ = 1
  _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _fail(what: str) -> None:
  err = ctypes.get_errno()
  sys.stderr.write(f"[sandbox setup] {what} failed: {os.strerror(err) if err else 'unknown error'}\n")
  sys.stderr.flush()
  os._exit(SETUP_FAILED_EXIT)


def _exit_like(status: int) -> None:
  """Ends this process the way a child with wait status `status` ended, so the parent sees the same exit code."""
  if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
      signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)
  os._exit(os.waitstatus_to_exitcode(status))


def _enter_pid_namespace(pid_max: int) -> None:
  """Continues as pid 2 of a new PID namespace; the caller only waits and relays the program's exit status.

  Pid 1 is a minimal init: when it exits the kernel kills everything left in the namespace, so nothing the
  program starts (even after setsid) outlives the run, and the program cannot see or signal outside processes.
  The program is not pid 1 itself because the kernel ignores default-action signals sent to a namespace's init,
  which would break self-signals and RLIMIT_CPU's SIGXCPU.
  """
  if _libc.unshare(ctypes.c_int(_CLONE_NEWPID)) != 0:
    _fail("unshare(CLONE_NEWPID)")
  status_read, status_write = os.pipe()
  init = os.fork()
  if init == 0:
    os.close(status_read)
    if pid_max:
      _cap_pid_namespace(pid_max)
    program = os.fork()
    if program == 0:
      os.close(status_write)
      return
    while True:
      # Init adopts the program's orphans and must reap them until the program itself ends.
      pid, status = os.waitpid(-1, 0)
      if pid == program:
        break
    os.write(status_write, str(status).encode())
    os._exit(0)
  os.close(status_write)
  _, init_status = os.waitpid(init, 0)
  reported = os.read(status_read, 64)
  _exit_like(int(reported) if reported else init_status)


def _cap_pid_namespace(pid_max: int) -> None:
  # Kernels >= 6.14 keep pid_max per PID namespace; it caps live tasks even for root, whom RLIMIT_NPROC exempts.
  try:
    fd = os.open("/proc/sys/kernel/pid_max", os.O_WRONLY)
    try:
      os.write(fd, str(pid_max).encode())
    finally:
      os.close(fd)
  except OSError as e:
    ctypes.set_errno(e.errno or 0)
    _fail("setting the PID namespace's pid_max")


def _mount_tmpfs(work_dir: str, size_bytes: int, source: str) -> None:
  """Puts a tmpfs of `size_bytes` over `work_dir` (this process's private mount namespace) holding `main.py`.

  A write past the size fails with ENOSPC, whichever process of the program makes it, so the bytes written under
  the work directory are bounded in total and not only per file. The directory the parent made stays beneath it.
  """
  options = f"size={size_bytes},nr_inodes={_TMPFS_INODES},mode=0700".encode()
  flags = ctypes.c_ulong(_MS_NOSUID | _MS_NODEV)
  if _libc.mount(b"tmpfs", work_dir.encode(), b"tmpfs", flags, options) != 0:
    _fail(f"mounting a tmpfs on {work_dir}")
  os.chdir(work_dir)  # the old cwd is the directory underneath the mount
  with open("main.py", "w", encoding="utf-8", errors="replace") as f:
    f.write(source)


def _landlock_confine(work_dir: str, abi: int, read_paths: list[str]) -> None:
  """Denies creating, writing, truncating, renaming or deleting files anywhere except under `work_dir`, and, when
  `read_paths` is given, reading or executing anything except under `work_dir` and those paths."""
  handled = _FS_WRITE_FILE | sum(1 << bit for bit in range(4, 13))  # REMOVE_DIR .. MAKE_SYM
  if abi >= 2:
    handled |= 1 << 13  # REFER
  if abi >= 3:
    handled |= _FS_TRUNCATE
  read = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR if read_paths else 0
  handled |= read
  scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
  attr = _RulesetAttr(handled, 0, scoped)
  attr_size = 24 if abi >= 6 else 16 if abi >= 4 else 8
  ruleset = _libc.syscall(
    ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(attr_size), ctypes.c_long(0)
  )
  if ruleset < 0:
    _fail("landlock_create_ruleset")
  # /dev/null stays writable because code commonly opens it to discard output.
  rules = [(work_dir, handled), ("/dev/null", handled & (_FS_WRITE_FILE | _FS_TRUNCATE | _FS_READ_FILE))]
  rules += [(path, read) for path in read_paths]
  for path, access in rules:
    try:
      fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
      continue  # a listed path that this machine lacks: nothing to allow
    if not os.path.isdir(path):
      access &= _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE  # the rights a file can carry
    rule = _PathBeneathAttr(access, fd)
    rc = _libc.syscall(
      ctypes.c_long(_SYS_LANDLOCK_ADD_RULE),
      ctypes.c_long(ruleset),
      ctypes.c_long(_LANDLOCK_RULE_PATH_BENEATH),
      ctypes.byref(rule),
      ctypes.c_long(0),
    )
    os.close(fd)
    if rc != 0:
      _fail(f"landlock_add_rule({path})")
  no_new_privs = (ctypes.c_ulong(v) for v in (_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
  if _libc.prctl(*no_new_privs) != 0:
    _fail("prctl(PR_SET_NO_NEW_PRIVS)")
  if _libc.syscall(ctypes.c_long(_SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_long(ruleset), ctypes.c_long(0)) != 0:
    _fail("landlock_restrict_self")
  os.close(ruleset)


def _set_limit(which: int, value: int, hard: int | None = None) -> None:
  _, current_hard = resource.getrlimit(which)
  hard = value if hard is None else hard
  if current_hard != resource.RLIM_INFINITY:
    # Without privilege a hard limit can only go down.
    value, hard = min(value, current_hard), min(hard, current_hard)
  resource.setrlimit(which, (value, hard))


def _print_model_traceback(exc: BaseException) -> None:
  tb = exc.__traceback__
  # Frames from this script are noise to the model; start at its own code.
  while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
    tb = tb.tb_next
  traceback.print_exception(type(exc), exc, tb)


def main() -> None:
  cfg = json.loads(sys.argv[1])
  with open("main.py", encoding="utf-8") as f:  # read now: the tmpfs hides the file the parent wrote
    source = f.read()
  if cfg.get("tmpfs_bytes"):
    _mount_tmpfs(cfg["work_dir"], cfg["tmpfs_bytes"], source)  # before Landlock, which forbids mounting
  if cfg["pid_namespace"]:
    _enter_pid_namespace(cfg["pid_max"])
  if cfg["landlock_abi"]:
    _landlock_confine(cfg["work_dir"], cfg["landlock_abi"], cfg.get("read_paths") or [])
  cpu_s = cfg["cpu_s"]
  _set_limit(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)
  _set_limit(resource.RLIMIT_AS, cfg["address_space_bytes"])
  _set_limit(resource.RLIMIT_FSIZE, cfg["file_size_bytes"])
  _set_limit(resource.RLIMIT_NPROC, cfg["max_tasks"])
  _set_limit(resource.RLIMIT_CORE, 0)

  module = types.ModuleType("__main__")
  module.__file__ = "main.py"
  module.__builtins__ = builtins
  sys.modules["__main__"] = module
  sys.argv = ["main.py"]
  try:
    exec(compile(cfg["prelude"], "<prelude>", "exec"), module.__dict__)
    exec(compile(source, "main.py", "exec"), module.__dict__)
  except SystemExit:
    raise
  except BaseException as e:
    _print_model_traceback(e)
    sys.exit(1)


if __name__ == "__main__":
  main()
