"""The pipeline's stages, in the order they run, and which of them hand on a policy or sample from one."""
from __future__ import annotations

from enum import Enum


class Stage(Enum):
    tokenizer = "tokenizer"
    """Train a byte-level BPE tokenizer on the corpus and pack the corpus into token shards."""
    pretrain = "pretrain"
    """Next-token NLL (eq. 9) on the packed shards."""
    sft = "sft"
    """Next-token NLL on prompt + worked answer, prompt tokens masked."""
    reward_model = "reward_model"
    """Bradley-Terry on preference pairs: the policy's backbone with a scalar head."""
    grpo = "grpo"
    """Group-relative policy optimisation against the reward rubric (RLVR)."""
    rsft = "rsft"
    """Best-of-N sampling, then SFT on the kept responses, for a number of rounds."""
    sycophancy_ppo = "sycophancy_ppo"
    """PPO against the reward model from the policy grpo starts from: the RLHF arm of the sycophancy
    experiment (Part 4), grpo its RLVR arm. Its policy feeds no later stage."""
    ppo = "ppo"
    """PPO with a critic and GAE against the reward model (RLHF)."""
    dpo = "dpo"
    """Direct preference optimisation on offline pairs."""


STAGE_ORDER = [Stage.tokenizer, Stage.pretrain, Stage.sft, Stage.reward_model, Stage.grpo, Stage.sycophancy_ppo,
               Stage.rsft, Stage.ppo, Stage.dpo]
POLICY_STAGES = [Stage.pretrain, Stage.sft, Stage.grpo, Stage.rsft, Stage.ppo, Stage.dpo]
"""Stages whose output is the policy the next one starts from."""
ROLLOUT_STAGES = [Stage.sft, Stage.grpo, Stage.sycophancy_ppo, Stage.rsft, Stage.ppo]
"""Stages that sample from the policy (sft only for its held-out evaluation)."""
