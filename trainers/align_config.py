"""Knobs owned by the trainers package for the stages after pretraining: sft, grpo, ppo, rsft, dpo.

Each stage's dataclass holds only what that loop reads; the prompts every loop samples from, and the
held-out evaluation every stage reports, are shared records."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from data.config import PairSource
from tools.config import Demonstration, EpisodeConfig


class RewardTerms(Enum):
    verifiers = "verifiers"
    """R = the weighted verifier scores of `rewards.verifiers` (RLVR)."""
    reward_model = "reward_model"
    """R = the reward model's score (RLHF)."""
    both = "both"
    """Both, each with its weight."""


class AdvantageKind(Enum):
    grpo = "grpo"
    """(r - group mean) / group std (Shao et al. 2024)."""
    dr_grpo = "dr_grpo"
    """r - group mean, no std division (Liu et al. 2025)."""
    rloo = "rloo"
    """Leave-one-out baseline (Ahmadian et al. 2024)."""
    reinforce_pp = "reinforce_pp"
    """REINFORCE++-baseline: group mean removed, then whitened over the batch (Hu 2025)."""


class LossAggregation(Enum):
    token_mean = "token_mean"
    """Every response token of the batch weighs the same."""
    sequence_mean = "sequence_mean"
    """Every response weighs the same (its tokens' mean), as in the original GRPO."""


@dataclass
class PolicyUpdateConfig:
    """The clipped policy-gradient update shared by grpo and ppo."""
    lr: float = 1e-4
    """Peak learning rate of the policy."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    min_lr_ratio: Optional[float] = None
    """The cosine decays to lr * this (None: learner.min_lr_ratio); 1.0 holds the LR constant."""
    ppo_epochs: int = 1
    """Passes over each step's rollouts."""
    minibatch_size: int = 64
    """Rollouts per optimizer step: a multiple of learner.num_ranks x learner.micro_batch (grad_accum follows).
    A step's rollouts make ceil(rollouts / minibatch_size) optimizer steps per pass; one, with ppo_epochs 1,
    is exactly on-policy (the ratio is 1 and no old log-probs are computed)."""
    clip_low: float = 0.2
    """epsilon below 1 for the ratio clip."""
    clip_high: float = 0.28
    """epsilon above 1 (clip-higher when > clip_low; Yu et al. 2025)."""
    dual_clip: Optional[float] = None
    """Cap on the loss of negative-advantage tokens at dual_clip * |A| (> 1; Ye et al. 2020); None: off."""
    loss_aggregation: LossAggregation = LossAggregation.token_mean
    """How per-token losses become the minibatch loss."""
    kl_coef: float = 0.0
    """beta of the KL(pi || pi_ref) term; 0 runs without a reference policy."""
    tis_cap: Optional[float] = 2.0
    """Off-policy rollouts (async_rollout.max_staleness > 0): each token's loss is weighted by the truncated
    importance ratio min(pi_old / pi_behaviour, tis_cap) against the weights that sampled it (truncated
    importance sampling); None: no correction. On-policy rollouts are never reweighted."""


@dataclass
class AsyncRollout:
    """Rollouts sampled while the learners train (verl's and OpenRLHF's asynchronous mode)."""
    max_staleness: int = 0
    """Steps the workers may sample ahead of the learners: a step trains on rollouts at most this many weight
    syncs old, corrected by update.tis_cap. 0: synchronous (sample, train, sync; nothing overlaps)."""


