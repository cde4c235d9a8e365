"""The pipeline runner: the one place that knows the order of stages. Each stage reads what the
previous one wrote under runs/<name>/ and writes its own output there."""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.config import POLICY_STAGES, STAGE_ORDER, ConfigError, JobConfig, Stage, load_job_config, to_yaml
from cluster.plan import check_plan, plan_roles


@dataclass
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def stage(self, stage: Stage) -> Path:
        return self.root / stage.value


class RunDirError(RuntimeError):
    """The run directory cannot be used for this run."""


def _identity(job: JobConfig) -> str:
    """The parts of a config that define a run (how it is executed may change between invocations, and the
    folder holding it may move)."""
    same = dataclasses.replace(job, resume=False, runs_dir="", cluster=dataclasses.replace(job.cluster, address=None),
                               pretrain=dataclasses.replace(job.pretrain, stop_after_steps=None),
                               grpo=dataclasses.replace(job.grpo, stop_after_steps=None),
                               learner=dataclasses.replace(job.learner, timeout_s=0.0))
    return to_yaml(same)


def check_run_dir(job: JobConfig) -> RunPaths:
    """Fail unless the run directory is new, or holds this same run (which resume=true continues)."""
    paths = RunPaths(job.run_dir)
    if paths.config.is_file():
        try:
            previous = load_job_config(paths.config)
        except ConfigError:
            previous = None
        if previous is None or _identity(previous) != _identity(job):
            raise RunDirError(f"{paths.root} already holds a different run (see its config.yaml); "
                              f"choose another name=... or delete the folder")
    elif job.resume:
        raise RunDirError(f"resume=true, but {paths.root} holds no run to resume")
    return paths


def prepare_run_dir(job: JobConfig, paths: RunPaths) -> None:
    """Start afresh (same config, resume=false) or keep what is there, and record the resolved config."""
    if not job.resume:
        for stage in Stage:
            shutil.rmtree(paths.stage(stage), ignore_errors=True)
        for name in ("timings.json", "report.md"):
            (paths.root / name).unlink(missing_ok=True)
    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = paths.config.with_name("config.yaml.tmp")
    tmp.write_text(to_yaml(job))
    os.replace(tmp, paths.config)


def run_pipeline(job: JobConfig) -> RunPaths:
    paths = check_run_dir(job)
    if any(role.count for role in plan_roles(job)):
        from cluster.ray_cluster import connect
        connect(job.cluster)
        check_plan(job)
    prepare_run_dir(job, paths)
    from cluster.align_stages import ALIGNMENT_STAGES
    runners = {**STAGE_RUNNERS, **ALIGNMENT_STAGES}
    from trainers.report import acceptance_checks, read_timings, record_seconds, write_report
    timings = read_timings(paths.root)
    for stage in job.stages:
        if job.resume and stage_done(paths, stage):
            print(f"[{stage.value}] already done")
            continue
        start = time.perf_counter()
        runners[stage](job, paths)
        timings = record_seconds(paths.root, stage.value, time.perf_counter() - start)
        print(f"[{stage.value}] finished in {timings[stage.value]:.1f}s")
    kl_bounds = {s.value: cfg.kl_bound for s, cfg in job.ppo_sections.items() if s in job.stages}
    report = write_report(paths.root, [s.value for s in job.stages], timings, acceptance_checks(paths.root, kl_bounds))
    print(f"report: {report}")
    return paths


def tokenizer_stage(job: JobConfig, paths: RunPaths) -> None:
    from trainers.prepare import prepare_corpus
    prepare_corpus(job.tokenizer, job.corpus, job.seed, job.model.max_seq_len, paths.tokenizer, paths.data)


def pretrain_stage(job: JobConfig, paths: RunPaths) -> None:
    from cluster.groups import start_learners
    from trainers.pretrain import run_pretrain
    out = paths.stage(Stage.pretrain)
    if not (paths.data / "meta.json").is_file():
        raise RunDirError(f"pretrain needs the tokenizer stage's output in {paths.data}; add 'tokenizer' to stages")
    model_dir = initial_model(job, paths)
    if job.pretrain.retained:
        check_retained(Path(job.pretrain.retained), paths.data)
    learners = start_learners(job.learner, str(model_dir), job.pretrain.steps)
    try:
        run_pretrain(learners, job.pretrain, job.learner, paths.data, paths.tokenizer, out, job.seed, job.resume)
    finally:
        learners.shutdown()


