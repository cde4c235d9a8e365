"""The sandbox against hostile programs: each test runs one attack and checks both the status the
sandbox reports and that the host is unharmed (files, processes, listener, secrets).

Several attacks are stopped by more than one layer (e.g. a fork by the audit hook, and by RLIMIT_NPROC
and the group kill behind it); the tests assert the outcome, and the reason where it names the layer."""
import dis
import os
import secrets
import signal
import socket
import subprocess
import time

import pytest

from verifiers import sandbox_child
from verifiers.sandbox import SandboxLimits, SandboxStatus, run_python

FAST = SandboxLimits(wall_s=3.0, cpu_s=2, memory_mb=256)


def _running_sandboxes() -> list[str]:
    """Command lines of live (not zombie) processes started from the sandbox bootstrap or by a test marker."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except OSError:
            continue  # not a process, or gone
        if state != "Z" and (sandbox_child.__file__ in cmdline or "tether-marker" in cmdline):
            found.append(cmdline)
    return found


def test_benign_program_prints_and_exits_0():
    result = run_python("import math\nprint('hello', math.factorial(5))", FAST)
    assert (result.status, result.returncode, result.stdout, result.stderr) == (SandboxStatus.OK, 0, "hello 120\n", "")
    assert result.seconds < FAST.wall_s


def test_exception_is_failed_and_named_with_its_line():
    result = run_python("def f():\n    raise ValueError('bad input')\n\nf()\n", FAST)
    assert result.status is SandboxStatus.FAILED and result.returncode == 1
    assert result.reason == "ValueError: bad input at line 2"
    result = run_python("x = 1\nassert x == 2\n", FAST)
    assert result.reason == "AssertionError at line 2"


def test_fork_bomb_is_refused_and_leaves_nothing():
    result = run_python("import os\nwhile True:\n    os.fork()\n", FAST)
    assert result.status is SandboxStatus.FAILED
    assert result.reason == "PermissionError: sandbox: no new processes (os.fork) at line 3"
    assert _running_sandboxes() == []


def test_multiprocessing_subprocess_and_spawn_are_refused():
    code = """
import multiprocessing, os, time
attempts = {
    "multiprocessing": lambda: multiprocessing.Process(target=time.sleep, args=(30,)).start(),
    "subprocess": lambda: __import__("subprocess").Popen(["sleep", "30"]),
    "os.system": lambda: os.system("sleep 30"),
    "posix_spawn": lambda: os.posix_spawn("/bin/sleep", ["sleep", "30"], {}),
    "execv": lambda: os.execv("/bin/sleep", ["sleep", "30"]),
}
for name, attempt in attempts.items():
    try:
        attempt()
        print(name, "STARTED")
    except Exception as e:
        print(name, type(e).__name__, e)
"""
    result = run_python(code, FAST)
    assert result.status is SandboxStatus.OK, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and not any("STARTED" in line for line in lines), lines
    assert "subprocess ImportError sandbox: module _posixsubprocess is refused" in lines
    assert "os.system PermissionError sandbox: no new processes (os.system)" in lines
    assert _running_sandboxes() == []


def test_foreign_function_interfaces_are_refused():
    # Each would call C directly, where the audit hook sees nothing (_cffi_backend did, before it was refused).
    code = """
import importlib.machinery, importlib.util
open("native.so", "wb").write(b"\\x7fELF")
attempts = {
    "ctypes": lambda: __import__("ctypes"),
    "cffi": lambda: __import__("_cffi_backend").load_library(None),
    "native module": lambda: importlib.util.module_from_spec(importlib.util.spec_from_file_location(
        "native", "native.so", loader=importlib.machinery.ExtensionFileLoader("native", "native.so"))),
}
for name, attempt in attempts.items():
    try:
        print(name, "LOADED", attempt())
    except Exception as e:
        print(name, type(e).__name__, e)
"""
    result = run_python(code, FAST)
    assert result.status is SandboxStatus.OK, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["ctypes ImportError sandbox: module ctypes is refused",
                         "cffi ImportError sandbox: module _cffi_backend is refused"]
    assert lines[2].startswith("native module ImportError sandbox: no native modules from the working directory")


def test_memory_bomb_hits_the_memory_limit():
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n"
    # a wall clock no loaded machine reaches first (3 s did, with the 2 cores busy): only memory can stop it
    result = run_python(code, SandboxLimits(wall_s=30.0, cpu_s=10, memory_mb=256))
    assert (result.status, result.reason) == (SandboxStatus.MEMORY_LIMIT, "memory limit 256 MB")


def test_sleeping_forever_is_killed_at_the_wall_clock_limit():
    limits = SandboxLimits(wall_s=1.5, cpu_s=2, memory_mb=256)
    result = run_python("import time\ntime.sleep(60)\n", limits)
    assert (result.status, result.reason) == (SandboxStatus.TIMEOUT, "timeout after 1.5s")
    assert result.returncode == -signal.SIGKILL and 1.5 <= result.seconds < 3.0


@pytest.mark.parametrize("code", [
    "while True:\n    pass\n",
    # ignoring SIGXCPU only defers the end to the hard limit, one CPU second later
    "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n",
], ids=["burn", "burn-ignoring-sigxcpu"])
def test_cpu_burn_hits_the_cpu_limit(code):
    limits = SandboxLimits(wall_s=8.0, cpu_s=1, memory_mb=256)
    result = run_python(code, limits)
    assert (result.status, result.reason) == (SandboxStatus.CPU_LIMIT, "cpu limit 1s")


def test_socket_to_a_local_listener_is_refused():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = (f"import socket\ns = socket.socket()\ns.settimeout(1)\n"
                f"s.connect(('127.0.0.1', {port}))\nprint('CONNECTED')\n")
        result = run_python(code, FAST)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert result.status is SandboxStatus.FAILED and "CONNECTED" not in result.stdout
    assert result.reason == "PermissionError: sandbox: no network (socket.__new__) at line 2"


def test_writes_outside_the_working_directory_are_refused(tmp_path):
    targets = [str(tmp_path / "escape.txt"), f"/tmp/tether-escape-{secrets.token_hex(6)}"]
    code = f"""
