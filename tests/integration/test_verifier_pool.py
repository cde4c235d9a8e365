"""The verifier worker pool on real Ray: faults never stop scoring, and a plugin found only through
its entry point scores a GRPO-shaped batch."""
import threading
import time

import numpy as np
import pytest
import ray

from cluster.verifier_pool import VerifierPool
from rewards.rubric import pass_rates, rubric_rewards
from verifiers.config import VerifierPoolConfig, VerifierSpec
from verifiers.types import Sample

pytestmark = pytest.mark.integration
FIX = "tests.fixtures.verifiers"


def pool_of(*fns, workers=2, **cfg):
    return VerifierPool([VerifierSpec(fn=f"{FIX}:{f}") for f in fns],
                        VerifierPoolConfig(num_workers=workers, cpus_per_worker=0.25, **cfg))


def test_killed_worker_mid_batch_still_gives_correct_scores(ray_cluster):
    pool = pool_of("slow_length", workers=2, batch_size=4, concurrency=2)
    try:
        responses = ["x" * (i % 5) for i in range(24)]
        samples = [Sample("p", answer=str(i % 3)) for i in range(24)]
        killer = threading.Timer(0.6, lambda: ray.kill(pool.workers[0]))
        killer.start()
        start = time.perf_counter()
        verdicts = pool.verify(samples, responses)
        killer.join()
        expected = [len(r) == i % 3 for i, r in enumerate(responses)]
        assert [row[0].passed for row in verdicts] == expected
        assert pool.stats.worker_restarts >= 1 and pool.stats.lost == 0 and pool.stats.checks == 24
        print(f"24 checks with a worker killed mid-batch: {time.perf_counter() - start:.1f}s, "
              f"{pool.stats.worker_restarts} restart(s), all scores correct")
    finally:
        pool.shutdown()


def test_errors_timeouts_and_dead_workers_score_zero_and_are_counted(ray_cluster):
    pool = pool_of("raises", "hangs", "exits_process", workers=1, batch_size=3, concurrency=1,
                   call_timeout_s=0.5, max_retries=1)
    try:
        verdicts = pool.verify([Sample("p", answer="2")] * 2, ["ab", "die"])
        ok_row, dead_row = verdicts
        assert "RuntimeError" in ok_row[0].reason and ok_row[1].reason.startswith("timeout")
        assert ok_row[2].passed  # not queued behind the stuck call
        assert all(v.score == 0 and "worker lost" in v.reason for v in dead_row)
        assert pool.stats.errors == 1 and pool.stats.timeouts == 1 and pool.stats.lost == 3
        assert pool.stats.worker_restarts == 2  # the "die" batch: its first try and its one retry
        # the pool still works after all that
        assert pool.verify([Sample("p", answer="1")], ["a"])[0][2].passed
    finally:
        pool.shutdown()


def test_plugin_by_entry_point_in_a_grpo_shaped_scoring_run(ray_cluster):
    """4 prompts x 4 sampled responses -> verifiers (the plugin + a weighted module:function one) ->
    rubric -> group-normalised advantages, as a GRPO step does."""
    specs = [VerifierSpec(fn="has_citation", weight=1.0), VerifierSpec(fn=f"{FIX}:length_is_answer", weight=0.5)]
    pool = VerifierPool(specs, VerifierPoolConfig(num_workers=2, cpus_per_worker=0.25, batch_size=5))
    try:
        prompts = [Sample(f"q{i}", answer="9", meta={"source": f"S{i}"} if i < 3 else {}) for i in range(4)]
        responses = [[f"[S{i}] ok ", "no cite!!", f"x [S{i}]", "plainly.."] for i in range(4)]
        samples = [p for p in prompts for _ in range(4)]
        flat = [r for group in responses for r in group]
        rewards = rubric_rewards([s.weight for s in specs], pool.verify(samples, flat))
        totals = np.array([r.total for r in rewards]).reshape(4, 4)
        # by hand: cited -> 1, len 9 -> +0.5 ("[S0] ok " is 8 long, "no cite!!" and "plainly.." are 9)
        assert totals[0].tolist() == [1.0, 0.5, 1.0, 0.5]
        assert totals[3].tolist() == [0.0, 0.5, 0.0, 0.5]   # no source: the plugin does not apply
        assert rewards[12].scores[0] is None and rewards[12].reasons[0].startswith("n/a")
        advantages = (totals - totals.mean(1, keepdims=True)) / (totals.std(1, keepdims=True) + 1e-6)
        assert advantages[0].tolist() == pytest.approx([1, -1, 1, -1], abs=1e-4)
        rates = pass_rates(rewards, [s.label for s in specs])
        assert rates["verifier/has_citation/pass_rate"] == pytest.approx(6 / 12)
        assert rates["verifier/has_citation/not_applicable"] == pytest.approx(4 / 16)
    finally:
        pool.shutdown()


def test_tether_verify_scores_a_file(ray_cluster, tmp_path, capsys):
    import json

    from cluster.cli import main
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "2 + 2?", "answer": "2 + 2 = 4\n#### 4"},
        {"question": "Half of 3?", "answer": "1.5"},
        {"question": "no reference"}]))
    responses = tmp_path / "out.jsonl"
    responses.write_text("".join(json.dumps(r) + "\n" for r in [
        {"responses": [{"text": "2 + 2 = 4\n#### 4"}, {"text": "#### 5"}]},
        {"response": "It is \\boxed{\\frac{3}{2}}"},
        {"response": "#### 7"}]))
    assert main(["verify", "--data", str(data), "--responses", str(responses), "--verifier", "math"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl.verdicts.jsonl").read_text().splitlines()]
    assert [r["problem"] for r in rows] == [0, 0, 1, 2]
    assert [r["verdicts"]["math"]["passed"] for r in rows] == [True, False, True, False]
    assert rows[3]["verdicts"]["math"]["applicable"] is False
    assert "math: 2/3 passed, 1 not applicable" in capsys.readouterr().out
