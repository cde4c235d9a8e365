"""Knobs owned by the rewards package: the rubric that turns verdicts and reward-model scores into
the scalar reward R(x, y) of Part 2."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from verifiers.config import VerifierSpec


class Normalization(Enum):
    none = "none"
    """Rewards as the rubric sums them."""
    batch = "batch"
    """Standardised over the batch: (R - mean) / (std + 1e-6)."""


@dataclass
class HttpRewardConfig:
    url: str = ""
    """POST endpoint: receives {"prompts": [...], "responses": [...]} (text), returns {"scores": [...]}."""
    timeout_s: float = 30.0
    """Per request."""
    retries: int = 3
    """Attempts after the first failure (connection error, timeout or HTTP 5xx), with doubling back-off."""
    batch_size: int = 32
    """Pairs per request."""


@dataclass
class RewardModelSpec:
    path: Optional[str] = None
    """HF directory of a reward model; None with `from_stage: true` uses this run's reward_model stage output."""
    from_stage: bool = False
    """Use the model this run's reward_model stage trained."""
    http: Optional[HttpRewardConfig] = None
    """Score through a remote HTTP endpoint instead of a local RewardModelWorker."""
    weight: float = 1.0
    """Weight of the reward-model score in the rubric."""
    batch_size: int = 16
    """Sequences per forward pass in a RewardModelWorker."""
    cpus: float = 0.5
    """CPUs Ray reserves for the RewardModelWorker."""
    gpus: float = 0.0
    """GPUs Ray reserves for the RewardModelWorker."""


@dataclass
class RewardConfig:
    verifiers: list[VerifierSpec] = field(default_factory=list)
    """Verifiers of the rubric, each with its weight."""
    reward_model: Optional[RewardModelSpec] = None
    """A reward model term of the rubric (local or HTTP)."""
    normalization: Normalization = Normalization.none
    """Applied to the summed rewards of a batch."""
