"""The job config: composes each package's knobs, loads YAML recipes and `key=value` overrides,
and rejects unknown keys, wrong types and impossible combinations before any actor starts."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from cluster.alignment_checks import validate_alignment
from cluster.job import JobConfig
from cluster.stages import ROLLOUT_STAGES, STAGE_ORDER, Stage
from data.config import PairSourceKind
from data.knowledge import KnowledgeConfig, check_knowledge
from data.tokenizer import SPECIAL_TOKENS
from rollout.config import EngineKind
from trainers.config import Regulariser
from verifiers.registry import bind


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


def to_yaml(job: JobConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(job))
