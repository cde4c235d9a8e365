"""The `code` verifier: run a response against its sample's unit tests, in two sandboxed processes.

    >>> code_tests(Sample(prompt="Write add(a, b).", tests="assert add(2, 3) == 5"),
    ...            "```python\\ndef add(a, b):\\n    return a + b\\n```")
    Verdict(score=1.0, passed=True, reason='tests passed', applicable=True)

The response's code never runs where the verdict is decided (threat model: docs/verifiers.md):
- the candidate's process runs the response (after the prompt's imports and helpers) and then serves calls
  to its top-level functions, one at a time, over a pipe;
- the tests' process runs the sample's tests, in which each of the candidate's functions is a stand-in that
  sends the call's arguments and gets back the result as plain data (verifiers.plain_data): builtins only,
  rebuilt there, so no value of the candidate's own can answer == for the tests. An exception the candidate
  raised comes back as the builtin exception of that name, or as CandidateError.
The verdict is the tests' process's exit status, read by this process: nothing the candidate prints or does
reaches it.

Two formats of tests:
- HumanEval (`sample.entry_point` set): the prompt is the function's signature and docstring (after any
  imports and helper functions); the tests define `check(candidate)`, called with the entry point. The tests'
  process runs the prompt itself, so the helpers the tests use are the prompt's, never the response's.
  A response that defines `def <entry_point>(` replaces the prompt's function and keeps what precedes it
  (imports, helpers); any other response is a completion of the function body.
- Tests as code (`entry_point` None): asserts that call the functions the response defines."""
from __future__ import annotations

import re
from pathlib import Path

from verifiers.sandbox import SandboxLimits, SandboxResult, SandboxStatus, run_pair
from verifiers.types import Sample, Verdict

_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)  # the first block; unclosed if truncated
_PLAIN_DATA = (Path(__file__).parent / "plain_data.py").read_text()
_ENDED = "CandidateError: the candidate's program ended"

_CANDIDATE = '''
import builtins
_REQUESTS, _REPLIES = {reads}, {writes}
_namespace = {{"__name__": "__candidate__", "__builtins__": builtins}}
try:
    exec(compile({solution!r}, "solution", "exec"), _namespace)
except Exception as _e:
    import sys
    import traceback
    _lines = [f.lineno for f in traceback.extract_tb(_e.__traceback__) if f.filename == "solution"]
    _line = _e.lineno if isinstance(_e, SyntaxError) else _lines[-1] if _lines else None
    print(f"{{type(_e).__name__}}: {{_e.msg if isinstance(_e, SyntaxError) else _e}}"[:200]
          + (f" at line {{_line}} of the solution" if _line else ""), file=sys.stderr)
    sys.exit(1)
send(_REPLIES, {{"ready": sorted(k for k, v in _namespace.items() if callable(v) and not k.startswith("__"))}})
while True:
    try:
        _request = receive(_REQUESTS)
    except EOFError:
        break
    try:
        _value = _namespace[_request["call"]](*decode(_request["args"]), **decode(_request["kwargs"]))
        _reply = {{"value": encode(_value)}}
    except NotPlain as _e:
        _reply = {{"not_plain": str(_e)[:200]}}
    except Exception as _e:
        _reply = {{"raised": [type(_e).__name__, str(_e)[:200]]}}
    send(_REPLIES, _reply)
'''