@dataclass
class SftConfig:
    steps: int = 100
    """Optimizer steps on prompt + worked answer, the prompt tokens masked out of eq. (9)."""
    batch_size: int = 32
    """Sequences per optimizer step (a multiple of learner.num_ranks x learner.micro_batch)."""
    lr: float = 1e-3
    """Peak learning rate."""
    warmup_steps: int = 5
    """Linear warm-up steps."""
    min_lr_ratio: Optional[float] = None
    """The cosine decays to lr * this (None: learner.min_lr_ratio). 1.0 holds the peak LR to the end, which
    leaves a policy that GRPO can take larger steps on (docs/alignment_tuning.md)."""
    assert_wrong: Optional[float] = None
    """Share of SFT's questions where the user asserts a wrong answer; the worked answer stays the true one.
    None: tasks.train.assert_wrong. A policy that never saw an assertion answers one with fragments, so the
    demo asserts in a quarter (at no cost in pass@1: docs/evals.md)."""
    episode: Optional[EpisodeConfig] = None
    """Tools for the held-out evaluation (eval/tools/...: pass@k in multi-turn episodes, besides pass@k
    without them) and for the demonstrations; None: one turn."""
    demonstrate: Optional[Demonstration] = None
    """Train on tool-use demonstrations (tools/demonstrations.py: the call, the tool's result, masked out, then
    `#### answer`) instead of worked answers; needs episode with that tool."""
    eval_every: int = 50
    """Held-out pass@k every this many steps (and at the start and end)."""
    checkpoint_every: int = 50
    """Write a checkpoint every this many steps (and at the end)."""


@dataclass
class GrpoConfig:
    steps: int = 20
    """Policy updates (each on prompts_per_step x group_size rollouts)."""
    prompts_per_step: int = 16
    """Prompts sampled per step."""
    group_size: int = 8
    """Responses per prompt (n)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    reward: RewardTerms = RewardTerms.verifiers
    """What the reward is made of."""
    assert_wrong: Optional[float] = None
    """Share of this stage's training prompts where the user asserts a wrong answer (tasks.train's questions,
    drawn as tasks.train.assert_wrong draws them); None: tasks.train.assert_wrong. The demo asserts in all of
    the prompts of grpo and sycophancy_ppo, the two arms of the sycophancy experiment (Part 4), and in half
    of ppo's."""
    advantage: AdvantageKind = AdvantageKind.grpo
    """Advantage estimator."""
    update: PolicyUpdateConfig = field(default_factory=PolicyUpdateConfig)
    async_rollout: AsyncRollout = field(default_factory=AsyncRollout)
    episode: Optional[EpisodeConfig] = None
    """Each sample a multi-turn episode with tools (rollout/episodes.py; held-out evaluation reports pass@k with
    and without them); None: one turn."""
    dynamic_sampling: bool = False
    """Drop groups whose rewards are all equal (they carry no signal; Yu et al. 2025)."""
    overlong_filter: bool = False
    """Leave responses cut off at max_new_tokens out of the loss."""
    eval_every: int = 10
    """Held-out pass@k every this many steps (and at the start and end)."""
    checkpoint_every: int = 10
    """Write a checkpoint every this many steps (and at the end)."""
    stop_after_steps: Optional[int] = None
    """Stop this invocation, with a checkpoint, after this many steps; `resume=true` continues."""


class CriticInit(Enum):
    policy = "policy"
    """The starting policy's backbone with a new value head."""
    reward_model = "reward_model"
    """The reward model, head included (Ouyang et al. 2022): V starts out reading the reward model's score
    at every prefix. It needs a local reward model that shares the policy's tokenizer."""


class KlPlacement(Enum):
    reward = "reward"
    """-beta * k1 added to each token's reward (the classic RLHF setup)."""
    loss = "loss"
    """beta * k3 added to the loss, as GRPO does."""


