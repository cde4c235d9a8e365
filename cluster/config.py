"""The job config: composes each package's knobs, loads YAML recipes and `key=value` overrides,
and rejects unknown keys, wrong types and impossible combinations before any actor starts."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from data.config import CorpusConfig, PairSourceKind, TaskKind, TasksConfig, TokenizerConfig
from data.knowledge import KnowledgeConfig, check_knowledge
from data.tokenizer import SPECIAL_TOKENS
from evals.config import Criterion, EvalConfig
from modeling.config import ModelConfig
from rewards.config import RewardConfig
from rollout.config import EngineKind, RolloutConfig
from rollout.types import Sampling
from tools.config import EpisodeConfig
from tools.demonstrations import demonstration_fits
from tools.environment import check_episode
from trainers.align_config import (
    CriticInit,
    DpoConfig,
    GrpoConfig,
    PpoConfig,
    ReferenceConfig,
    RewardTerms,
    RsftConfig,
    SftConfig,
)
from trainers.config import LearnerConfig, PretrainConfig, Regulariser, RewardModelConfig
from verifiers.config import VerifierPoolConfig
from verifiers.registry import bind


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


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and what is allowed."""


def load_job_config(path: str | Path | None, overrides: list[str] = ()) -> JobConfig:
    """YAML recipe + `key=value` overrides -> a validated JobConfig object."""
    schema = OmegaConf.structured(JobConfig)
    layers = [schema]
    if path is not None:
        layers.append(_read_yaml(Path(path)))
    try:
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


def _read_yaml(path: Path):
    """The recipe's YAML, or a ConfigError naming the file (and the line of a syntax error)."""
    if not path.exists():
        raise ConfigError(f"config {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config {path} is not a file")
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"config {path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path}: not UTF-8 text") from None
    except OSError as e:            # OmegaConf raises one for a YAML scalar, without an errno
        raise ConfigError(f"config {path}: cannot read it ({e.strerror or e})") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"config {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config {path}: the top level must be a mapping of sections, not a list")
    return loaded


