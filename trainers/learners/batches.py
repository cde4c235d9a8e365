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


def whole_calls(count: int, per_call: int) -> list[np.ndarray]:
    """Row indices 0..count-1 cut into calls of exactly per_call rows; the last call is filled by repeating
    rows from the start (callers keep the first `count` results)."""
    padded = np.resize(np.arange(count), -(-count // per_call) * per_call)
    return np.split(padded, len(padded) // per_call)


@dataclass
class PairBatch:
    """Preference pairs for reward-model training or scoring on one rank.

    chosen [B, T] and rejected [B, T] int64: prompt + response token ids, right-padded with the pad id
    (the scalar head reads the last non-pad token). margin [B] float32: how far R+ must exceed R-.
    global_pairs: pairs in the optimizer step over all ranks (the loss is a mean over them)."""
    chosen: np.ndarray
    rejected: np.ndarray
    margin: np.ndarray
    global_pairs: int

    def split(self, parts: int) -> list["PairBatch"]:
        if len(self.chosen) % parts:
            raise ValueError(f"batch of {len(self.chosen)} pairs does not split into {parts} equal parts")
        return [PairBatch(c, r, m, self.global_pairs) for c, r, m in
                zip(np.split(self.chosen, parts), np.split(self.rejected, parts), np.split(self.margin, parts))]


@dataclass
class PairStepResult:
    """One rank's share of a reward-model optimizer step."""
    loss_sum: float       # sum of Bradley-Terry losses over this rank's pairs
    pairs: int
    correct: int          # pairs with R+ > R-
    grad_norm: float
    lr: float