_TESTS = '''
import builtins
import sys
import traceback
_REQUESTS, _REPLIES = {writes}, {reads}


_CONTROL_FLOW = (StopIteration, StopAsyncIteration)


class CandidateError(Exception):
    """The candidate's process ended, broke the protocol, or answered with something that is not plain data."""


class Candidate:
    """Stands in for one of the candidate's functions: each call runs in the candidate's process."""

    def __init__(self, name):
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        try:
            request = {{"call": self.__name__, "args": encode(list(args)), "kwargs": encode(dict(kwargs))}}
        except NotPlain as e:
            raise CandidateError(f"an argument to {{self.__name__}} is {{e}}") from None
        try:
            send(_REQUESTS, request)
            reply = receive(_REPLIES)
        except (EOFError, OSError):
            raise CandidateError(f"the candidate's program ended during {{self.__name__}}()") from None
        if "value" in reply:
            return decode(reply["value"])
        if "not_plain" in reply:
            raise CandidateError(f"{{self.__name__}} returned {{str(reply['not_plain'])[:200]}}")
        name, text = (str(x)[:200] for x in reply.get("raised", ["?", "?"])[:2])
        kind = getattr(builtins, name, None)
        # StopIteration would end a map() or filter() the tests iterate, as if the answers had all been checked
        if isinstance(kind, type) and issubclass(kind, Exception) and not issubclass(kind, _CONTROL_FLOW):
            raise kind(text)
        raise CandidateError(f"{{self.__name__}} raised {{name}}: {{text}}")


def _main():
    try:
        names = receive(_REPLIES)["ready"]
    except EOFError:
        raise CandidateError("the candidate's program ended before it was ready") from None
    namespace = {{"__name__": "__main__", "__builtins__": builtins}}
    entry = {entry_point!r}
    tests = compile({tests!r}, "tests", "exec")
    if entry is None:
        # the response's functions that the tests call; never a builtin's name (a response's own `all` or `abs`
        # would otherwise answer for the tests' checks)
        used, codes = set(), [tests]
        while codes:
            code = codes.pop()
            used.update(code.co_names)
            codes.extend(c for c in code.co_consts if isinstance(c, type(tests)))
        namespace.update((name, Candidate(name)) for name in names if type(name) is str and name.isidentifier()
                         and name in used and not name.startswith("__") and not hasattr(builtins, name))
        exec(tests, namespace)
        return
    if entry not in names:
        raise CandidateError(f"the response defines no function {{entry}}")
    exec(compile({prompt!r}, "prompt", "exec"), namespace)     # the prompt's helpers, not the response's
    namespace[entry] = Candidate(entry)
    exec(tests, namespace)
    namespace["check"](namespace[entry])


try:
    _main()
except BaseException as e:
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == "tests"]
    where = f" at line {{lines[-1]}} of the tests" if lines else ""
    print(f"{{type(e).__name__}}: {{e}}"[:200] + where if str(e) else type(e).__name__ + where, file=sys.stderr)
    sys.exit(1)
'''


def code_tests(sample: Sample, response: str, *, wall_s: float = 10.0, cpu_s: int = 5,
               memory_mb: int = 1024) -> Verdict:
    """1.0 when the response passes the sample's tests, else 0 with the reason."""
    if sample.tests is None:
        return Verdict.not_applicable("no tests")
    solution = _solution(sample, strip_code_fence(response))

    def candidate(reads: int, writes: int) -> str:
        return _PLAIN_DATA + _CANDIDATE.format(reads=reads, writes=writes, solution=solution)

    def tests(reads: int, writes: int) -> str:
        return _PLAIN_DATA + _TESTS.format(reads=reads, writes=writes, entry_point=sample.entry_point,
                                           prompt=sample.prompt, tests=sample.tests)

    ran, judged = run_pair(candidate, tests, SandboxLimits(wall_s=wall_s, cpu_s=cpu_s, memory_mb=memory_mb))
    if judged.status is SandboxStatus.OK:
        return Verdict(1.0, True, "tests passed")
    return Verdict.fail(_reason(ran, judged))


def _reason(ran: SandboxResult, judged: SandboxResult) -> str:
    """Why the tests did not pass: the tests' own failure, or how the candidate's program ended under them."""
    if not judged.reason.startswith(_ENDED) or ran.status is SandboxStatus.KILLED:
        return judged.reason
    if ran.status is SandboxStatus.OK:
        return "exited before the tests finished"
    return ran.reason


def strip_code_fence(response: str) -> str:
    """The code of the first markdown code block (```python ... ```), or the response as it is."""
    fenced = _FENCE.search(response)
    return fenced.group(1) if fenced else response


def _solution(sample: Sample, code: str) -> str:
    if sample.entry_point is None:
        return code
    defines_entry = re.compile(rf"^def\s+{re.escape(sample.entry_point)}\s*\(", re.MULTILINE)
    if defines_entry.search(code):
        in_prompt = defines_entry.search(sample.prompt)
        preamble = sample.prompt[:in_prompt.start()] if in_prompt else ""
        return f"{preamble}\n{code}"
    return sample.prompt + code
