"""Losses: small pure functions, tensors in, tensors out (no ray, deepspeed or vllm here).

Notation: B sequences, T positions, V vocabulary."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def token_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token negative log-likelihood, eq. (9): -sum_t log pi_t(x_{t+1}).

    logits [B, T, V] (z_t, any float dtype; computed in fp32), targets [B, T] = x_{t+1},
    mask [B, T] (1 = the target counts; None = all count). Returns (sum of -log pi, token count)."""
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")  # [B*T]
    if mask is None:
        return nll.sum(), torch.tensor(float(nll.numel()))
    mask = mask.flatten().to(nll.dtype)
    return (nll * mask).sum(), mask.sum()


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log pi(x_{t+1} | x_<=t) of each target under the softmax of eq. (8), with no temperature.

    logits [B, T, V] (any float dtype; computed in fp32), targets [B, T] -> [B, T]."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """Reward-model loss under the Bradley-Terry preference model of Part 2 (RLHF, A; the model DPO
    assumes): P(y+ > y- | x) = sigma(R+ - R-), so the loss per pair is -log sigma(R+ - R- - m).

    chosen [B], rejected [B]: scalar rewards R_phi of each pair's two sides; margin [B] or None: how
    much R+ must exceed R- (0 = plain Bradley-Terry). Returns the per-pair losses [B] (the caller sums
    or averages)."""
    gap = chosen.float() - rejected.float()                         # [B]
    if margin is not None:
        gap = gap - margin.float()
    return -F.logsigmoid(gap)