import os
attempts = []
for target in {targets!r}:
    attempts += [
        ("open", lambda t=target: open(t, "w").write("x")),
        ("os.open", lambda t=target: os.open(t, os.O_WRONLY | os.O_CREAT)),
        ("rename", lambda t=target: (open("inside.txt", "w").close(), os.rename("inside.txt", t))),
        ("dir_fd", lambda t=target: os.open(os.path.basename(t), os.O_WRONLY | os.O_CREAT,
                                            dir_fd=os.open(os.path.dirname(t), os.O_RDONLY))),
        ("mkdir", lambda t=target: os.mkdir(t)),
        ("dotdot", lambda t=target: open("../" * 20 + t.lstrip("/"), "w")),
    ]
for name, attempt in attempts:
    try:
        attempt()
        print(name, "WROTE")
    except OSError as e:
        print(name, type(e).__name__, e)
open("kept.txt", "w").write("inside is fine")
print(open("kept.txt").read())
"""
    try:
        result = run_python(code, FAST)
        assert result.status is SandboxStatus.OK, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 13 and lines[-1] == "inside is fine", lines
        assert not any("WROTE" in line for line in lines), lines
        assert all("PermissionError sandbox:" in line for line in lines[:-1]), lines
        assert [t for t in targets if os.path.exists(t)] == []
    finally:
        for target in targets:
            if os.path.isdir(target):
                os.rmdir(target)
            elif os.path.exists(target):
                os.remove(target)


def test_parent_environment_is_not_visible(monkeypatch):
    secret = f"tether-secret-{secrets.token_hex(8)}"
    monkeypatch.setenv("TETHER_TEST_SECRET", secret)
    code = """
import os
print(sorted(os.environ))
for path in (f"/proc/{os.getppid()}/environ", f"/proc/self/root/proc/{os.getppid()}/environ",
             f"/proc/self/../{os.getppid()}/environ"):
    try:
        print(open(path, "rb").read())
    except OSError as e:
        print(type(e).__name__, e)
"""
    result = run_python(code, FAST)
    assert result.status is SandboxStatus.OK, result.stderr
    assert secret not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "['HOME', 'LANG', 'PATH', 'TMPDIR']"
    assert all(line.startswith("PermissionError sandbox: no access to other processes") for line in lines[1:]), lines


def test_100mb_of_output_ends_fast_as_output_limit():
    limits = SandboxLimits(wall_s=10.0, cpu_s=5, memory_mb=256, file_mb=4)
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(chunk)\n"
    result = run_python(code, limits)
    assert (result.status, result.reason) == (SandboxStatus.OUTPUT_LIMIT, "output over 256 KB")
    assert len(result.stdout.encode()) == limits.output_kb * 1024
    assert result.seconds < 3.0


def test_signals_to_the_parent_and_other_processes_are_refused():
    victim = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        code = f"""
import os, signal
for name, attempt in [("parent", lambda: os.kill(os.getppid(), signal.SIGKILL)),
                      ("victim", lambda: os.kill({victim.pid}, signal.SIGKILL)),
                      ("victim group", lambda: os.killpg({victim.pid}, signal.SIGKILL))]:
    try:
        attempt()
        print(name, "SIGNALLED")
    except OSError as e:
        print(name, type(e).__name__, e)
"""
        result = run_python(code, FAST)
        time.sleep(0.1)
        assert victim.poll() is None
        os.kill(os.getpid(), 0)
    finally:
        victim.kill()
        victim.wait()
    assert result.status is SandboxStatus.OK, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all("PermissionError sandbox: no signals to other processes" in x for x in lines), lines


def test_background_process_does_not_outlive_the_run():
    marker = f"tether-marker-{secrets.token_hex(4)}"
    code = f"""
import os, time
for attempt in (lambda: __import__("subprocess").Popen(["sh", "-c", "sleep 60; : {marker}"], start_new_session=True),
                lambda: os.fork() or os.execv("/bin/sh", ["sh", "-c", "sleep 60; : {marker}"])):
    try:
        attempt()
    except Exception as e:
        print(type(e).__name__, e)
"""
    result = run_python(code, FAST)
    assert result.status is SandboxStatus.OK, result.stderr
    assert [c for c in _running_sandboxes() if marker in c] == []
    assert len(result.stdout.splitlines()) == 2


def test_working_directory_is_removed():
    result = run_python("import os\nopen('left.txt', 'w').write('x')\nos.mkdir('locked', 0)\nprint(os.getcwd())", FAST)
    assert result.status is SandboxStatus.OK, result.stderr
    workdir = result.stdout.strip()
    assert os.path.basename(workdir) == "work" and workdir.startswith("/")
    assert not os.path.exists(os.path.dirname(workdir))


def test_audit_hook_looks_up_no_global_names():
    # The program can rebind module attributes and builtins; a hook that read them could be disarmed.
    hook = sandbox_child._audit_hook("/tmp/work", 1, ("/usr/lib/python3.11/os.py",))
    assert [i.argval for i in dis.get_instructions(hook) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")] == []


def test_limits_are_validated():
    with pytest.raises(ValueError, match="output_kb .* cannot exceed file_mb"):
        SandboxLimits(output_kb=4096, file_mb=2)
    with pytest.raises(ValueError, match="wall_s must be positive"):
        SandboxLimits(wall_s=0)
