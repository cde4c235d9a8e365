"""The verifier workers: a CPU pool, sized by config, that scores responses with the configured
verifiers and never stops or hangs training.

    pool = VerifierPool(specs, cfg)
    verdicts = pool.verify(samples, responses)   # [response][verifier] Verdicts; pool.stats counts failures

Checks go out in batches, one batch per worker at a time. A batch whose worker dies, or that runs
past its time bound, is sent again on a fresh worker (max_retries times); after that its checks
score 0 as 'worker lost'. A worker holding many timed-out calls (threads that cannot be stopped)
is replaced."""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass

import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.placement_group import remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.actor_group import Bundle, RoleError, place_role
from verifiers.config import VerifierPoolConfig, VerifierSpec
from verifiers.registry import bind
from verifiers.types import Sample, Verdict
from verifiers.worker import Check, Checked, Outcome, VerifierWorker

log = logging.getLogger(__name__)
START_TIMEOUT_S = 120.0


@dataclass
class VerifierStats:
    """Counts since the pool started (the stages log them per step as differences)."""
    checks: int = 0
    errors: int = 0
    timeouts: int = 0
    lost: int = 0
    worker_restarts: int = 0


class VerifierPool:
    def __init__(self, specs: list[VerifierSpec], cfg: VerifierPoolConfig):
        if not specs:
            raise ValueError("VerifierPool: no verifiers configured")
        for spec in specs:
            bind(spec)  # a name that resolves to nothing fails here, before any actor starts
        self.specs, self.cfg = specs, cfg
        self.stats = VerifierStats()
        self.placement = place_role("verifier", [Bundle(cfg.cpus_per_worker, 0)] * cfg.num_workers, START_TIMEOUT_S)
        self.workers = [self._start(i) for i in range(cfg.num_workers)]
        self._wait_started()
        self.batch_timeout_s = cfg.call_timeout_s * math.ceil(cfg.batch_size / cfg.concurrency) + 30.0

    def _start(self, index: int):
        return ray.remote(VerifierWorker).options(
            num_cpus=self.cfg.cpus_per_worker, num_gpus=0, max_concurrency=2,  # overloaded() answers mid-batch
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}},
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=index),
        ).remote(self.specs, self.cfg)

    def _wait_started(self) -> None:
        refs = [w.overloaded.remote() for w in self.workers]
        try:
            ray.get(refs, timeout=START_TIMEOUT_S)
        except (RayActorError, ray.exceptions.GetTimeoutError) as e:
            raise RoleError(f"verifier workers did not start within {START_TIMEOUT_S:.0f}s: {e}") from None

    def _restart(self, index: int, why: str) -> None:
        log.warning("verifier worker %d %s; replacing it", index, why)
        ray.kill(self.workers[index])
        self.workers[index] = self._start(index)
        self.stats.worker_restarts += 1

    def verify(self, samples: list[Sample], responses: list[str]) -> list[list[Verdict]]:
        """Every configured verifier on every (sample, response): result[i][v] for response i, verifier v."""
        if len(samples) != len(responses):
            raise ValueError(f"verify: {len(samples)} samples for {len(responses)} responses (repeat a sample per response)")
        checks = [Check(v, s, r) for s, r in zip(samples, responses) for v in range(len(self.specs))]
        results = self._run(checks)
        for c in results:
            self.stats.checks += 1
            self.stats.errors += c.outcome == Outcome.error
            self.stats.timeouts += c.outcome == Outcome.timeout
            self.stats.lost += c.outcome == Outcome.worker_lost
        width = len(self.specs)
        return [[c.verdict for c in results[i * width:(i + 1) * width]] for i in range(len(responses))]

    def _run(self, checks: list[Check]) -> list[Checked]:
        size = self.cfg.batch_size
        batches = [list(range(i, min(i + size, len(checks)))) for i in range(0, len(checks), size)]
        results: list[Checked | None] = [None] * len(checks)
        attempts = [0] * len(batches)
        queue = deque(range(len(batches)))
        idle = deque(range(len(self.workers)))
        running: dict = {}  # ref -> (worker, batch, started)
        while queue or running:
            while queue and idle:
                w, b = idle.popleft(), queue.popleft()
                ref = self.workers[w].verify.remote([checks[i] for i in batches[b]])
                running[ref] = (w, b, time.monotonic())
            deadline = min(started for _, _, started in running.values()) + self.batch_timeout_s
            done, _ = ray.wait(list(running), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not done:  # the oldest batch ran past its bound: its worker is hung
                ref = min(running, key=lambda r: running[r][2])
                w, b, _ = running.pop(ref)
                self._retry_or_give_up(b, attempts, queue, batches, results, f"hung for {self.batch_timeout_s:.0f}s")
                self._restart(w, f"ran past {self.batch_timeout_s:.0f}s on a batch")
                idle.append(w)
                continue
            ref = done[0]
            w, b, _ = running.pop(ref)
            try:
                for i, checked in zip(batches[b], ray.get(ref)):
                    results[i] = checked
                if any(results[i].outcome == Outcome.timeout for i in batches[b]) and \
                        ray.get(self.workers[w].overloaded.remote(), timeout=START_TIMEOUT_S):
                    self._restart(w, "holds too many timed-out calls")
            except (RayActorError, RayTaskError) as e:
                self._retry_or_give_up(b, attempts, queue, batches, results, f"died ({type(e).__name__})")
                self._restart(w, "died")
            idle.append(w)
        return results

    def _retry_or_give_up(self, b, attempts, queue, batches, results, why: str) -> None:
        attempts[b] += 1
        if attempts[b] <= self.cfg.max_retries:
            queue.appendleft(b)
            return
        for i in batches[b]:
            results[i] = Checked(Verdict.fail(f"verifier worker lost: {why}, {attempts[b]} attempts"),
                                 Outcome.worker_lost, 0.0)

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        remove_placement_group(self.placement)
