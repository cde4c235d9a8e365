"""Knobs owned by the trainers package: the learner group, pretraining, the reward model.

Each dataclass is an OmegaConf structured config: the docstring under a field is its documentation,
and `cluster.config.load_job_config` rejects keys that are not declared here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from data.config import PairSource
from modeling.config import Precision


class Optimizer(Enum):
    adamw = "adamw"
    """torch.optim.AdamW."""
    sgd = "sgd"
    """Plain SGD (no momentum): used by invariance tests, where Adam's first steps amplify rounding."""


class Regulariser(Enum):
    l2 = "l2"
    """Omega = ||v - theta^(k)||^2 over the adapter's own weights (A and B)."""
    ewc = "ewc"
    """Elastic weight consolidation: Omega = sum_i F_i (Delta W_i)^2 over the adapted weights of the merged model,
    F the diagonal Fisher information of the stage's starting model on the old corpus (pretrain.retained's
    training split), normalised to mean 1 so that lambda keeps one scale across models."""


@dataclass
class LoraConfig:
    rank: int = 16
    """r: the adapter's inner dimension."""
    alpha: float = 32.0
    """The update is (alpha / r) B A."""
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Linear layers (by name) that get an adapter; everything else is frozen."""
    omega: float = 0.0
    """lambda of eq. (12): weight of the regulariser Omega, the adapter's distance to its value when the stage started."""
    regulariser: Regulariser = Regulariser.l2
    """Which Omega: plain L2 on the adapter, or EWC (Fisher-weighted; pretrain stages with pretrain.retained)."""
    fisher_batches: int = 4
    """EWC: old-corpus batches (of micro_batch x num_ranks sequences) that estimate the Fisher information."""

    def __post_init__(self):
        if self.rank < 1 or self.alpha <= 0 or self.omega < 0 or self.fisher_batches < 1:
            raise ValueError(f"lora: rank >= 1, alpha > 0, omega >= 0 and fisher_batches >= 1 required, got "
                             f"rank={self.rank}, alpha={self.alpha}, omega={self.omega}, "
                             f"fisher_batches={self.fisher_batches}")
        if not self.targets:
            raise ValueError("lora.targets is empty")


@dataclass
class LearnerConfig:
    num_ranks: int = 1
    """Data-parallel learner ranks, one Ray actor each."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage: 0 (plain data parallel), 1, 2 or 3."""
    precision: Precision = Precision.auto
    """Compute precision (auto is resolved on each rank's own device)."""
    micro_batch: int = 16
    """Sequences per rank per forward/backward."""
    grad_accum: int = 1
    """Micro-batches per rank accumulated before each optimizer step."""
    optimizer: Optimizer = Optimizer.adamw
    """The client optimizer handed to DeepSpeed."""
    lr: float = 3e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """The cosine decays to lr * min_lr_ratio."""
    warmup_steps: int = 20
    """Linear warm-up steps before the cosine decay."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay (not applied to norms or biases)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW betas."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    cpus_per_rank: float = 1.0
    """CPUs Ray reserves per learner actor (fractions allowed)."""
    gpus_per_rank: float = 0.0
    """GPUs Ray reserves per learner actor; > 0 selects NCCL and CUDA."""
    threads_per_rank: int = 1
    """torch intra-op threads per rank (OMP_NUM_THREADS)."""
    timeout_s: float = 600.0
    """Upper bound on any one call to the learner group, and on process-group set-up."""
    compile: bool = False
    """torch.compile each transformer block in place (ZeRO 0-2): on a GPU it fuses the elementwise work between
    the matmuls (docs/benchmarks.md); the first steps pay the compilation, and each new sequence length may
    recompile, so it pays most on fixed-shape pretraining. Parameter names and checkpoints are unchanged."""
    lora: Optional[LoraConfig] = None
    """Train LoRA adapters on a frozen backbone instead of every weight (ZeRO 0-2). Checkpoints hold the
    merged model (what the next stage and the rollout workers load) and the adapter beside it."""


@dataclass
class PretrainConfig:
    steps: int = 300
    """Optimizer steps; the LR schedule spans exactly these."""
    seq_len: int = 256
    """Tokens per packed training sequence (at most model.max_seq_len)."""
    eval_every: int = 50
    """Held-out loss and bits per byte every this many steps (and at the end)."""
    eval_batches: int = 8
    """Held-out batches (of micro_batch x num_ranks sequences) per evaluation."""
    checkpoint_every: int = 100
    """Write a checkpoint every this many steps (and at the end)."""
    stop_after_steps: Optional[int] = None
    """Stop this invocation, with a checkpoint, after this many steps (for time-sliced clusters); `resume=true` continues."""
    retained: Optional[str] = None
    """Another run's data folder, tokenised with the same tokenizer: its held-out split is evaluated beside this
    run's as retained/loss, the forgetting that continual learning (eq. 12) keeps small."""


@dataclass
class RewardModelConfig:
    pairs: list[PairSource] = field(default_factory=lambda: [PairSource()])
    """Preference pairs (prompt, chosen, rejected) to train on, mixed in order."""
    held_out_fraction: float = 0.1
    """Share of pairs kept out of training for held-out pair accuracy."""
    steps: int = 150
    """Optimizer steps (each of learner.micro_batch x grad_accum x num_ranks pairs)."""
    lr: float = 3e-4
    """Peak learning rate (the learner group's other optimizer settings apply)."""
    warmup_steps: int = 10
    """Linear warm-up steps."""
    max_len: int = 256
    """Pairs whose longer side exceeds this many tokens are dropped (and counted in the log)."""
    use_margins: bool = False
    """Use each pair's margin (a pairs file may give one) in the Bradley-Terry loss."""
    eval_every: int = 50
    """Held-out pair accuracy every this many steps (and at the end)."""
    checkpoint_every: int = 100
    """Write a checkpoint every this many steps (and at the end)."""