def check_paths(job: JobConfig) -> None:
    """The local files and folders the job reads exist (a run checks them before Ray starts; `tether plan`
    does not, since a cluster's paths need not exist where it plans)."""
    def exists(key: str, path: str | None, folder: bool) -> None:
        if path is None:
            return
        where = Path(path)
        if not where.exists():
            raise ConfigError(f"{key}={path}: no such {'folder' if folder else 'file'}")
        if folder != where.is_dir():
            raise ConfigError(f"{key}={path}: is {'not ' if folder else ''}a folder; a {'folder' if folder else 'file'}"
                              f" is expected")

    exists("model.path", job.model.path, True)
    if job.model.path is not None and not (Path(job.model.path) / "config.json").is_file():
        raise ConfigError(f"model.path={job.model.path}: not an HF model folder (no config.json)")
    exists("pretrain.retained", job.pretrain.retained, True)
    spec = job.rewards.reward_model
    if spec is not None:
        exists("rewards.reward_model.path", spec.path, True)
    for i, source in enumerate(job.corpus.sources):
        if source.kind.value == "file":
            exists(f"corpus.sources.{i}.name", source.name, False)
    for section, source in (("tasks.train", job.tasks.train), ("tasks.held_out", job.tasks.held_out)):
        if source.kind.value == "file":
            exists(f"{section}.name", source.name, False)
    for section, pairs in (("reward_model.pairs", job.reward_model.pairs), ("dpo.pairs", job.dpo.pairs)):
        for i, source in enumerate(pairs):
            if source.kind.value == "file":
                exists(f"{section}.{i}.name", source.name, False)


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
    for i, c in enumerate(job.checks):
        need(c.stage in {s.value for s in STAGE_ORDER}, f"checks[{i}].stage='{c.stage}': not a stage (allowed: "
             + ", ".join(s.value for s in STAGE_ORDER) + ")")
        need(bool(c.bounds()), f"checks[{i}] ({c.stage} {c.measure}): set at least one of change_at_least, "
                               f"change_at_most, end_at_least, end_at_most")
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
    need(not lr.compile or lr.zero_stage <= 2, "learner.compile: needs learner.zero_stage 0, 1 or 2 (ZeRO-3 gathers "
                                               "parameters inside the blocks it would compile)")
    need(p.steps >= 1, "pretrain.steps: must be >= 1")
    need(2 <= p.seq_len <= m.max_seq_len or m.path is not None,
         f"pretrain.seq_len={p.seq_len}: must be in [2, model.max_seq_len={m.max_seq_len}]")
    need(p.eval_every >= 1 and p.checkpoint_every >= 1 and p.eval_batches >= 1,
         "pretrain.eval_every, checkpoint_every, eval_batches: must be >= 1")
    need(p.stop_after_steps is None or p.stop_after_steps >= 1, "pretrain.stop_after_steps: must be >= 1 or null")
    need(lr.warmup_steps < p.steps, f"learner.warmup_steps={lr.warmup_steps} must be below pretrain.steps={p.steps}")
    ro = job.rollout
    need(ro.num_workers >= 1, "rollout.num_workers: must be >= 1")
    need(ro.threads_per_worker is None or ro.threads_per_worker >= 1, "rollout.threads_per_worker: must be >= 1 or null")
    need(ro.dtype in ("float32", "bfloat16"), f"rollout.dtype={ro.dtype}: allowed float32, bfloat16")
    need(ro.tensor_parallel_size == 1 or ro.gpus_per_worker >= ro.tensor_parallel_size,
         f"rollout.tensor_parallel_size={ro.tensor_parallel_size} needs rollout.gpus_per_worker >= it")
    syncing = [s.value for s in job.stages if s in ROLLOUT_STAGES]
    need(ro.tensor_parallel_size == 1 or not syncing,
         f"rollout.tensor_parallel_size={ro.tensor_parallel_size}: weight sync into a tensor-parallel engine is not "
         f"supported (each of its ranks would need its own place in the sync); stages {', '.join(syncing)} sync")
    need(ro.kv_cache_gib > 0 and ro.timeout_s > 0 and ro.sync_bucket_mb > 0 and ro.reference_batch_size > 0,
         "rollout.kv_cache_gib, timeout_s, sync_bucket_mb, reference_batch_size: must be > 0")
    if ro.colocate:
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
    validate_alignment(job, need)
    if job.eval.in_stages:
        labels = [v.label for v in job.rewards.verifiers]
        for suite in job.eval.suites:
            wanted = "facts" if suite.value == "facts" else "math"
            need(wanted in labels, f"eval.in_stages: the {suite.value} suite needs the '{wanted}' verifier in "
                                   f"rewards.verifiers (weight 0 keeps it out of the reward)")
    if ro.lora_rank:
        need(ro.lora_rank in (1, 8, 16, 32, 64, 128, 256, 320, 512),
             f"rollout.lora_rank={ro.lora_rank}: vLLM serves ranks 1, 8, 16, 32, 64, 128, 256, 320, 512")
        need(ro.engine == EngineKind.vllm, "rollout.lora_rank: needs rollout.engine=vllm")
        need(job.learner.lora is not None and job.learner.lora.rank <= ro.lora_rank,
             "rollout.lora_rank: an adapter-only sync needs learner.lora with rank <= rollout.lora_rank")
    if job.learner.lora is not None:
        need(job.learner.zero_stage <= 2, "learner.lora: needs learner.zero_stage 0, 1 or 2 (adapters are merged "
                                          "from whole weights; ZeRO-3 shards them)")
        with_heads = [s.value for s in job.stages if s == Stage.reward_model or s in job.ppo_sections]
        need(not with_heads, f"learner.lora: not for stages with a scalar head ({', '.join(with_heads)}): the "
                             "reward model's and the critic's heads would stay frozen")
        if job.learner.lora.regulariser == Regulariser.ewc:
            others = [s.value for s in job.stages if s not in (Stage.tokenizer, Stage.pretrain)]
            need(not others and bool(job.pretrain.retained),
                 "learner.lora.regulariser=ewc: the Fisher information comes from the old corpus of pretrain.retained, "
                 f"so it needs pretrain.retained set and no stage but tokenizer and pretrain (here also: {others})")
    for i, s in enumerate(job.corpus.sources):
        need(s.kind.value in ("shakespeare", "knowledge") or bool(s.name), f"corpus.sources.{i}.name: required for kind {s.kind.value}")
        if s.kind.value == "knowledge":
            try:
                check_knowledge(KnowledgeConfig(**s.options))
            except (TypeError, ValueError) as e:
                need(False, f"corpus.sources.{i}.options: {e}")
        need(s.count >= 0, f"corpus.sources.{i}.count: must be >= 0")