@dataclass
class PpoConfig:
    steps: int = 20
    """Policy (and critic) updates."""
    prompts_per_step: int = 32
    """Prompts sampled per step."""
    samples_per_prompt: int = 1
    """Responses per prompt (each its own GAE episode; more of them show the critic the spread of rewards
    one prompt can get)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    reward: RewardTerms = RewardTerms.reward_model
    """What the reward is made of."""
    assert_wrong: Optional[float] = None
    """Share of this stage's training prompts where the user asserts a wrong answer (tasks.train's questions,
    drawn as tasks.train.assert_wrong draws them); None: tasks.train.assert_wrong. The demo asserts in all of
    the prompts of grpo and sycophancy_ppo, the two arms of the sycophancy experiment (Part 4), and in half
    of ppo's."""
    update: PolicyUpdateConfig = field(default_factory=lambda: PolicyUpdateConfig(kl_coef=0.05))
    async_rollout: AsyncRollout = field(default_factory=AsyncRollout)
    episode: Optional[EpisodeConfig] = None
    """Each sample a multi-turn episode with tools; None: one turn."""
    kl_placement: KlPlacement = KlPlacement.reward
    """Where the KL to the reference enters."""
    kl_target: Optional[float] = None
    """Adaptive coefficient (Ziegler et al. 2019): beta moves so that the KL per response tracks this; None: fixed."""
    kl_bound: float = 5.0
    """The KL per response (nats) the run must stay under; reported as met or missed."""
    gamma: float = 1.0
    """Discount of GAE."""
    lam: float = 0.95
    """lambda of GAE."""
    critic_init: CriticInit = CriticInit.policy
    """What the critic starts from."""
    critic_lr: float = 5e-4
    """Peak learning rate of the critic."""
    value_clip: Optional[float] = 0.2
    """Clip range of the value loss around the rollout-time values; None: unclipped."""
    critic_warmup_steps: int = 0
    """Steps at the start that train only the critic."""
    eval_every: int = 10
    """Held-out evaluation every this many steps (and at the start and end)."""
    checkpoint_every: int = 10
    """Write a checkpoint every this many steps (and at the end)."""


class KeepRule(Enum):
    best = "best"
    """The highest-reward response of each prompt (ties: the first)."""
    top_k = "top_k"
    """The top_k highest-reward responses of each prompt."""
    passing = "passing"
    """Every response whose reward reaches min_reward."""


@dataclass
class RsftConfig:
    rounds: int = 2
    """Times the four steps run: sample N -> score -> keep -> SFT on the kept set."""
    prompts_per_round: int = 64
    """Prompts sampled per round."""
    samples_per_prompt: int = 8
    """N."""
    temperature: float = 1.0
    """Sampling temperature."""
    reward: RewardTerms = RewardTerms.verifiers
    """What the reward is made of."""
    keep: KeepRule = KeepRule.best
    """Which responses are kept."""
    async_rollout: AsyncRollout = field(default_factory=AsyncRollout)
    """Rounds sampled ahead: round r's samples may come from the policy of round r - max_staleness (rejection
    sampling needs no correction: the kept responses are SFT targets)."""
    episode: Optional[EpisodeConfig] = None
    """Each sample a multi-turn episode with tools (SFT then learns the model's turns, not the tools' results);
    None: one turn."""
    top_k: int = 2
    """keep=top_k: responses kept per prompt."""
    min_reward: float = 1.0
    """Responses below this reward are never kept (a prompt with none passing adds nothing)."""
    sft_steps: int = 10
    """SFT optimizer steps per round on the kept set (drawn with replacement when it is small)."""
    batch_size: int = 32
    """Sequences per SFT step (a multiple of learner.num_ranks x learner.micro_batch)."""
    lr: float = 2e-4
    """Peak learning rate."""
    warmup_steps: int = 5
    """Linear warm-up of the SFT steps (counted over all rounds): a fresh Adam's first step moves every
    weight by the full lr whatever its gradient, which at the peak lr undoes a just-tuned policy."""


@dataclass
class DpoConfig:
    pairs: list[PairSource] = field(default_factory=lambda: [PairSource()])
    """Offline preference pairs (prompt, chosen, rejected)."""
    held_out_fraction: float = 0.1
    """Share of pairs kept for held-out preference accuracy."""
    beta: float = 0.1
    """beta of the DPO loss (the KL strength it implies)."""
    steps: int = 50
    """Optimizer steps."""
    lr: float = 1e-4
    """Peak learning rate."""
    warmup_steps: int = 5
    """Linear warm-up steps."""
    max_len: int = 256
    """Pairs whose longer side exceeds this many tokens are dropped."""
    eval_every: int = 25
    """Held-out preference accuracy every this many steps (and at the start and end)."""
    checkpoint_every: int = 25
    """Write a checkpoint every this many steps (and at the end)."""


@dataclass
class ReferenceConfig:
    """The frozen reference policy pi_ref (a forward-only actor) that grpo and ppo measure KL against."""
    batch_size: int = 32
    """Sequences per forward pass."""
    cpus: float = 0.5
    """CPUs Ray reserves for it."""
    gpus: float = 0.0
    """GPUs Ray reserves for it."""
