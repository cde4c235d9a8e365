"""The pipeline runner: the one place that knows the order of stages. Each stage reads what the
previous one wrote under runs/<name>/ and writes its own output there."""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

from cluster.align_stages import ALIGNMENT_STAGES
from cluster.job import JobConfig
from cluster.plan import check_plan, plan_roles
from cluster.run_dir import RunDirError, RunPaths, check_run_dir, policy_model, prepare_run_dir, stage_done
from cluster.stages import Stage


def run_pipeline(job: JobConfig) -> RunPaths:
    paths = check_run_dir(job)
    if any(role.count for role in plan_roles(job)):
        from cluster.ray_cluster import connect
        connect(job.cluster)
        check_plan(job)
    prepare_run_dir(job, paths)
    runners = {**STAGE_RUNNERS, **ALIGNMENT_STAGES}
    from evals.report import checks_line, read_timings, record_seconds, stage_line
    timings = read_timings(paths.root)
    for stage in job.stages:
        if job.resume and stage_done(paths, stage):
            print(f"[{stage.value}] already done")
            continue
        start = time.perf_counter()
        runners[stage](job, paths)
        timings = record_seconds(paths.root, stage.value, time.perf_counter() - start)
        print(stage_line(paths.root, stage.value, timings[stage.value]), flush=True)
    report, checks = report_run(job, paths.root)
    print(f"run written to {paths.root}; report: {report}")
    if checks:
        print(checks_line(checks), flush=True)
    return paths


def report_run(job: JobConfig, run_dir: Path):
    """(Re)writes <run>/report.md from what the run's stages logged; returns it and the checks' results."""
    from evals.report import read_timings, run_checks, stage_metrics, write_report
    found = stage_metrics(run_dir, [s.value for s in job.stages])
    kl_bounds = {s.value: cfg.kl_bound for s, cfg in job.ppo_sections.items() if s in job.stages}
    checks = run_checks(found, job.checks, kl_bounds)
    return write_report(run_dir, found, read_timings(run_dir), checks), checks


def tokenizer_stage(job: JobConfig, paths: RunPaths) -> None:
    from data.prepare import prepare_corpus
    prepare_corpus(job.tokenizer, job.corpus, job.seed, job.model.max_seq_len, paths.tokenizer, paths.data)


def pretrain_stage(job: JobConfig, paths: RunPaths) -> None:
    from cluster.groups import start_learners
    from trainers.loops.pretrain import run_pretrain
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

    from data.shards import read_token_bytes
    if not (retained / "meta.json").is_file():
        raise RunDirError(f"pretrain.retained: {retained} is not a data folder (no meta.json); give another run's data/")
    if not np.array_equal(read_token_bytes(retained), read_token_bytes(data)):
        raise RunDirError(f"pretrain.retained: {retained} was tokenised with another tokenizer than this run's "
                          "(set tokenizer.path to that run's tokenizer)")


def reward_model_stage(job: JobConfig, paths: RunPaths) -> None:
    from cluster.groups import start_learners
    from data.pairs import load_pair_sources, split_pairs
    from data.tokenizer import load_tokenizer
    from modeling.model import ModelHead
    from trainers.loops.reward_model import encode_pairs, run_reward_model
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


def initial_model(job: JobConfig, paths: RunPaths) -> Path:
    """The HF directory the learners load: model.path, or a fresh Llama built once by the driver."""
    from data.tokenizer import load_tokenizer
    from modeling.model import build_llama, check_causal_lm_dir, config_from_dir
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
