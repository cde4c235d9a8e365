"""Run untrusted Python (model-written code) in a contained child process.

    result = run_python("print(1 + 1)", SandboxLimits(wall_s=5))
    assert result.status is SandboxStatus.OK and result.stdout == "2\\n"

Layers, outermost first. One that this host cannot provide is skipped and the others still hold;
docs/verifiers.md lists what the sandbox does not protect against.
1. A process group in a session of its own, killed as a whole on timeout and after every exit.
2. A throw-away run directory: the working directory, and beside it the stdout/stderr files (bounded
   by RLIMIT_FSIZE; at most output_kb of each is read back). Removed afterwards.
3. A scrubbed environment (PATH, HOME, TMPDIR, LANG) and `python -I -B`.
4. rlimits: CPU time, address space, file size, open files, no core dumps.
5. An empty network namespace (as root; otherwise through a user namespace where the kernel allows).
6. As root, a uid of its own per run: RLIMIT_NPROC then counts only this run, the program cannot
   signal other processes or read their /proc files, and what it leaves running is killed by uid.
7. Reads confined, as root or not: the program reads only the standard library, the system's shared
   libraries and its working directory. Landlock enforces it in the kernel where the kernel has it
   (with no TCP and no signals out of the run's domain); the audit hook below enforces it everywhere.
8. A Python audit hook that refuses sockets, new processes, signals to others, writes outside the
   working directory, reads outside the readable roots, /proc of other processes, directory handles
   outside it, code objects made by hand, ctypes and new hooks.

Layers 4 to 8 are set up inside the child by verifiers/sandbox_child.py, which the child runs."""
from __future__ import annotations

import os
import re
import resource
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from verifiers import sandbox_child
from verifiers.sandbox_child import PROGRAM_FILE, _is_root

# Uids no account uses. Each run as root takes a random one, so that the process limit, signals and
# the final sweep concern only that run's processes.
_SANDBOX_UIDS = (1 << 20, 1 << 30)
_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class SandboxLimits:
    wall_s: float = 10.0
    """Wall-clock limit; past it the whole process group is killed (status timeout)."""
    cpu_s: int = 5
    """CPU seconds (RLIMIT_CPU): SIGXCPU at cpu_s, SIGKILL one second later (status cpu_limit)."""
    memory_mb: int = 1024
    """Address space (RLIMIT_AS); allocations past it raise MemoryError (status memory_limit)."""
    max_processes: int = 32
    """Processes and threads (RLIMIT_NPROC); applied only when the run has a uid of its own (as root)."""
    file_mb: int = 16
    """Largest file the program may write (RLIMIT_FSIZE), its stdout/stderr files included."""
    output_kb: int = 256
    """stdout and stderr kept, each; more is status output_limit."""

    def __post_init__(self):
        for name in ("wall_s", "cpu_s", "memory_mb", "max_processes", "file_mb", "output_kb"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)}")
        if self.output_kb > self.file_mb * 1024:
            raise ValueError(f"SandboxLimits.output_kb ({self.output_kb}) cannot exceed file_mb "
                             f"({self.file_mb} MB): the file size limit also caps the output files")


class SandboxStatus(Enum):
    OK = "ok"                       # exit status 0
    FAILED = "failed"               # nonzero exit status, e.g. an uncaught exception
    TIMEOUT = "timeout"             # past wall_s
    CPU_LIMIT = "cpu_limit"         # past cpu_s
    MEMORY_LIMIT = "memory_limit"   # ended with MemoryError
    OUTPUT_LIMIT = "output_limit"   # stdout or stderr over output_kb
    FILE_LIMIT = "file_limit"       # ended by writing past file_mb
    KILLED = "killed"               # another signal, e.g. SIGSEGV


