"""Alignment losses: small pure functions, tensors in, tensors out (no ray, deepspeed or vllm here).

The policy-gradient terms (PPO/GRPO clipped surrogate, critic loss, KL to the reference), their
aggregation over tokens, the policy entropy, and the DPO loss of Part 2 of the reference review.
Every function returns per-token (or per-pair) values except token_mean and sequence_mean, which
are the aggregations; the caller picks one.

Notation: B sequences, T positions, V vocabulary. Log-probs are log pi(x_{t+1} | x_{1:t}) of the
sampled tokens, [B, T]; a mask [B, T] is 1 on the response tokens that count and 0 elsewhere.
Half-precision inputs are computed in fp32 (fp64 stays fp64, which the tests use for exact checks)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOG_RATIO_CLAMP = 20.0
"""|log ratio| bound before exp(): exp(20) ~ 4.9e8 is far past any clip range, and an inf ratio would
turn the zero gradient of a clipped token into 0 * inf = NaN."""


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in at least fp32 (bf16/fp16 -> fp32; fp64 unchanged)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                clip_low: float, clip_high: float,
                dual_clip: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate per token (Schulman et al. 2017, L^CLIP, eq. (7)), the update of the
    policy-gradient stages of Part 2 (RLHF; RLVR with PPO or GRPO):

        rho = exp(log pi - log pi_old),  loss = -min(rho * A, clip(rho, 1 - clip_low, 1 + clip_high) * A).

    clip_high > clip_low is DAPO's clip-higher (Yu et al. 2025). dual_clip = c > 1 (Ye et al. 2020)
    also caps the loss of a token with A < 0 at -c * A: without it a huge rho times a negative A is an
    unbounded loss (the min picks the unclipped side there).

    logprobs [B, T] (differentiated), old_logprobs [B, T] (rollout time), advantages [B, T] (already
    broadcast per token; both treated as constants). Returns (loss [B, T], clipped [B, T]) where clipped
    is 1.0 where the clipped side or the dual-clip cap was taken, i.e. the token's gradient is zero."""
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip_low and clip_high must be >= 0, got {clip_low}, {clip_high}")
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    adv = _wide(advantages)                                                  # [B, T]
    log_ratio = (_wide(logprobs) - _wide(old_logprobs)).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = log_ratio.exp()                                                  # [B, T]
    unclipped = -ratio * adv                                                 # [B, T]
    clipped_side = -ratio.clamp(1 - clip_low, 1 + clip_high) * adv           # [B, T]
    # -min(a, b) = max(-a, -b); strict '>' so an in-range token (both sides equal) keeps its gradient
    clipped = clipped_side > unclipped                                       # [B, T] bool
    loss = torch.where(clipped, clipped_side, unclipped)
    if dual_clip is not None:
        cap = -dual_clip * adv                                               # [B, T], > 0 where A < 0
        capped = (adv < 0) & (loss > cap)
        loss = torch.where(capped, cap, loss)
        clipped = clipped | capped
    return loss, clipped.to(loss.dtype)


