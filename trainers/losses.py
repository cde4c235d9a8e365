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