@dataclass
class SandboxResult:
    status: SandboxStatus
    returncode: int
    """Exit status, or minus the signal number that ended the program."""
    stdout: str
    """The first output_kb of stdout (undecodable bytes replaced)."""
    stderr: str
    """The first output_kb of stderr."""
    seconds: float
    """Wall-clock time from start to exit."""
    reason: str
    """One line: 'timeout after 10.0s', 'AssertionError at line 12', 'memory limit 1024 MB'."""


def run_python(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Runs `code` as the __main__ program of a fresh contained interpreter; reports how it ended."""
    child = _start(code, limits, ())
    return _collect(child, limits, limits.wall_s)


def run_pair(first: Callable[[int, int], str], second: Callable[[int, int], str],
             limits: SandboxLimits = SandboxLimits()) -> tuple[SandboxResult, SandboxResult]:
    """Two programs, each contained as run_python's (its own run directory, uid and limits), joined by two
    pipes: each is written by its function of (fd it reads, fd it writes), and reads what the other writes.
    The second program decides: the pair ends when it exits or at the wall-clock limit, and the first is
    killed then."""
    to_first, to_second = os.pipe(), os.pipe()           # (read end, write end)
    try:
        one = _start(first(to_first[0], to_second[1]), limits, (to_first[0], to_second[1]))
        try:
            two = _start(second(to_second[0], to_first[1]), limits, (to_second[0], to_first[1]))
        except BaseException:
            _collect(one, limits, 0)
            raise
    finally:
        for fd in (*to_first, *to_second):              # ours closed: each side sees EOF when the other ends
            os.close(fd)
    second_result = _collect(two, limits, limits.wall_s)
    return _collect(one, limits, 0), second_result


@dataclass
class _Child:
    proc: object            # subprocess.Popen
    run_dir: str
    uid: int
    started: float


def _start(code: str, limits: SandboxLimits, pass_fds: tuple[int, ...]) -> _Child:
    run_dir = tempfile.mkdtemp(prefix="tether-sandbox-")
    try:
        workdir = os.path.join(run_dir, "work")
        os.mkdir(workdir, 0o700)
        with open(os.path.join(workdir, PROGRAM_FILE), "w", encoding="utf-8") as f:
            f.write(code)
        uid = _SANDBOX_UIDS[0] + secrets.randbelow(_SANDBOX_UIDS[1] - _SANDBOX_UIDS[0]) if _is_root() else -1
        if uid >= 0:
            os.chmod(run_dir, 0o711)  # the run's uid may pass through to its workdir, not list or read the rest
            os.chown(workdir, uid, uid)
        out_path, err_path = os.path.join(run_dir, "stdout"), os.path.join(run_dir, "stderr")
        args = [sys.executable, "-I", "-B", os.path.abspath(sandbox_child.__file__), str(uid), str(limits.cpu_s),
                str(limits.memory_mb), str(limits.max_processes), str(limits.file_mb)]
        env = {"PATH": _PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        with open(out_path, "xb", opener=_private) as out, open(err_path, "xb", opener=_private) as err:
            proc = subprocess.Popen(args, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, start_new_session=True, pass_fds=pass_fds)
        return _Child(proc, run_dir, uid, time.monotonic())
    except BaseException:
        _remove_tree(run_dir)
        raise


def _collect(child: _Child, limits: SandboxLimits, wait_s: float) -> SandboxResult:
    """Waits up to wait_s for the child, kills what is left of it, reads its capped output, removes its run."""
    try:
        wait_status, usage, timed_out = _wait_then_kill_group(child.proc.pid, wait_s)
        seconds = time.monotonic() - child.started
        child.proc.returncode = os.waitstatus_to_exitcode(wait_status)  # reaped above, not by Popen
        if child.uid >= 0:
            _kill_processes_of(child.uid)
        limit_bytes = limits.output_kb * 1024
        stdout, stdout_over = _read_capped(os.path.join(child.run_dir, "stdout"), limit_bytes)
        stderr, stderr_over = _read_capped(os.path.join(child.run_dir, "stderr"), limit_bytes)
        status, reason = _classify(child.proc.returncode, usage.ru_utime + usage.ru_stime, timed_out and wait_s > 0,
                                   stdout_over or stderr_over, stderr, limits)
        return SandboxResult(status, child.proc.returncode, stdout, stderr, seconds, reason)
    finally:
        _remove_tree(child.run_dir)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _wait_then_kill_group(pid: int, wall_s: float) -> tuple[int, resource.struct_rusage, bool]:
    """Waits up to wall_s for the child, then kills its process group either way (after a normal exit
    this ends what it left running), then reaps it. Returns (wait status, rusage, timed out)."""
    pidfd = os.pidfd_open(pid)
    try:
        exit_watch = select.poll()  # not select(): a busy worker's fds can be past FD_SETSIZE
        exit_watch.register(pidfd, select.POLLIN)
        exited = exit_watch.poll(wall_s * 1000)
    finally:
        os.close(pidfd)
        try:  # not reaped yet, so its pid, which is the group id, cannot have been reused
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, wait_status, usage = os.wait4(pid, 0)
    return wait_status, usage, not exited


def _kill_processes_of(uid: int) -> None:
    """Kills what still runs under the run's uid: a process that left the group through setsid()."""
    for _ in range(10):  # a round can miss children forked while it ran; NPROC bounds how many
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as f:
                    status = f.read()
                if "\nState:\tZ" in status:
                    continue  # already dead, waiting for init to reap it
                if int(status.split("\nUid:\t", 1)[1].split()[0]) == uid:
                    os.kill(int(entry), signal.SIGKILL)
                    found = True
            except (OSError, IndexError, ValueError):
                continue  # it ended meanwhile
        if not found:
            return


def _read_capped(path: str, limit_bytes: int) -> tuple[str, bool]:
    """The first limit_bytes of a file as text, and whether it held more."""
    with open(path, "rb") as f:
        data = f.read(limit_bytes + 1)
    return data[:limit_bytes].decode("utf-8", errors="replace"), len(data) > limit_bytes


def _remove_tree(path: str) -> None:
    # The program may have made its directories unreadable; as their owner (or root) we undo that first.
    for parent, dirs, _ in os.walk(path):
        for name in dirs:
            child = os.path.join(parent, name)
            if stat.S_ISDIR(os.lstat(child).st_mode):
                os.chmod(child, 0o700)
    shutil.rmtree(path)


def _classify(returncode: int, cpu_seconds: float, timed_out: bool, output_over: bool, stderr: str,
              limits: SandboxLimits) -> tuple[SandboxStatus, str]:
    last_line = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    if output_over:
        return SandboxStatus.OUTPUT_LIMIT, f"output over {limits.output_kb} KB"
    if timed_out:
        return SandboxStatus.TIMEOUT, f"timeout after {limits.wall_s}s"
    if returncode == -signal.SIGXCPU or (returncode == -signal.SIGKILL and cpu_seconds >= limits.cpu_s):
        return SandboxStatus.CPU_LIMIT, f"cpu limit {limits.cpu_s}s"
    if returncode < 0:
        return SandboxStatus.KILLED, f"killed by {signal.Signals(-returncode).name}"
    if returncode == 0:
        return SandboxStatus.OK, "exit status 0"
    if last_line.startswith("MemoryError"):
        return SandboxStatus.MEMORY_LIMIT, f"memory limit {limits.memory_mb} MB"
    if "[Errno 27]" in last_line:  # EFBIG: Python ignores SIGXFSZ, so the write raises instead
        return SandboxStatus.FILE_LIMIT, f"file size limit {limits.file_mb} MB"
    if not last_line:
        return SandboxStatus.FAILED, f"exit status {returncode}"
    lines = re.findall(rf'File "{re.escape(PROGRAM_FILE)}", line (\d+)', stderr)
    where = f" at line {lines[-1]}" if lines else ""
    return SandboxStatus.FAILED, last_line[:200] + where