def truncated_importance_weights(old_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor,
                                 cap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated importance sampling (TIS) for rollouts sampled by other weights than pi_old, the policy
    before this update (asynchronous rollouts, or an engine whose numerics differ from the learner's):

        w = min(pi_old / pi_behaviour, C)    per token (Espeholt et al. 2018's truncated rho, applied to
                                             the clipped surrogate as verl and OpenRLHF do).

    The truncation bounds the variance that a token the behaviour policy sampled far more often than
    pi_old would add. old_logprobs [B, T], behaviour_logprobs [B, T] (what the rollout worker sampled with);
    both constants. Returns (weights [B, T], ratios [B, T]) with ratios the untruncated pi_old / pi_behaviour."""
    if not cap > 0:
        raise ValueError(f"the TIS cap must be > 0, got {cap}")
    log_ratio = (_wide(old_logprobs) - _wide(behaviour_logprobs)).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratios = log_ratio.exp()                                                 # [B, T]
    return ratios.clamp(max=cap), ratios


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               clip: float | None) -> torch.Tensor:
    """Critic loss per token: 0.5 * (V - R)^2, or with clip c the pessimistic clipped form of PPO
    implementations (OpenAI baselines ppo2; the value analogue of L^CLIP):

        0.5 * max((V - R)^2, (V_old + clamp(V - V_old, -c, c) - R)^2).

    values [B, T] (differentiated), old_values [B, T] (rollout time), returns [B, T] (targets, e.g. from
    gae). Returns the per-token loss [B, T]."""
    if clip is not None and clip < 0:
        raise ValueError(f"value clip must be >= 0, got {clip}")
    v, r = _wide(values), _wide(returns)                                     # [B, T]
    loss = (v - r).square()                                                  # [B, T]
    if clip is not None:
        old = _wide(old_values)
        v_clipped = old + (v - old).clamp(-clip, clip)                       # [B, T]
        loss = torch.maximum(loss, (v_clipped - r).square())
    return 0.5 * loss


# KL(pi || pi_ref) per token from tokens sampled from pi (Schulman 2020, "Approximating KL divergence").
# With r = pi_ref / pi at the sampled token: E_pi[k1] = E_pi[k3] = KL exactly; k2 is biased but low
# variance; k3 is unbiased, >= 0 and low variance (GRPO's KL term, Shao et al. 2024, eq. (4)). The
# penalty is the beta * KL of Part 2's KL-regularised objective (RLHF, B), applied per token.

def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k1 = -log r = log pi - log pi_ref. [B, T], [B, T] -> [B, T]. Unbiased; negative on some tokens."""
    return _wide(logprobs) - _wide(ref_logprobs)


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * (log r)^2. [B, T], [B, T] -> [B, T]. >= 0; biased (exact to second order in log r)."""
    return 0.5 * (_wide(ref_logprobs) - _wide(logprobs)).square()


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 = r - 1 - log r. [B, T], [B, T] -> [B, T]. Unbiased and >= 0 (r - 1 >= log r).

    log r is clamped to [-20, 20] first: exp() of a large log r (a token the reference likes far more
    than pi) overflows, and one inf would poison the whole loss."""
    log_r = (_wide(ref_logprobs) - _wide(logprobs)).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [B, T]
    return log_r.exp() - 1 - log_r


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(values * mask) / sum(mask): every counted token of the batch weighs the same (DAPO's
    token-level loss, Yu et al. 2025). values [B, T], mask [B, T] 0/1 -> scalar; 0 for an empty mask.
    Entries outside the mask are never read (a NaN there leaks neither into the result nor into the
    gradient w.r.t. values)."""
    keep = mask.bool()                                                       # [B, T]
    total = torch.where(keep, values, torch.zeros_like(values)).sum()
    return total / keep.sum().clamp(min=1)


def sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over sequences with >= 1 counted token of each sequence's token mean: every response weighs
    the same however long it is (the original GRPO objective, Shao et al. 2024, eq. (3)).
    values [B, T], mask [B, T] 0/1 -> scalar; 0 when no sequence has a counted token."""
    keep = mask.bool()                                                       # [B, T]
    per_row = torch.where(keep, values, torch.zeros_like(values)).sum(-1)    # [B]
    counts = keep.sum(-1)                                                    # [B]
    row_means = per_row / counts.clamp(min=1)                                # [B], 0 for empty rows
    rows = (counts > 0).sum()
    return row_means.sum() / rows.clamp(min=1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution pi_t = softmax(z_t) of eq. (8), per position:
    H = -sum_i p_i log p_i = logsumexp(z) - sum_i p_i z_i (log p_i = z_i - logsumexp(z), sum p = 1).

    logits [B, T, V] (any float dtype; computed in fp32, finite) -> [B, T]."""
    z = _wide(logits)                                                        # [B, T, V]
    return torch.logsumexp(z, dim=-1) - (torch.softmax(z, dim=-1) * z).sum(-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO loss of Part 2 (Direct Preference Optimization; Rafailov et al. 2023, eq. (7)):

        L = -log sigma(beta * [(log pi(y+) - log pi_ref(y+)) - (log pi(y-) - log pi_ref(y-))]).

    Inputs [B]: summed response log-probs of each pair's chosen (y+) and rejected (y-) side under the
    policy and the frozen reference. Returns (losses [B], chosen_rewards [B], rejected_rewards [B]) with
    the implicit rewards beta * log(pi / pi_ref) (the prompt's C(x) cancels in the difference);
    chosen_rewards > rejected_rewards is the pair ranked right (preference accuracy)."""
    chosen_rewards = beta * (_wide(policy_chosen) - _wide(ref_chosen))           # [B]
    rejected_rewards = beta * (_wide(policy_rejected) - _wide(ref_rejected))     # [B]
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)                    # [B]
    return losses, chosen_rewards, rejected_rewards
