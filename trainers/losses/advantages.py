"""Advantage estimators and returns: small pure functions, tensors in, tensors out (no ray, deepspeed or
vllm here).

Per-token estimators for PPO (GAE with a critic, whitening) and REINFORCE++ (discounted returns), and
per-response estimators for the group-sampled RLVR stages (GRPO, Dr. GRPO, RLOO, REINFORCE++-baseline)
that the caller broadcasts over each response's tokens.

Notation: B sequences, T positions, G prompts, n responses per prompt. A mask [B, T] is 1 on the
response tokens and 0 elsewhere; responses are right-padded, so each row's mask is a prefix of ones.
Everything here is a training target, never differentiated through, so every function runs under
torch.no_grad(). Standard deviations are torch's default unbiased (Bessel-corrected) estimate, as in
GRPO's reference implementation (torch.std); half-precision inputs are computed in fp32."""
from __future__ import annotations

import torch


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in at least fp32 (bf16/fp16 -> fp32; fp64 unchanged)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@torch.no_grad()
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, eq. (16); truncated form: Schulman et al.
    2017, eqs. (11)-(12)):

        delta_t = r_t + gamma * V_{t+1} * mask_{t+1} - V_t,   A_t = delta_t + gamma * lam * A_{t+1},

    i.e. A_t = sum_l (gamma * lam)^l delta_{t+l}; the value after a response's last token is 0 (the
    episode ends there). t+1 is the next position inside the mask: a multi-turn episode's observation tokens
    (mask 0 between sampled ones) are part of the environment's transition, not steps of their own.
    rewards, values, mask [B, T]. Returns (advantages [B, T], returns [B, T] = A + V, the critic's targets),
    both 0 where mask is 0."""
    keep = mask.bool()                                                       # [B, T]
    r = torch.where(keep, _wide(rewards), 0.0)                               # [B, T]; padding never read
    v = torch.where(keep, _wide(values), 0.0)                                # [B, T]
    adv = torch.zeros_like(v)                                                # [B, T]
    next_value = torch.zeros_like(v[:, 0])                                   # [B]: V_{t+1} * mask_{t+1}
    next_adv = torch.zeros_like(v[:, 0])                                     # [B]: A_{t+1}, 0 past the end
    for t in reversed(range(v.shape[1])):
        delta = r[:, t] + gamma * next_value - v[:, t]                       # [B]
        adv[:, t] = torch.where(keep[:, t], delta + gamma * lam * next_adv, 0.0)
        next_value = torch.where(keep[:, t], v[:, t], next_value)           # carried across observations
        next_adv = torch.where(keep[:, t], adv[:, t], next_adv)
    returns = adv + v                                                        # [B, T]; both 0 off the mask
    return adv, returns


@torch.no_grad()
def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reward-to-go G_t = r_t + gamma * G_{t+1} inside the mask (G = 0 past a response's end): the
    critic-free per-token advantage of REINFORCE++ (Hu 2025) when the KL penalty is folded into the
    token rewards; t+1 skips a multi-turn episode's observations (mask 0 between sampled tokens).
    token_rewards, mask [B, T] -> [B, T], 0 where mask is 0."""
    keep = mask.bool()                                                       # [B, T]
    r = torch.where(keep, _wide(token_rewards), 0.0)                         # [B, T]
    out = torch.zeros_like(r)                                                # [B, T]
    running = torch.zeros_like(r[:, 0])                                      # [B]: G_{t+1}
    for t in reversed(range(r.shape[1])):
        running = torch.where(keep[:, t], r[:, t] + gamma * running, running)   # carried across observations
        out[:, t] = torch.where(keep[:, t], running, 0.0)
    return out


@torch.no_grad()
def group_advantages(rewards: torch.Tensor, divide_by_std: bool, eps: float = 1e-6) -> torch.Tensor:
    """Group-relative advantage of GRPO's outcome supervision (Shao et al. 2024, sec. 4.1.2):
    (r_i - mean(r)) / (std(r) + eps) over the n responses to one prompt; with divide_by_std=False just
    r_i - mean(r) (Dr. GRPO, Liu et al. 2025: the std division overweights near-unanimous groups).
    std is unbiased (divides by n - 1). A group whose rewards are all equal gets 0.

    rewards [G, n] -> [G, n]; n == 1 gives zeros (one response has no group to compare with)."""
    r = _wide(rewards)                                                       # [G, n]
    if r.shape[1] < 2:
        return torch.zeros_like(r)
    centered = r - r.mean(dim=1, keepdim=True)                               # [G, n]
    if not divide_by_std:
        return centered
    return centered / (r.std(dim=1, keepdim=True) + eps)                     # std [G, 1]


@torch.no_grad()
def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024; Kool et al. 2019): each response's baseline is the
    mean reward of the other n - 1 responses to its prompt:

        A_i = r_i - (1 / (n - 1)) sum_{j != i} r_j = n / (n - 1) * (r_i - mean(r)).

    rewards [G, n] -> [G, n]; n must be >= 2."""
    n = rewards.shape[1]
    if n < 2:
        raise ValueError(f"RLOO needs n >= 2 responses per prompt, got {n}")
    r = _wide(rewards)                                                       # [G, n]
    return n / (n - 1) * (r - r.mean(dim=1, keepdim=True))


@torch.no_grad()
def reinforce_pp_baseline(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """REINFORCE++-baseline (Hu 2025): subtract each prompt's group mean, then normalise over the whole
    batch, (c - mean(c)) / (std(c) + eps) over all G * n centred rewards c. mean(c) is 0 (each group's
    centred rewards sum to 0), so only the global std (unbiased) divides. Unlike GRPO's per-group std
    this does not blow up a group whose rewards nearly agree.

    rewards [G, n] -> [G, n]; a batch with fewer than 2 values gives zeros."""
    r = _wide(rewards)                                                       # [G, n]
    centered = r - r.mean(dim=1, keepdim=True)                               # [G, n]
    if centered.numel() < 2:
        return torch.zeros_like(centered)
    return centered / (centered.std() + eps)                                 # std over all G * n


@torch.no_grad()
def whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps) with the mean and unbiased std over the masked entries only: PPO's
    per-batch advantage normalisation (OpenAI baselines ppo2 does it per minibatch, with numpy's biased
    std; unbiased here, as everywhere in this module). values, mask [B, T] -> [B, T],
    0 where mask is 0 (and everywhere when fewer than 2 entries count)."""
    keep = mask.bool()                                                       # [B, T]
    x = torch.where(keep, _wide(values), 0.0)                                # [B, T]
    count = keep.sum()
    if count < 2:
        return torch.zeros_like(x)
    mean = x.sum() / count
    centered = torch.where(keep, x - mean, 0.0)                              # [B, T]
    std = (centered.square().sum() / (count - 1)).sqrt()
    return centered / (std + eps)