def validate_alignment(job: JobConfig, need) -> None:
    """The tasks and the sft, grpo, rsft, ppo and dpo stages."""
    t = job.tasks
    need(t.eval_samples >= 1 and 1 <= t.eval_k <= t.eval_samples, "tasks.eval_k: must be in [1, tasks.eval_samples]")
    need(t.max_new_tokens >= 1 and t.max_prompt_tokens >= 2, "tasks.max_new_tokens >= 1 and tasks.max_prompt_tokens >= 2")
    need(0 <= t.min_new_tokens <= t.max_new_tokens, "tasks.min_new_tokens: must be in [0, tasks.max_new_tokens]")
    need(not t.rag.enabled or t.rag.corpus is not None, "tasks.rag: training prompts retrieve from tasks.rag.corpus; set it")
    need(t.rag.top_k >= 1 and t.rag.chunk_words >= 1, "tasks.rag.top_k and chunk_words: must be >= 1")
    for key, source in (("train", t.train), ("held_out", t.held_out)):
        need(0.0 <= source.assert_wrong <= 1.0, f"tasks.{key}.assert_wrong: must be in [0, 1]")
    shares = {Stage.sft: job.sft.assert_wrong, Stage.grpo: job.grpo.assert_wrong,
              **{s: p.assert_wrong for s, p in job.ppo_sections.items()}}
    for stage, share in shares.items():
        need(share is None or 0.0 <= share <= 1.0, f"{stage.value}.assert_wrong: must be in [0, 1]")
        need(share is None or stage not in job.stages or t.train.kind == TaskKind.generated,
             f"{stage.value}.assert_wrong: only generated tasks (tasks.train.kind: generated) can carry a wrong assertion")
    for key, src in (("train", t.train), ("held_out", t.held_out)):
        need(src.count >= 1 or src.kind != TaskKind.generated, f"tasks.{key}.count: must be >= 1 for generated tasks")
        need(bool(src.name), f"tasks.{key}.name: required")
    per_pass = job.learner.num_ranks * job.learner.micro_batch

    def rows(key: str, value: int) -> None:
        need(value >= 1 and value % per_pass == 0,
             f"{key}={value}: must be a multiple of learner.num_ranks x learner.micro_batch = {per_pass}")

    def update(key: str, u) -> None:
        rows(f"{key}.minibatch_size", u.minibatch_size)
        need(u.lr > 0 and u.warmup_steps >= 0 and u.ppo_epochs >= 1, f"{key}: needs lr > 0, warmup_steps >= 0, ppo_epochs >= 1")
        need(0 <= u.clip_low < 1 and u.clip_high >= 0, f"{key}.clip_low must be in [0, 1) and clip_high >= 0")
        need(u.dual_clip is None or u.dual_clip > 1, f"{key}.dual_clip: must be > 1 or null")
        need(u.kl_coef >= 0, f"{key}.kl_coef: must be >= 0")
        need(u.tis_cap is None or u.tis_cap > 0, f"{key}.tis_cap: must be > 0 or null")
        lr_floor(f"{key}.min_lr_ratio", u.min_lr_ratio)

    def episode(key: str, e: Optional[EpisodeConfig]) -> None:
        try:
            if e is not None:
                check_episode(e, job.model.max_seq_len, job.rollout.lora_rank)
        except (LookupError, ValueError) as error:
            raise ConfigError(f"{key}.episode: {error}") from None

    def async_rollout(key: str, a) -> None:
        need(a.max_staleness >= 0, f"{key}.async_rollout.max_staleness: must be >= 0 (0: synchronous)")
        need(a.max_staleness == 0 or not job.rollout.colocate,
             f"{key}.async_rollout.max_staleness={a.max_staleness}: rollout.colocate gives each worker's GPU to "
             "the learners while they train, so nothing can sample then; set max_staleness 0 or colocate false")

    def lr_floor(key: str, ratio: Optional[float]) -> None:
        need(ratio is None or 0.0 <= ratio <= 1.0, f"{key}: must be in [0, 1]")

    def rewards_for(key: str, terms: RewardTerms) -> None:
        need(terms == RewardTerms.reward_model or bool(job.rewards.verifiers),
             f"{key}.reward={terms.value} needs rewards.verifiers")
        need(terms == RewardTerms.verifiers or job.rewards.reward_model is not None,
             f"{key}.reward={terms.value} needs rewards.reward_model")

    stages = set(job.stages)
    if Stage.sft in stages:
        rows("sft.batch_size", job.sft.batch_size)
        need(job.sft.steps >= 1 and job.sft.warmup_steps < job.sft.steps and job.sft.lr > 0,
             "sft: needs steps >= 1, warmup_steps < steps, lr > 0")
        lr_floor("sft.min_lr_ratio", job.sft.min_lr_ratio)
        episode("sft", job.sft.episode)
        if job.sft.demonstrate is not None:
            need(*demonstration_fits("sft", job.sft.demonstrate, job.sft.episode))
    if Stage.grpo in stages:
        g = job.grpo
        update("grpo.update", g.update)
        async_rollout("grpo", g.async_rollout)
        episode("grpo", g.episode)
        need(g.steps >= 1 and g.prompts_per_step >= 1 and g.group_size >= 2,
             "grpo: needs steps >= 1, prompts_per_step >= 1, group_size >= 2")
        need(g.stop_after_steps is None or g.stop_after_steps >= 1, "grpo.stop_after_steps: must be >= 1 or null")
        rewards_for("grpo", g.reward)
    if Stage.rsft in stages:
        r = job.rsft
        rows("rsft.batch_size", r.batch_size)
        async_rollout("rsft", r.async_rollout)
        episode("rsft", r.episode)
        need(r.rounds >= 1 and r.prompts_per_round >= 1 and r.samples_per_prompt >= 1 and r.sft_steps >= 1 and r.top_k >= 1,
             "rsft: rounds, prompts_per_round, samples_per_prompt, sft_steps, top_k: must be >= 1")
        need(0 <= r.warmup_steps < r.rounds * r.sft_steps and r.lr > 0,
             f"rsft: needs lr > 0 and 0 <= warmup_steps < rounds x sft_steps = {r.rounds * r.sft_steps}")
        rewards_for("rsft", r.reward)
    for stage, p in job.ppo_sections.items():
        if stage not in stages:
            continue
        key = stage.value
        update(f"{key}.update", p.update)
        async_rollout(key, p.async_rollout)
        episode(key, p.episode)
        need(p.steps >= 1 and p.prompts_per_step >= 1 and p.samples_per_prompt >= 1,
             f"{key}: needs steps, prompts_per_step and samples_per_prompt >= 1")
        need(0 < p.gamma <= 1 and 0 <= p.lam <= 1, f"{key}: gamma must be in (0, 1] and lam in [0, 1]")
        need(p.kl_target is None or p.kl_target > 0, f"{key}.kl_target: must be > 0 or null")
        need(p.kl_bound > 0 and p.critic_lr > 0, f"{key}: kl_bound and critic_lr must be > 0")
        rm = job.rewards.reward_model
        need(p.critic_init != CriticInit.reward_model or (rm is not None and rm.http is None),
             f"{key}.critic_init=reward_model needs a local reward model (rewards.reward_model with from_stage or path)")
        need(p.value_clip is None or p.value_clip > 0, f"{key}.value_clip: must be > 0 or null")
        rewards_for(key, p.reward)
    if Stage.dpo in stages:
        d = job.dpo
        need(d.beta > 0 and d.steps >= 1 and d.lr > 0 and d.warmup_steps < d.steps,
             "dpo: needs beta > 0, steps >= 1, lr > 0, warmup_steps < steps")
        need(0.0 < d.held_out_fraction < 0.5 and bool(d.pairs), "dpo: needs pairs and held_out_fraction in (0, 0.5)")


def to_yaml(job: JobConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(job))
