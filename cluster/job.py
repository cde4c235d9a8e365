"""The job config's schema: one dataclass composing each package's own knobs (cluster/config.py loads and
validates it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from cluster.stages import Stage
from data.config import CorpusConfig, TasksConfig, TokenizerConfig
from evals.config import Criterion, EvalConfig
from modeling.config import ModelConfig
from rewards.config import RewardConfig
from rollout.config import RolloutConfig
from rollout.types import Sampling
from trainers.align_config import DpoConfig, GrpoConfig, PpoConfig, ReferenceConfig, RsftConfig, SftConfig
from trainers.config import LearnerConfig, PretrainConfig, RewardModelConfig
from verifiers.config import VerifierPoolConfig


@dataclass
class ClusterConfig:
    address: Optional[str] = None
    """Ray cluster to join ("auto" or host:port); None joins RAY_ADDRESS if set, else starts an embedded local Ray."""
    num_cpus: Optional[int] = None
    """CPUs the embedded local Ray offers (None: all of this machine's)."""
    connect_timeout_s: float = 60.0
    """Give up on joining a cluster, or on placing a role's actors, after this long."""


@dataclass
class JobConfig:
    name: str = "run"
    """Run name: everything the run writes goes to <runs_dir>/<name>/."""
    runs_dir: str = "runs"
    """Folder holding run directories."""
    stages: list[Stage] = field(default_factory=lambda: [Stage.tokenizer, Stage.pretrain])
    """Stages to run, in pipeline order (a subsequence of tokenizer, pretrain, sft, reward_model, grpo,
    sycophancy_ppo, rsft, ppo, dpo); each reads what the previous one wrote."""
    seed: int = 0
    """Seeds data generation, splits, batch order and model initialisation."""
    resume: bool = False
    """Continue the run in <runs_dir>/<name>/ from its latest checkpoint."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
    rsft: RsftConfig = field(default_factory=RsftConfig)
    ppo: PpoConfig = field(default_factory=PpoConfig)
    sycophancy_ppo: PpoConfig = field(default_factory=lambda: PpoConfig(assert_wrong=1.0))
    dpo: DpoConfig = field(default_factory=DpoConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sampling: Sampling = field(default_factory=Sampling)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    verifier_pool: VerifierPoolConfig = field(default_factory=VerifierPoolConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    """What `tether eval` runs."""
    checks: list[Criterion] = field(default_factory=list)
    """What the run claims of its stages' held-out measures; the report marks each met or MISSED (the PPO
    stages' KL bounds are checked too)."""

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def ppo_sections(self) -> dict[Stage, PpoConfig]:
        """The stages that run the PPO loop, each with its own section."""
        return {Stage.sycophancy_ppo: self.sycophancy_ppo, Stage.ppo: self.ppo}