def check_retained(retained: Path, data: Path) -> None:
    """pretrain.retained must be a data folder made with this run's tokenizer (the same bytes per token)."""
    import numpy as np
    from trainers.shards import read_token_bytes
    if not (retained / "meta.json").is_file():
        raise RunDirError(f"pretrain.retained: {retained} is not a data folder (no meta.json); give another run's data/")
    if not np.array_equal(read_token_bytes(retained), read_token_bytes(data)):
        raise RunDirError(f"pretrain.retained: {retained} was tokenised with another tokenizer than this run's "
                          "(set tokenizer.path to that run's tokenizer)")


def reward_model_stage(job: JobConfig, paths: RunPaths) -> None:
    from cluster.groups import start_learners
    from trainers.model import ModelHead
    from trainers.pairs import load_pair_sources, split_pairs
    from trainers.reward_model import encode_pairs, run_reward_model
    from trainers.tokenizer import load_tokenizer
    cfg, out = job.reward_model, paths.stage(Stage.reward_model)
    base = policy_model(job, paths, Stage.reward_model)
    tokenizer = load_tokenizer(base)
    train, val = split_pairs(load_pair_sources(cfg.pairs, job.seed), cfg.held_out_fraction, job.seed)
    train = encode_pairs(train, tokenizer, cfg.max_len, cfg.use_margins)
    val = encode_pairs(val, tokenizer, cfg.max_len, cfg.use_margins)
    learner_cfg = dataclasses.replace(job.learner, lr=cfg.lr, warmup_steps=cfg.warmup_steps)
    learners = start_learners(learner_cfg, str(base), cfg.steps, head=ModelHead.scalar)
    try:
        run_reward_model(learners, cfg, learner_cfg, train, val, tokenizer, out, job.seed, job.resume)
    finally:
        learners.shutdown()


def policy_model(job: JobConfig, paths: RunPaths, stage: Stage) -> Path:
    """The policy `stage` starts from: the output of the last policy stage listed before it; with none
    listed, model.path; failing that, the latest earlier policy stage's output in this run directory.
    sycophancy_ppo starts where grpo starts: the two arms of the experiment differ only in their reward."""
    starts_as = Stage.grpo if stage == Stage.sycophancy_ppo else stage
    earlier = [s for s in STAGE_ORDER[:STAGE_ORDER.index(starts_as)] if s in POLICY_STAGES]
    listed = [s for s in earlier if s in job.stages]
    if listed:
        model = paths.stage(listed[-1]) / "model"
        if not (model / "config.json").is_file():
            raise RunDirError(f"{stage.value} starts from the {listed[-1].value} stage's output, but {model} does not exist")
        return model
    if job.model.path:
        return Path(job.model.path)
    for s in reversed(earlier):
        if (paths.stage(s) / "model" / "config.json").is_file():
            return paths.stage(s) / "model"
    raise RunDirError(f"no policy for {stage.value} to start from: no earlier stage's model in {paths.root} and "
                      f"model.path is not set; add 'pretrain' to stages or set model.path")


def stage_done(paths: RunPaths, stage: Stage) -> bool:
    """Whether `stage` has published its output (resume=true skips such a stage)."""
    if stage == Stage.tokenizer:
        return (paths.data / "meta.json").is_file() and (paths.tokenizer / "tokenizer.json").is_file()
    return (paths.stage(stage) / "model" / "config.json").is_file()


def initial_model(job: JobConfig, paths: RunPaths) -> Path:
    """The HF directory the learners load: model.path, or a fresh Llama built once by the driver."""
    from trainers.model import build_llama, check_causal_lm_dir, config_from_dir
    from trainers.tokenizer import load_tokenizer
    tokenizer = load_tokenizer(paths.tokenizer)
    if job.model.path:
        check_causal_lm_dir(job.model.path)
        vocab = config_from_dir(job.model.path).vocab_size
        if vocab < len(tokenizer):
            raise ValueError(f"model {job.model.path} has {vocab} embeddings but the tokenizer has {len(tokenizer)} tokens")
        return Path(job.model.path)
    init = paths.stage(Stage.pretrain) / "init"
    if not (init / "config.json").is_file():
        tmp = init.with_name("init.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build_llama(job.model, tokenizer, job.seed).save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        os.replace(tmp, init)
    return init


STAGE_RUNNERS = {Stage.tokenizer: tokenizer_stage, Stage.pretrain: pretrain_stage,
                 Stage.reward_model: reward_model_stage}
