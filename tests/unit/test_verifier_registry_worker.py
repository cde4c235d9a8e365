"""The verifier registry and VerifierWorker without Ray: every failure becomes a score-0 Verdict."""
import asyncio
import time

import pytest

from verifiers.config import VerifierPoolConfig, VerifierSpec
from verifiers.registry import VerifierNotFound, bind, resolve
from verifiers.types import Sample, Verdict
from verifiers.worker import Check, Outcome, VerifierWorker

FIX = "tests.fixtures.verifiers"


def test_resolve_builtin_entry_point_and_module_function():
    assert resolve("math").__name__ == "math_answer"
    assert resolve("has_citation").__module__ == "tether_citation"  # the examples/ plugin, by entry point
    assert resolve(f"{FIX}:length_is_answer").__name__ == "length_is_answer"


@pytest.mark.parametrize("name, words", [
    ("nope", "not a built-in (math, code, format, facts)"),
    ("no.such.module:f", "cannot import module 'no.such.module'"),
    (f"{FIX}:missing", "has no function 'missing'"),
])
def test_unresolvable_names_say_where_they_looked(name, words):
    with pytest.raises(VerifierNotFound, match=words.replace("(", r"\(").replace(")", r"\)")):
        resolve(name)


def test_options_are_checked_against_the_signature():
    slow = bind(VerifierSpec(fn=f"{FIX}:slow_length", options={"seconds": 0.0}))
    assert slow(Sample("p", answer="2"), "ab").passed
    with pytest.raises(ValueError, match="do not fit"):
        bind(VerifierSpec(fn=f"{FIX}:slow_length", options={"secs": 1}))


def test_sample_from_row_keeps_gsm8k_final_answer_and_meta():
    s = Sample.from_row({"question": "q?", "answer": "2 + 2 = 4\n#### 4", "source": "Smith 2020"}, "x:1")
    assert (s.prompt, s.answer, s.meta) == ("q?", "4", {"source": "Smith 2020"})
    with pytest.raises(ValueError, match="x:3: needs a 'prompt' or 'question'"):
        Sample.from_row({"text": "t"}, "x:3")


def worker(*fns, timeout=5.0, concurrency=4):
    return VerifierWorker([VerifierSpec(fn=f"{FIX}:{f}") for f in fns],
                          VerifierPoolConfig(concurrency=concurrency, call_timeout_s=timeout))


def test_worker_scores_sync_and_async_verifiers():
    w = worker("length_is_answer", "async_length")
    checks = [Check(v, Sample("p", answer="3"), r) for r in ("abc", "ab") for v in (0, 1)]
    out = asyncio.run(w.verify(checks))
    assert [c.verdict.passed for c in out] == [True, True, False, False]
    assert all(c.outcome == Outcome.ok for c in out)


def test_exceptions_wrong_types_and_timeouts_score_zero_with_a_reason():
    w = worker("raises", "wrong_type", "hangs", timeout=0.3)
    out = asyncio.run(w.verify([Check(v, Sample("p"), "x") for v in range(3)]))
    assert [c.outcome for c in out] == [Outcome.error, Outcome.error, Outcome.timeout]
    assert all(c.verdict.score == 0.0 and not c.verdict.passed for c in out)
    assert "RuntimeError: verifier bug" in out[0].verdict.reason
    assert "returned float, not Verdict" in out[1].verdict.reason
    assert out[2].verdict.reason.startswith("timeout after")
    assert w.abandoned == 1 and not w.overloaded()


def test_a_stuck_call_does_not_block_the_next_ones():
    w = worker("hangs", "length_is_answer", timeout=0.5, concurrency=1)
    start = time.perf_counter()
    out = asyncio.run(w.verify([Check(0, Sample("p"), "x")] + [Check(1, Sample("p", answer="1"), "a")] * 3))
    assert [c.outcome for c in out] == [Outcome.timeout] + [Outcome.ok] * 3 and all(c.verdict.passed for c in out[1:])
    assert time.perf_counter() - start < 1.5


def test_checks_run_concurrently():
    w = worker("slow_length", concurrency=4)
    start = time.perf_counter()
    asyncio.run(w.verify([Check(0, Sample("p", answer="1"), "a") for _ in range(8)]))
    assert time.perf_counter() - start < 1.6  # 8 x 0.5 s in 4 threads: 1 s, not 4 s


def test_not_applicable_is_kept_apart_from_failure():
    v = Verdict.not_applicable("no reference answer")
    assert not v.applicable and v.score == 0.0
