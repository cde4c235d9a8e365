"""Typed records that cross the driver/learner boundary."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class TokenBatch:
    """Sequences for next-token training on one rank.

    tokens [B, T+1] int64: inputs are tokens[:, :-1], targets x_{t+1} are tokens[:, 1:].
    loss_mask [B, T] float32 or None: 1 where the target counts (None: every target counts).
    global_targets: targets counted over the whole optimizer step on all ranks, so that the
    loss is a token mean over the global batch whatever the split into ranks and micro-batches."""
    tokens: np.ndarray
    loss_mask: Optional[np.ndarray]
    global_targets: int

    def split(self, parts: int) -> list["TokenBatch"]:
        if len(self.tokens) % parts:
            raise ValueError(f"batch of {len(self.tokens)} sequences does not split into {parts} equal parts")
        masks = np.split(self.loss_mask, parts) if self.loss_mask is not None else [None] * parts
        return [TokenBatch(t, m, self.global_targets) for t, m in zip(np.split(self.tokens, parts), masks)]


@dataclass
class StepResult:
    """One rank's share of an optimizer step."""
    nll_sum: float        # sum of -log pi over this rank's counted targets (eq. 9)
    targets: int          # counted targets on this rank
    grad_norm: float      # global gradient norm before clipping
    lr: float             # learning rate used for this step
    forward_backward_s: float  # seconds in forward and backward passes
    optimizer_s: float         # seconds in engine.step(): gradient reduction across ranks, clipping, the update


@dataclass
class EvalSums:
    """One rank's held-out sums; the driver adds them over ranks."""
    nll_sum: float
    targets: int
