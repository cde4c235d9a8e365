"""VerifierWorker: runs verifier checks concurrently, each under a time limit, and turns every
exception or timeout into a score-0 Verdict with its reason. Run as a Ray actor by
cluster.verifier_pool; plain Python otherwise (tested without Ray)."""
from __future__ import annotations

import asyncio
import inspect
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum

from verifiers.config import VerifierPoolConfig, VerifierSpec
from verifiers.registry import bind
from verifiers.types import Sample, Verdict


@dataclass
class Check:
    """One verifier applied to one response."""
    verifier: int      # index into the pool's verifier list
    sample: Sample
    response: str


class Outcome(Enum):
    ok = "ok"
    error = "error"              # the verifier raised
    timeout = "timeout"          # past call_timeout_s
    worker_lost = "worker_lost"  # its worker died or hung, max_retries times


@dataclass
class Checked:
    verdict: Verdict
    outcome: Outcome
    seconds: float


class VerifierWorker:
    def __init__(self, specs: list[VerifierSpec], cfg: VerifierPoolConfig):
        # Resolved here, in the worker's process: a plugin is found through its own installation.
        self.verifiers = [bind(s) for s in specs]
        self.labels = [s.label for s in specs]
        self.cfg = cfg
        self.threads = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="verifier")
        self.abandoned = 0  # timed-out calls whose threads may still run (Python threads cannot be killed)
        self.max_abandoned = 4 * cfg.concurrency

    async def verify(self, checks: list[Check]) -> list[Checked]:
        """Every check, at most cfg.concurrency at once (an async method: Ray runs it on the actor's loop)."""
        slots = asyncio.Semaphore(self.cfg.concurrency)

        async def one(check: Check) -> Checked:
            async with slots:
                return await self._verify_one(check)
        return list(await asyncio.gather(*(one(c) for c in checks)))

    def overloaded(self) -> bool:
        """True once many abandoned calls may still be running: the pool then replaces this worker, the
        only way to stop them."""
        return self.abandoned >= self.max_abandoned

    async def _verify_one(self, check: Check) -> Checked:
        fn = self.verifiers[check.verifier]
        start = time.perf_counter()
        try:
            if inspect.iscoroutinefunction(getattr(fn, "func", fn)):
                call = fn(check.sample, check.response)
            else:
                call = asyncio.get_running_loop().run_in_executor(self.threads, fn, check.sample, check.response)
            verdict = await asyncio.wait_for(call, self.cfg.call_timeout_s)
        except asyncio.TimeoutError:
            self.abandoned += 1
            # The stuck call keeps its thread: later calls go to fresh threads, so they are not queued behind it.
            self.threads = ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix="verifier")
            return Checked(Verdict.fail(f"timeout after {self.cfg.call_timeout_s:g}s"), Outcome.timeout,
                           time.perf_counter() - start)
        except Exception as e:  # a verifier's bug scores 0 and is counted; it never stops training
            return Checked(Verdict.fail(f"{type(e).__name__}: {e}"[:300]), Outcome.error, time.perf_counter() - start)
        if not isinstance(verdict, Verdict):
            return Checked(Verdict.fail(f"verifier '{self.labels[check.verifier]}' returned "
                                        f"{type(verdict).__name__}, not Verdict"), Outcome.error,
                           time.perf_counter() - start)
        return Checked(verdict, Outcome.ok, time.perf_counter() - start)
