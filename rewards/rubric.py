"""The reward rubric: R(x, y) = sum_k w_k s_k(x, y) over the verifiers and reward models that apply
to a sample, with the per-sample breakdown kept for logging. Pure functions (no Ray here).

A verifier that does not apply to a sample (Verdict.applicable False, e.g. a math check on a row
without a reference answer) contributes nothing and is marked as not applicable in the breakdown;
it is never a silent 0."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from rewards.config import Normalization
from verifiers.types import Verdict


@dataclass
class RewardBreakdown:
    """One sample's reward and where it came from."""
    total: float
    scores: list[Optional[float]]   # per component (rubric order); None = not applicable
    passed: list[Optional[bool]]    # per verifier component; None for reward models or not applicable
    reasons: list[str]


def rubric_rewards(weights: list[float], verdicts: list[list[Verdict]],
                   model_scores: Optional[list[float]] = None, model_weight: float = 1.0) -> list[RewardBreakdown]:
    """verdicts[i][k]: verifier k on sample i (len(weights) verifiers); model_scores[i]: a reward
    model's R_phi for sample i, appended as the last component."""
    if model_scores is not None and len(model_scores) != len(verdicts):
        raise ValueError(f"{len(model_scores)} reward-model scores for {len(verdicts)} samples")
    out = []
    for i, row in enumerate(verdicts):
        if len(row) != len(weights):
            raise ValueError(f"sample {i}: {len(row)} verdicts for {len(weights)} weighted verifiers")
        scores = [v.score if v.applicable else None for v in row]
        passed = [v.passed if v.applicable else None for v in row]
        reasons = [v.reason if v.applicable else f"n/a: {v.reason}" for v in row]
        total = sum(w * s for w, s in zip(weights, scores) if s is not None)
        if model_scores is not None:
            scores.append(float(model_scores[i]))
            passed.append(None)
            reasons.append("reward model")
            total += model_weight * float(model_scores[i])
        out.append(RewardBreakdown(total, scores, passed, reasons))
    return out


def normalize_rewards(totals: np.ndarray, how: Normalization) -> np.ndarray:
    """totals [N] -> [N]."""
    if how == Normalization.batch:
        return (totals - totals.mean()) / (totals.std() + 1e-6)
    return totals


def pass_rates(breakdowns: list[RewardBreakdown], labels: list[str]) -> dict[str, float]:
    """Per verifier: passed / applicable (NaN when it applied to no sample), the mean score where it applied
    (for the facts verifier, 1 - Hall(theta)), and the not-applicable share."""
    rates = {}
    for k, label in enumerate(labels):
        applied = [b.passed[k] for b in breakdowns if b.passed[k] is not None]
        scores = [b.scores[k] for b in breakdowns if b.scores[k] is not None]
        rates[f"verifier/{label}/pass_rate"] = float(np.mean(applied)) if applied else float("nan")
        rates[f"verifier/{label}/mean_score"] = float(np.mean(scores)) if scores else float("nan")
        rates[f"verifier/{label}/not_applicable"] = 1.0 - len(applied) / max(1, len(breakdowns))
    return rates
