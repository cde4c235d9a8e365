"""The job config: composes each package's knobs, loads YAML recipes and `key=value` overrides,
and rejects unknown keys, wrong types and impossible combinations before any actor starts."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from rewards.config import RewardConfig
from rollout.config import EngineKind, RolloutConfig
from rollout.types import Sampling
from trainers.config import (CorpusConfig, LearnerConfig, ModelConfig, PairSourceKind, PretrainConfig,
                             RewardModelConfig, TokenizerConfig)
from trainers.tokenizer import SPECIAL_TOKENS
from verifiers.config import VerifierPoolConfig
from verifiers.registry import bind


class Stage(Enum):
    tokenizer = "tokenizer"
    """Train a byte-level BPE tokenizer on the corpus and pack the corpus into token shards."""
    pretrain = "pretrain"
    """Next-token NLL (eq. 9) on the packed shards."""
    reward_model = "reward_model"
    """Bradley-Terry on preference pairs: the policy's backbone with a scalar head."""


STAGE_ORDER = [Stage.tokenizer, Stage.pretrain, Stage.reward_model]


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
    stages: list[Stage] = field(default_factory=lambda: list(STAGE_ORDER))
    """Stages to run, in pipeline order; each reads what the previous one wrote."""
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
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sampling: Sampling = field(default_factory=Sampling)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    verifier_pool: VerifierPoolConfig = field(default_factory=VerifierPoolConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and what is allowed."""


def load_job_config(path: str | Path | None, overrides: list[str] = ()) -> JobConfig:
    """YAML recipe + `key=value` overrides -> a validated JobConfig object."""
    schema = OmegaConf.structured(JobConfig)
    try:
        layers = [schema]
        if path is not None:
            if not Path(path).is_file():
                raise ConfigError(f"config file {path} does not exist")
            layers.append(OmegaConf.load(path))
        for item in overrides:
            key = item.split("=", 1)[0]
            if "=" not in item or any(part.isdigit() for part in key.split(".")):
                raise ConfigError(f"override '{item}': write key=value with a dotted key; a list is set whole "
                                  f"(e.g. corpus.sources=[{{kind: shakespeare}}])")
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*layers)
        job: JobConfig = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_explain(e)) from None
    except ValueError as e:  # Sampling is the one record that checks itself (__post_init__)
        raise ConfigError(f"sampling.{e}") from None
    validate(job)
    return job


def _explain(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None) or getattr(e, "key", None) or "?"
    where = f" (in {e.object_type.__name__})" if dataclasses.is_dataclass(getattr(e, "object_type", None)) else ""
    if isinstance(e, ConfigKeyError) and where:
        allowed = ", ".join(f.name for f in dataclasses.fields(e.object_type))
        return f"unknown config key '{key}'{where}; allowed: {allowed}"
    return f"config key '{key}'{where}: {str(e).splitlines()[0]}"


def validate(job: JobConfig) -> None:
    """Combinations the types alone cannot rule out."""
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    need(bool(job.stages), "stages: list at least one of " + ", ".join(s.value for s in STAGE_ORDER))
    order = [STAGE_ORDER.index(s) for s in job.stages]
    need(order == sorted(set(order)), "stages: must be distinct and in pipeline order "
         + " -> ".join(s.value for s in STAGE_ORDER))
    need(job.name and "/" not in job.name and job.name not in (".", ".."), f"name: '{job.name}' is not a folder name")
    min_vocab = 256 + len(SPECIAL_TOKENS) + 1
    need(job.tokenizer.vocab_size >= min_vocab,
         f"tokenizer.vocab_size={job.tokenizer.vocab_size}: needs at least {min_vocab} "
         f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens + 1 merge)")
    need(0.0 < job.corpus.held_out_fraction < 0.5, "corpus.held_out_fraction: must be in (0, 0.5)")
    need(job.corpus.shard_tokens > 0, "corpus.shard_tokens: must be > 0")
    m, lr, p = job.model, job.learner, job.pretrain
    need(m.hidden_size % m.num_heads == 0, f"model.hidden_size={m.hidden_size} must be divisible by model.num_heads={m.num_heads}")
    need(m.num_heads % m.num_kv_heads == 0, f"model.num_heads={m.num_heads} must be a multiple of model.num_kv_heads={m.num_kv_heads}")
    need(lr.zero_stage in (0, 1, 2, 3), f"learner.zero_stage={lr.zero_stage}: allowed 0, 1, 2, 3")
    need(lr.num_ranks >= 1, "learner.num_ranks: must be >= 1")
    need(lr.micro_batch >= 1 and lr.grad_accum >= 1, "learner.micro_batch and learner.grad_accum: must be >= 1")
    need(lr.lr > 0, "learner.lr: must be > 0")
    need(0.0 <= lr.min_lr_ratio <= 1.0, "learner.min_lr_ratio: must be in [0, 1]")
    need(len(lr.betas) == 2 and all(0 <= b < 1 for b in lr.betas), "learner.betas: two values in [0, 1)")
    need(lr.grad_clip >= 0, "learner.grad_clip: must be >= 0 (0 disables)")
    need(lr.cpus_per_rank >= 0 and lr.gpus_per_rank >= 0, "learner.cpus_per_rank/gpus_per_rank: must be >= 0")
    need(lr.timeout_s > 0, "learner.timeout_s: must be > 0")
    need(p.steps >= 1, "pretrain.steps: must be >= 1")
    need(2 <= p.seq_len <= m.max_seq_len or m.path is not None,
         f"pretrain.seq_len={p.seq_len}: must be in [2, model.max_seq_len={m.max_seq_len}]")
    need(p.eval_every >= 1 and p.checkpoint_every >= 1 and p.eval_batches >= 1,
         "pretrain.eval_every, checkpoint_every, eval_batches: must be >= 1")
    need(p.stop_after_steps is None or p.stop_after_steps >= 1, "pretrain.stop_after_steps: must be >= 1 or null")
    need(lr.warmup_steps < p.steps, f"learner.warmup_steps={lr.warmup_steps} must be below pretrain.steps={p.steps}")
    ro = job.rollout
    need(ro.num_workers >= 1, "rollout.num_workers: must be >= 1")
    need(ro.dtype in ("float32", "bfloat16"), f"rollout.dtype={ro.dtype}: allowed float32, bfloat16")
    need(ro.tensor_parallel_size == 1 or ro.gpus_per_worker >= ro.tensor_parallel_size,
         f"rollout.tensor_parallel_size={ro.tensor_parallel_size} needs rollout.gpus_per_worker >= it")
    need(ro.kv_cache_gib > 0 and ro.timeout_s > 0 and ro.sync_bucket_mb > 0,
         "rollout.kv_cache_gib, timeout_s, sync_bucket_mb: must be > 0")
    if ro.colocate:
        need(ro.engine == EngineKind.vllm, "rollout.colocate: needs rollout.engine=vllm (vLLM's sleep mode)")
        need(ro.gpus_per_worker > 0 and lr.gpus_per_rank > 0 and ro.gpus_per_worker + lr.gpus_per_rank <= 1,
             "rollout.colocate: needs GPUs, a share of one per learner rank and worker "
             f"(rollout.gpus_per_worker={ro.gpus_per_worker} + learner.gpus_per_rank={lr.gpus_per_rank} must be in (0, 1])")
        need(ro.num_workers <= lr.num_ranks and ro.tensor_parallel_size == 1,
             f"rollout.colocate: one worker (tensor_parallel_size 1) per learner rank at most; "
             f"rollout.num_workers={ro.num_workers}, learner.num_ranks={lr.num_ranks}")
    rm = job.reward_model
    need(rm.steps >= 1 and rm.eval_every >= 1 and rm.checkpoint_every >= 1 and rm.max_len >= 8,
         "reward_model.steps, eval_every, checkpoint_every: must be >= 1; max_len >= 8")
    need(0.0 < rm.held_out_fraction < 0.5, "reward_model.held_out_fraction: must be in (0, 0.5)")
    need(rm.warmup_steps < rm.steps and rm.lr > 0, "reward_model: needs warmup_steps < steps and lr > 0")
    need(bool(rm.pairs), "reward_model.pairs: list at least one source")
    for i, src in enumerate(rm.pairs):
        need(bool(src.name), f"reward_model.pairs.{i}.name: required")
        need(src.kind != PairSourceKind.generated or (src.count >= 2 and bool(src.corruptions)),
             f"reward_model.pairs.{i}: a generated source needs count >= 2 and at least one corruption kind")
    pool = job.verifier_pool
    need(pool.num_workers >= 1 and pool.concurrency >= 1 and pool.batch_size >= 1 and pool.max_retries >= 0,
         "verifier_pool.num_workers, concurrency, batch_size: must be >= 1; max_retries >= 0")
    need(pool.call_timeout_s > 0 and pool.cpus_per_worker > 0, "verifier_pool.call_timeout_s, cpus_per_worker: must be > 0")
    for i, v in enumerate(job.rewards.verifiers):
        try:
            bind(v)
        except (LookupError, ValueError) as e:
            raise ConfigError(f"rewards.verifiers.{i}: {e}") from None
    rmodel = job.rewards.reward_model
    if rmodel is not None:
        need(bool(rmodel.path) + rmodel.from_stage + (rmodel.http is not None) == 1,
             "rewards.reward_model: set exactly one of path, from_stage: true, http")
        need(rmodel.http is None or rmodel.http.url.startswith(("http://", "https://")),
             "rewards.reward_model.http.url: must start with http:// or https://")
    for i, s in enumerate(job.corpus.sources):
        need(s.kind.value in ("shakespeare",) or bool(s.name), f"corpus.sources.{i}.name: required for kind {s.kind.value}")
        need(s.count >= 0, f"corpus.sources.{i}.count: must be >= 0")


def to_yaml(job: JobConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(job))
