"""The `code` verifier: run a response against its sample's unit tests in the sandbox.

    >>> code_tests(Sample(prompt="Write add(a, b).", tests="assert add(2, 3) == 5"),
    ...            "```python\\ndef add(a, b):\\n    return a + b\\n```")
    Verdict(score=1.0, passed=True, reason='tests passed', applicable=True)

Two formats of tests:
- HumanEval (`sample.entry_point` set): the prompt is the function's signature and docstring (after any
  imports and helper functions); the tests define `check(candidate)`, called with the entry point.
  A response that defines `def <entry_point>(` replaces the prompt's function and keeps what precedes
  it (imports, helpers); any other response is a completion of the function body.
- Tests as code (`entry_point` None): asserts appended to the response."""
from __future__ import annotations

import re
import secrets

from verifiers.sandbox import SandboxLimits, SandboxStatus, run_python
from verifiers.types import Sample, Verdict

_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)  # the first block; unclosed if truncated


def code_tests(sample: Sample, response: str, *, wall_s: float = 10.0, cpu_s: int = 5,
               memory_mb: int = 1024) -> Verdict:
    """1.0 when the response passes the sample's tests in the sandbox, else 0 with the sandbox's reason."""
    if sample.tests is None:
        return Verdict.not_applicable("no tests")
    # Printed after the tests: a program that exits early (sys.exit(0), os._exit(0)) never prints it.
    finished = f"tests finished {secrets.token_hex(8)}"
    program = f"{_program(sample, strip_code_fence(response))}\n\nprint({finished!r})\n"
    result = run_python(program, SandboxLimits(wall_s=wall_s, cpu_s=cpu_s, memory_mb=memory_mb))
    if result.status is not SandboxStatus.OK:
        return Verdict.fail(result.reason)
    if not result.stdout.endswith(finished + "\n"):
        return Verdict.fail("exited before the tests finished")
    return Verdict(1.0, True, "tests passed")


def strip_code_fence(response: str) -> str:
    """The code of the first markdown code block (```python ... ```), or the response as it is."""
    fenced = _FENCE.search(response)
    return fenced.group(1) if fenced else response


def _program(sample: Sample, code: str) -> str:
    if sample.entry_point is None:
        return f"{code}\n\n{sample.tests}"
    defines_entry = re.compile(rf"^def\s+{re.escape(sample.entry_point)}\s*\(", re.MULTILINE)
    if defines_entry.search(code):
        in_prompt = defines_entry.search(sample.prompt)
        preamble = sample.prompt[:in_prompt.start()] if in_prompt else ""
        solution = f"{preamble}\n{code}"
    else:
        solution = sample.prompt + code
    return f"{solution}\n\n{sample.tests}\n\ncheck({sample.entry_point})"
