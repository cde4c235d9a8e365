"""Knobs owned by the verifiers package: which verifiers score a sample, and the worker pool."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class VerifierSpec:
    fn: str = "math"
    """A built-in (math, code, format, facts), an entry-point name in the group `tether.verifiers`, or a
    "module:function" string."""
    weight: float = 1.0
    """Weight of this verifier's score in the reward rubric."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments the function takes after (sample, response), e.g. {max_chars: 2000}."""
    name: Optional[str] = None
    """Label in metrics and reward breakdowns (default: fn)."""

    @property
    def label(self) -> str:
        return self.name or self.fn


@dataclass
class VerifierPoolConfig:
    num_workers: int = 1
    """Verifier workers (Ray actors, CPU only)."""
    cpus_per_worker: float = 0.5
    """CPUs Ray reserves per worker (sandboxed code runs in a child process of its worker)."""
    concurrency: int = 4
    """Verifier calls in flight per worker."""
    call_timeout_s: float = 30.0
    """Per verifier call; past it the sample scores 0 with reason 'timeout' (the code sandbox has its own,
    shorter wall-clock limit)."""
    batch_size: int = 32
    """(sample, verifier) checks per worker call."""
    max_retries: int = 2
    """Times a batch is resent after its worker died or hung; then its checks score 0 as 'worker lost'."""
