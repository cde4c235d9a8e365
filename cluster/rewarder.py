"""The reward roles a stage uses, behind one call: the verifier pool and the reward model, combined by
the rubric R(x, y) = sum_k w_k s_k(x, y) (rewards.rubric).

    rewarder = Rewarder(job.rewards, job.verifier_pool, rm_dir, tokenizer)
    scored = rewarder.score(tasks, rollouts, RewardTerms.verifiers)    # one Scored per rollout

`terms` says which parts make up the reward. The verifiers always run when configured (their pass rates are
logged whatever a stage trains on); the reward model runs only when `terms` uses it, since it is a forward
pass per step. Evaluation asks for `rewarder.all_terms` to report both."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from cluster.verifier_pool import VerifierPool
from data.tasks import Task
from modeling.config import Precision
from rewards.config import RewardConfig
from rewards.rubric import RewardBreakdown, pass_rates, rubric_rewards
from rollout.types import Rollout
from trainers.align_config import RewardTerms
from verifiers.config import VerifierPoolConfig


@dataclass
class Scored:
    """Rewards of a batch of rollouts. N rollouts."""
    rewards: np.ndarray               # [N] R(x, y) of the stage's terms
    passed: np.ndarray                # [N] bool: every applicable verifier passed (False without verifiers)
    model_scores: Optional[np.ndarray]  # [N] the reward model's score, or None when the terms leave it out
    breakdowns: list[RewardBreakdown]   # per rollout, per verifier (and reward model last)
    pass_rates: dict[str, float]        # per verifier: pass rate and not-applicable share


class Rewarder:
    def __init__(self, rewards: RewardConfig, pool_cfg: VerifierPoolConfig, rm_dir: Optional[str], tokenizer,
                 timeout_s: float = 600.0, precision: Precision = Precision.fp32):
        """rm_dir: a local reward model to serve (None: rewards.reward_model.http if set, else no reward model);
        precision: the learners', at which the local reward model computes."""
        from cluster.scorers import RewardModelActor
        from rewards.model_worker import HttpRewardModel
        self.cfg, self.tokenizer = rewards, tokenizer
        self.pool = VerifierPool(rewards.verifiers, pool_cfg) if rewards.verifiers else None
        spec = rewards.reward_model
        self.local_rm = RewardModelActor(rm_dir, spec, precision, timeout_s) if rm_dir is not None else None
        self.http_rm = HttpRewardModel(spec.http) if rm_dir is None and spec is not None and spec.http else None
        self.labels = [v.label for v in rewards.verifiers]

    @property
    def has_reward_model(self) -> bool:
        return self.local_rm is not None or self.http_rm is not None

    @property
    def all_terms(self) -> RewardTerms:
        """Every part this rewarder has."""
        if self.pool is not None and self.has_reward_model:
            return RewardTerms.both
        return RewardTerms.verifiers if self.pool is not None else RewardTerms.reward_model

    def score(self, tasks: list[Task], rollouts: list[Rollout], terms: RewardTerms) -> Scored:
        """tasks[i] is the task rollouts[i] answers. Verifiers read the model's final turn (an episode's tool
        results are not its answer); the reward model reads the whole response."""
        use_verifiers = terms in (RewardTerms.verifiers, RewardTerms.both)
        use_model = terms in (RewardTerms.reward_model, RewardTerms.both)
        if use_verifiers and self.pool is None:
            raise ValueError("the reward uses verifiers, but rewards.verifiers is empty")
        if use_model and not self.has_reward_model:
            raise ValueError("the reward uses a reward model, but none is configured (rewards.reward_model)")
        texts = [self.tokenizer.decode(r.final_turn(), skip_special_tokens=True) for r in rollouts]
        verdicts = self.pool.verify([t.sample for t in tasks], texts) if self.pool else [[] for _ in rollouts]
        model_scores = self._model_scores(rollouts, texts) if use_model else None
        weights = [v.weight if use_verifiers else 0.0 for v in self.cfg.verifiers]
        model_weight = self.cfg.reward_model.weight if use_model else 0.0
        breakdowns = rubric_rewards(weights, verdicts, None if model_scores is None else list(model_scores), model_weight)
        passed = np.array([bool(row) and all(v.passed for v in row if v.applicable) for row in verdicts])
        return Scored(np.array([b.total for b in breakdowns], np.float32), passed, model_scores, breakdowns,
                      pass_rates(breakdowns, self.labels))

    def _model_scores(self, rollouts: list[Rollout], texts: list[str]) -> Optional[np.ndarray]:
        if self.local_rm is not None:
            return np.array(self.local_rm.score([r.prompt_ids for r in rollouts],
                                                [r.response_ids for r in rollouts]), np.float32)
        if self.http_rm is not None:
            prompts = [self.tokenizer.decode(r.prompt_ids, skip_special_tokens=True) for r in rollouts]
            return np.array(self.http_rm.score(prompts, texts), np.float32)
        return None

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        if self.local_rm is not None:
            self.local_rm.shutdown()
