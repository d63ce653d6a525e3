"""Tool layer: the Python sandbox's confinement and formatting, BM25 search, and the tool-call text protocol."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from rmas_jax.tools import sandbox
from rmas_jax.tools.calls import ToolBox, ToolCall, find_call, format_result, make_toolbox, strip_fences
from rmas_jax.tools.sandbox import SandboxResult, isolation, network_isolated, run_python
from rmas_jax.tools.search import SearchIndex, search_tool


def _run(code: str, **kw) -> SandboxResult:
  # No prelude: sympy's import would dominate these short runs.
  kw.setdefault("prelude", "")
  kw.setdefault("timeout_s", 5.0)
  return run_python(code, **kw)


def _processes_with_arg(arg: str) -> list[int]:
  found = []
  for entry in os.scandir("/proc"):
    if entry.name.isdigit():
      try:
        with open(f"/proc/{entry.name}/cmdline", "rb") as f:
          if arg.encode() in f.read().split(b"\0"):
            found.append(int(entry.name))
      except OSError:
        pass
  return found


# --- sandbox: results and formatting ---


def test_simple_code_prints_its_output():
  result = _run("print(sum(range(10)))")
  assert (result.stdout, result.stderr, result.exit_code, result.timed_out) == ("45\n", "", 0, False)
  assert result.tool_text() == "45"


def test_default_prelude_provides_math_and_sympy():
  pytest.importorskip("sympy")
  text = run_python("print(math.comb(5, 2), fractions.Fraction(1, 3), sp.factorint(12))").tool_text()
  assert text == "10 1/3 {2: 2, 3: 1}"


def test_stdin_is_fed_to_the_program():
  assert _run("print(input()[::-1])", stdin="abc\n").tool_text() == "cba"


def test_exception_reports_stderr_and_exit_code():
  text = _run("print('before')\nraise ValueError('boom')").tool_text()
  assert text.startswith('before\n[stderr]\nTraceback (most recent call last):\n  File "main.py", line 2')
  assert "ValueError: boom" in text
  assert "sandbox_child" not in text  # the launcher's frames are trimmed
  assert text.endswith("\n[exit_code] 1")


def test_signal_death_names_the_signal():
  assert _run("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)").tool_text() == "[exit_code] -15 (SIGTERM)"


def test_tool_text_formats():
  assert SandboxResult("", "", 0, False).tool_text() == "[no output]"
  assert SandboxResult("", "warn\n", 0, False).tool_text() == "[stderr]\nwarn"
  assert SandboxResult("", "", 2, False).tool_text() == "[exit_code] 2"
  timed_out = SandboxResult("partial\n", "", -9, True, timeout_s=2.0)
  assert timed_out.tool_text() == "partial\n[timeout] Python tool exceeded 2 seconds."


def test_long_output_is_truncated_with_a_note():
  result = _run("print('x' * 10000)", max_output_chars=100)
  text = result.tool_text()
  assert text.startswith("x" * 100 + "\n... [truncated ")
  assert int(text.split("[truncated ")[1].split()[0]) >= 9900
  assert len(result.stdout) < 1000  # only the head was read back


def test_temporary_directory_is_removed():
  result = _run("import os; print(os.getcwd())")
  cwd = result.stdout.strip()
  assert "rmas-sandbox-" in cwd
  assert not Path(cwd).exists()
  assert not Path(cwd).parent.exists()


# --- sandbox: confinement ---


def test_timeout_returns_promptly_and_leaves_no_process():
  marker = f"{300 + os.getpid() % 1000}.4242"
  # One helper stays in the process group; under a PID namespace another also escapes it with setsid.
  code = (
    "import subprocess\n"
    f"subprocess.Popen(['sleep', '{marker}'])\n"
    f"subprocess.Popen(['sleep', '{marker}'], start_new_session={isolation().pid_namespace})\n"
    "while True: pass\n"
  )
  start = time.monotonic()
  result = _run(code, timeout_s=2.0)
  assert time.monotonic() - start < 4.0
  assert result.timed_out
  assert result.tool_text().endswith("[timeout] Python tool exceeded 2 seconds.")
  time.sleep(0.1)
  assert _processes_with_arg(marker) == []


def test_fork_bomb_is_contained():
  if not isolation().task_limit:
    pytest.skip("no task limit here: root on a kernel without per-PID-namespace pid_max ignores RLIMIT_NPROC")
  tasks_before = sandbox._user_task_count()
  code = (
    "import os, time\n"
    "n = 0\n"
    "for _ in range(1000):\n"
    "  try:\n"
    "    pid = os.fork()\n"
    "  except OSError as e:\n"
    "    print('fork failed:', e.strerror)\n"
    "    break\n"
    "  if pid == 0:\n"
    "    time.sleep(30)\n"
    "    os._exit(0)\n"
    "  n += 1\n"
    "print('forked', n)\n"
  )
  result = _run(code, timeout_s=10.0)
  assert "fork failed: Resource temporarily unavailable" in result.stdout, result.tool_text()
  assert int(result.stdout.split("forked ")[1]) < 1000
  time.sleep(0.2)
  assert sandbox._user_task_count() < tasks_before + 20  # the sleeping children are gone
  assert _run("print('still fine')").tool_text() == "still fine"


def test_huge_allocation_fails_with_memory_error():
  text = _run("x = bytearray(4 * 2**30)\nprint(len(x))", memory_mb=512).tool_text()
  assert "MemoryError" in text
  assert text.endswith("[exit_code] 1")


def test_huge_file_is_stopped_by_the_file_size_limit():
  code = "with open('big.bin', 'wb') as f:\n  for _ in range(64):\n    f.write(b'x' * 2**20)\nprint('wrote it all')"
  text = _run(code).tool_text()
  assert "File too large" in text
  assert "wrote it all" not in text


def test_writing_outside_the_sandbox_directory(tmp_path):
  target = tmp_path / "escape.txt"
  text = _run(f"open({str(target)!r}, 'w').write('escaped')").tool_text()
  if not isolation().filesystem:
    # Documented gap: without Landlock the code may write wherever its user can; only file size is bounded.
    pytest.skip("Landlock unavailable: writes outside the sandbox directory are not blocked on this platform")
  assert "PermissionError" in text
  assert not target.exists()


def test_parent_environment_is_not_visible(monkeypatch):
  monkeypatch.setenv("RMAS_SANDBOX_TEST_SECRET", "hunter2-do-not-leak")
  text = _run("import os\nprint(sorted(os.environ.items()))").tool_text()
  assert "hunter2" not in text
  assert "RMAS_SANDBOX_TEST_SECRET" not in text
  assert "'HOME'" in text


def test_network_is_unreachable_when_isolated():
  if not network_isolated():
    pytest.skip("unshare --user --net is unavailable here, so the sandbox has network access")
  code = (
    "import socket\n"
    "try:\n"
    "  socket.create_connection(('1.1.1.1', 80), timeout=1)\n"
    "  print('connected')\n"
    "except OSError as e:\n"
    "  print('blocked', e)\n"
  )
  assert _run(code).stdout.startswith("blocked")


def test_invalid_limits_are_rejected():
  with pytest.raises(ValueError, match="timeout_s must be > 0, got 0"):
    run_python("print(1)", timeout_s=0)


# --- search ---


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory) -> Path:
  rows = [
    {"title": "Paris", "text": "Paris is the capital and largest city of France."},
    {"title": "Berlin", "text": "Berlin is the capital of Germany and its most populous city."},
    {"title": "Photosynthesis", "text": "Plants convert light energy into chemical energy.\n\n  Chlorophyll helps."},
    {"text": "A passage without a title about volcanoes and lava."},
  ]
  path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
  return path


def test_search_ranks_the_right_passage_first(corpus_path):
  index = SearchIndex.from_file(corpus_path)
  hits = index.search("What is the capital of France?", k=2)
  assert [h.title for h in hits] == ["Paris", "Berlin"]
  assert hits[0].score > hits[1].score > 0


def test_search_tool_text(corpus_path):
  index = SearchIndex.from_file(corpus_path)
  assert index.tool_text("how do plants use\nlight", k=4) == (
    "Query: how do plants use light\n[1] Photosynthesis\n"
    "Plants convert light energy into chemical energy. Chlorophyll helps."
  )
  assert index.tool_text("volcanoes") == (
    "Query: volcanoes\n[1] (untitled)\nA passage without a title about volcanoes and lava."
  )
  assert index.tool_text("quantum chromodynamics") == "Query: quantum chromodynamics\nNo passages matched."


def test_search_cuts_long_passages(tmp_path):
  path = tmp_path / "corpus.txt"
  path.write_text("alpha " * 200 + "\n\nbeta gamma\n", encoding="utf-8")
  index = SearchIndex.from_file(path)
  assert len(index) == 2
  lines = index.tool_text("alpha").splitlines()
  assert lines[1] == "[1] (untitled)"
  assert lines[2].endswith("...") and len(lines[2]) <= 320 + len("...")


def test_search_bad_jsonl_line_names_file_and_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"text": "fine"}\n{not json}\n', encoding="utf-8")
  with pytest.raises(ValueError, match=r"bad\.jsonl line 2: invalid JSON"):
    SearchIndex.from_file(path)
  path.write_text('{"text": "fine"}\n\n{"title": "no text"}\n', encoding="utf-8")
  with pytest.raises(ValueError, match=r"bad\.jsonl line 3: expected an object with a string 'text' field"):
    SearchIndex.from_file(path)


def test_search_tool_without_corpus_is_an_error(tmp_path):
  message = "search tool: no corpus configured; set tools.search_corpus to a .jsonl or .txt file"
  for corpus in (None, ""):
    with pytest.raises(ValueError) as err:
      search_tool(corpus)
    assert str(err.value) == message
  with pytest.raises(FileNotFoundError, match="corpus file not found: .*missing.jsonl"):
    search_tool(str(tmp_path / "missing.jsonl"))
  with pytest.raises(ValueError, match="search tool: no corpus configured"):
    make_toolbox(["python", "search"])


def test_search_tool_callable(corpus_path):
  tool = search_tool(str(corpus_path), k=1)
  assert tool("capital of Germany").startswith("Query: capital of Germany\n[1] Berlin\n")


# --- tool-call protocol ---


def test_find_call_basic_and_offsets():
  text = "Let me compute. <python>print(2 + 2)</python> and then"
  call = find_call(text)
  assert call == ToolCall(name="python", body="print(2 + 2)", start=16, end=text.index(" and then"))
  assert find_call(text, start=call.end) is None
  assert find_call(text, start=17) is None  # the opening tag lies before start


def test_find_call_case_and_multiline():
  call = find_call("<SEARCH>\nEiffel tower\nheight</Search>")
  assert (call.name, call.body) == ("search", "\nEiffel tower\nheight")


def test_find_call_unclosed_and_nested():
  assert find_call("<python>print(1)") is None
  assert find_call("print(1)</python>") is None
  assert find_call("<search>q</python>") is None
  assert find_call("<python>a\n<python>b</python>").body == "b"
  outer = "<python>x = '<search>q</search>'</python>"
  first = find_call(outer)
  assert (first.name, first.body) == ("search", "q")
  assert find_call(outer, start=first.end) is None
  second = find_call("<python>1</python> then <search>q</search>", start=18)
  assert (second.name, second.body) == ("search", "q")


def test_strip_fences():
  assert strip_fences("\n```python\nprint(1)\n```\n") == "print(1)"
  assert strip_fences("```\n  x = 1\n  print(x)\n```") == "x = 1\nprint(x)"
  assert strip_fences("\n    print(2)\n") == "print(2)"
  assert strip_fences("print('```')") == "print('```')"


def test_format_result_escapes_closing_tag():
  assert format_result("42\n") == " <result> 42 </result>"
  assert format_result("a </result> b </RESULT>") == " <result> a < /result> b < /result> </result>"


def test_toolbox_limit_and_unknown_tool():
  seen = []
  box = ToolBox({"search": lambda q: seen.append(q) or f"found {q}"}, max_calls=5)
  for i in range(5):
    assert box.run(ToolCall("search", f"q{i}", 0, 0)) == f" <result> found q{i} </result>"
  assert not box.exhausted
  assert box.run(ToolCall("search", "q5", 0, 0)) == " <result> [tool limit reached after 5 calls] </result>"
  assert box.exhausted and seen == [f"q{i}" for i in range(5)]
  box.reset()
  unknown = box.run(ToolCall("python", "print(1)", 0, 0))
  assert unknown == " <result> [error] unknown tool 'python'; available: search </result>"
  assert box.calls == 1 and not box.exhausted


def test_toolbox_runs_fenced_python_in_the_sandbox():
  box = make_toolbox(["python"], python_timeout_s=5.0)
  call = find_call("Check: <python>\n```python\nprint(6 * 7)\n```\n</python>")
  assert box.run(call) == " <result> 42 </result>"


# --- sandbox: bounds on the whole process tree, and reads ---


def test_six_children_of_900_mb_cannot_all_hold_it_together():
  # Each child is under the per-process limit (1 GiB of address space); together they would hold 5.3 GB.
  code = (
    "import os, time\n"
    "pids = []\n"
    "for i in range(6):\n"
    "  pid = os.fork()\n"
    "  if pid == 0:\n"
    "    block = b'x' * (900 * 2**20)\n"
    "    print('child', i, 'holds', len(block) >> 20, 'MiB', flush=True)\n"
    "    time.sleep(3)\n"
    "    os._exit(0)\n"
    "  pids.append(pid)\n"
    "done = sum(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) == 0 for p in pids)\n"
    "print('all six held it', done == 6)\n"
  )
  start = time.monotonic()
  result = _run(code, timeout_s=20.0, memory_mb=1024)
  assert "all six held it True" not in result.stdout
  assert result.killed_for.startswith("memory: the program's processes together held "), result.tool_text()
  assert "over the 1024 MiB bound" in result.tool_text()
  assert time.monotonic() - start < 15  # killed when the sum passed the bound, not at the timeout
  assert result.stdout.count("holds 900 MiB") <= 2


def test_a_forked_copy_is_not_counted_twice():
  # A parent holding 300 MiB forks; the child shares those pages until it writes them: 600 MiB resident, 300 held.
  code = (
    "import os\n"
    "block = b'x' * (300 * 2**20)\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "  import time; time.sleep(1); os._exit(0)\n"
    "os.waitpid(pid, 0)\n"
    "print('done', len(block) >> 20)\n"
  )
  result = _run(code, timeout_s=20.0, memory_mb=512)
  assert result.stdout.strip() == "done 300", result.tool_text()
  assert not result.killed_for


def test_many_15_mb_files_stop_at_the_total_cap():
  code = (
    "import os\n"
    "written = 0\n"
    "try:\n"
    "  for i in range(40):\n"
    "    with open(f'part{i}.bin', 'wb') as f:\n"
    "      f.write(b'x' * (15 * 2**20))\n"
    "    written += 15\n"
    "except OSError as e:\n"
    "  print('stopped:', e.strerror)\n"
    "print('written', written)\n"
  )
  result = _run(code, timeout_s=20.0, disk_mb=64)
  text = result.tool_text()
  if isolation().disk == "tmpfs":
    assert "stopped: No space left on device" in result.stdout, text
    assert int(result.stdout.split("written ")[1]) <= 64, text
  else:  # the watchdog kills the tree once the directory is past the bound
    assert result.killed_for.startswith("disk: "), text
  assert "written 600" not in result.stdout


def test_the_total_cap_holds_across_processes():
  code = (
    "import os\n"
    "for i in range(8):\n"
    "  if os.fork() == 0:\n"
    "    try:\n"
    "      for j in range(4):\n"
    "        with open(f'p{i}-{j}.bin', 'wb') as f:\n"
    "          f.write(b'x' * (15 * 2**20))\n"
    "    except OSError:\n"
    "      pass\n"
    "    os._exit(0)\n"
    "  os.wait()\n"
    "total = sum(os.path.getsize(n) for n in os.listdir('.') if n.endswith('.bin'))\n"
    "print('total MiB', total >> 20)\n"
  )
  result = _run(code, timeout_s=20.0, disk_mb=64)
  if isolation().disk != "tmpfs":
    pytest.skip("no private tmpfs here: the directory is bounded by the watchdog, tested above")
  assert int(result.stdout.split("total MiB ")[1]) <= 64, result.tool_text()


def test_reads_are_limited_to_python_and_the_temporary_directory():
  if not isolation().filesystem:
    pytest.skip("Landlock unavailable: reads are not restricted on this platform")
  project_file = Path(sandbox.__file__).resolve()  # the project's own source
  home = Path.home()
  files = ["/etc/shadow", "/etc/passwd", str(project_file), str(project_file.parents[2] / "README.md")]
  code = (
    "import os\n"
    f"for path in {files!r}:\n"
    "  try:\n"
    "    open(path).read(1)\n"
    "    print('read', path)\n"
    "  except OSError as e:\n"
    "    print('denied', path, type(e).__name__)\n"
    f"for path in [{str(home)!r}, '/etc', {str(project_file.parent)!r}]:\n"
    "  try:\n"
    "    os.listdir(path)\n"
    "    print('listed', path)\n"
    "  except OSError as e:\n"
    "    print('denied', path, type(e).__name__)\n"
    "open('mine.txt', 'w').write('ok')\n"
    "print('own file', open('mine.txt').read())\n"
    "import json, decimal, fractions\n"  # the standard library still imports
    "import subprocess\n"
    "print('ran', subprocess.run(['true']).returncode)\n"
  )
  result = _run(code)
  assert "read " not in result.stdout and "listed " not in result.stdout, result.tool_text()
  assert result.stdout.count("denied ") == 7 and "PermissionError" in result.stdout
  assert "own file ok" in result.stdout and "ran 0" in result.stdout, result.tool_text()


def test_the_prelude_still_imports_sympy_under_read_rules():
  pytest.importorskip("sympy")
  assert run_python("print(sp.Integer(2) ** 10)", timeout_s=30.0).tool_text() == "1024"


def test_disk_bound_must_be_positive():
  with pytest.raises(ValueError, match="disk_mb must be > 0, got 0"):
    run_python("print(1)", disk_mb=0)
