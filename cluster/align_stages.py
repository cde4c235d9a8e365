"""The stages after pretraining (sft, grpo, sycophancy_ppo, rsft, ppo, dpo): each starts the roles it needs,
hands them to its loop in trainers/, and stops them, whatever happens.

Each reads the policy the previous policy stage wrote (or model.path) and writes <run>/<stage>/model."""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from cluster.job import JobConfig
from cluster.run_dir import RunDirError, RunPaths, policy_model
from cluster.stages import STAGE_ORDER, Stage
from evals.harness import StageEvals
from tools.config import EpisodeConfig
from trainers.align_config import CriticInit, PolicyUpdateConfig, PpoConfig
from trainers.config import LearnerConfig
from trainers.loops.alignment import Roles


def policy_learner_config(job: JobConfig, lr: float, warmup_steps: int, rows_per_step: int,
                          min_lr_ratio: Optional[float] = None) -> LearnerConfig:
    """The learner settings of a stage: its own LR, warm-up and (when set) LR floor, and grad_accum so that
    one optimizer step takes rows_per_step rows over all ranks (a multiple of their micro-batches: config
    validation)."""
    per_pass = job.learner.num_ranks * job.learner.micro_batch
    floor = job.learner.min_lr_ratio if min_lr_ratio is None else min_lr_ratio
    return dataclasses.replace(job.learner, lr=lr, warmup_steps=warmup_steps, min_lr_ratio=floor,
                               grad_accum=rows_per_step // per_pass)


def update_learner_config(job: JobConfig, update: PolicyUpdateConfig) -> LearnerConfig:
    """policy_learner_config from a grpo or ppo update section: its LR, warm-up, LR floor and minibatch."""
    return policy_learner_config(job, update.lr, update.warmup_steps, update.minibatch_size, update.min_lr_ratio)


def reward_model_dir(job: JobConfig, paths: RunPaths, stage: Stage) -> Optional[str]:
    """The local reward model the rubric serves (None: none, an HTTP endpoint, or from_stage before the
    reward_model stage has run: sft comes first)."""
    spec = job.rewards.reward_model
    before_rm_stage = STAGE_ORDER.index(stage) < STAGE_ORDER.index(Stage.reward_model)
    if spec is None or spec.http is not None or (spec.from_stage and before_rm_stage):
        return None
    path = paths.stage(Stage.reward_model) / "model" if spec.from_stage else Path(spec.path)
    if not (path / "config.json").is_file():
        raise RunDirError(f"rewards.reward_model: no reward model at {path}"
                          + (" (run the reward_model stage first)" if spec.from_stage else ""))
    return str(path)


@contextmanager
def alignment_roles(job: JobConfig, paths: RunPaths, stage: Stage, base: Path, learner_cfg: LearnerConfig, total_steps: int,
                    reference: bool = False, critic: Optional[tuple[LearnerConfig, str]] = None) -> Iterator[Roles]:
    """Policy learners holding `base`, rollout workers synced to them, the reward roles, and on request the
    reference policy and a critic (critic: its learner settings and the model dir it starts from). Every
    actor is stopped on the way out."""
    from cluster.actor_group import Bundle
    from cluster.groups import launch_learners
    from cluster.rewarder import Rewarder
    from cluster.rollout_pool import RolloutPool
    from cluster.scorers import ReferenceActor
    from data.tokenizer import load_tokenizer
    from modeling.model import ModelHead, config_from_dir
    from trainers.learners.rl_learner import CriticLearner, PolicyLearner
    rm_dir = reward_model_dir(job, paths, stage)     # fails before any actor starts
    started = []
    try:
        # Every role starts at once and is waited on afterwards: a role's start is mostly imports and, on a GPU,
        # CUDA and NCCL set-up, which overlap.
        ref = None
        if reference:
            ref = ReferenceActor(str(base), job.reference, job.learner.precision, job.learner.timeout_s)
            started.append(ref)
        room = Bundle(job.rollout.cpus_per_worker, job.rollout.gpus_per_worker) if job.rollout.colocate else None
        policy, policy_ready = launch_learners(learner_cfg, str(base), total_steps, colocated=room,
                                               actor_class=PolicyLearner)
        started.append(policy)
        # colocated: worker i sits in learner rank i's bundle, on its GPU
        pool = RolloutPool(job.rollout, str(base), config_from_dir(base).max_position_embeddings,
                           shared=policy.placement if job.rollout.colocate else None, wait=False)
        started.append(pool)
        episode = stage_episode(job, stage)
        if episode is not None and episode.tool_workers:
            from cluster.tool_pool import ToolPool
            tools = ToolPool(episode)
            started.append(tools)
            pool.attach_tools(tools)
        critic_group = critic_ready = None
        if critic is not None:
            critic_group, critic_ready = launch_learners(*critic, total_steps, head=ModelHead.value,
                                                         actor_class=CriticLearner, role="critic")
            started.append(critic_group)
        rewarder = Rewarder(job.rewards, job.verifier_pool, rm_dir, load_tokenizer(base), job.rollout.timeout_s,
                            job.learner.precision)
        started.append(rewarder)
        policy_ready.result("join the process group and load the model")
        pool.wait_started()
        pool.connect_learners(policy)
        if critic_ready is not None:
            critic_ready.result("join the process group and load the model")
        roles = Roles(policy, pool, rewarder, reference=ref, critic=critic_group)
        if job.eval.in_stages:
            roles.suites = StageEvals(job.eval, load_tokenizer(base), paths.stage(stage) / "evals")
        yield roles
    finally:
        for role in reversed(started):
            role.shutdown()


def stage_episode(job: JobConfig, stage: Stage) -> Optional[EpisodeConfig]:
    """The stage's episode section (multi-turn sampling with tools), if it samples and has one."""
    section = {Stage.sft: job.sft, Stage.grpo: job.grpo, Stage.rsft: job.rsft, **job.ppo_sections}.get(stage)
    return getattr(section, "episode", None)


def updates_per_step(rollouts: int, update: PolicyUpdateConfig) -> int:
    return -(-rollouts // update.minibatch_size) * update.ppo_epochs


def grpo_stage(job: JobConfig, paths: RunPaths) -> None:
    from trainers.loops.grpo import run_grpo
    cfg, out = job.grpo, paths.stage(Stage.grpo)
    base, tokenizer, train, held_out = _start(job, paths, Stage.grpo, cfg.assert_wrong)
    learner_cfg = update_learner_config(job, cfg.update)
    total = cfg.steps * updates_per_step(cfg.prompts_per_step * cfg.group_size, cfg.update)
    with alignment_roles(job, paths, Stage.grpo, base, learner_cfg, total, reference=True) as roles:
        run_grpo(roles, cfg, job.tasks, train, held_out, job.learner.num_ranks, tokenizer, out, job.seed, job.resume)


def sft_stage(job: JobConfig, paths: RunPaths) -> None:
    from trainers.loops.sft import run_sft
    cfg, out = job.sft, paths.stage(Stage.sft)
    base, tokenizer, train, held_out = _start(job, paths, Stage.sft, cfg.assert_wrong)
    learner_cfg = policy_learner_config(job, cfg.lr, cfg.warmup_steps, cfg.batch_size, cfg.min_lr_ratio)
    with alignment_roles(job, paths, Stage.sft, base, learner_cfg, cfg.steps) as roles:
        run_sft(roles, cfg, job.tasks, train, held_out, cfg.batch_size, job.learner.num_ranks, tokenizer, out,
                job.seed, job.resume)


def rsft_stage(job: JobConfig, paths: RunPaths) -> None:
    from trainers.loops.sft import run_rsft
    cfg, out = job.rsft, paths.stage(Stage.rsft)
    base, tokenizer, train, held_out = _start(job, paths, Stage.rsft)
    learner_cfg = policy_learner_config(job, cfg.lr, cfg.warmup_steps, cfg.batch_size)
    with alignment_roles(job, paths, Stage.rsft, base, learner_cfg, cfg.rounds * cfg.sft_steps) as roles:
        run_rsft(roles, cfg, job.tasks, train, held_out, cfg.batch_size, job.learner.num_ranks, tokenizer, out,
                 job.seed, job.resume)


def ppo_stage(job: JobConfig, paths: RunPaths) -> None:
    _ppo(job, paths, Stage.ppo, job.ppo)


def sycophancy_ppo_stage(job: JobConfig, paths: RunPaths) -> None:
    _ppo(job, paths, Stage.sycophancy_ppo, job.sycophancy_ppo)


def _ppo(job: JobConfig, paths: RunPaths, stage: Stage, cfg: PpoConfig) -> None:
    from trainers.loops.ppo import run_ppo
    out = paths.stage(stage)
    base, tokenizer, train, held_out = _start(job, paths, stage, cfg.assert_wrong)
    learner_cfg = update_learner_config(job, cfg.update)
    critic_cfg = dataclasses.replace(learner_cfg, lr=cfg.critic_lr)
    critic_base = reward_model_dir(job, paths, stage) if cfg.critic_init == CriticInit.reward_model else str(base)
    total = cfg.steps * updates_per_step(cfg.prompts_per_step * cfg.samples_per_prompt, cfg.update)
    with alignment_roles(job, paths, stage, base, learner_cfg, total, reference=True,
                         critic=(critic_cfg, critic_base)) as roles:
        run_ppo(roles, cfg, job.tasks, train, held_out, job.learner.num_ranks, tokenizer, out, job.seed, job.resume)


def dpo_stage(job: JobConfig, paths: RunPaths) -> None:
    from cluster.groups import start_learners
    from data.pairs import load_pair_sources, split_pairs
    from data.tokenizer import load_tokenizer
    from trainers.learners.rl_learner import PolicyLearner
    from trainers.loops.dpo import encode_dpo_pairs, run_dpo
    cfg, out = job.dpo, paths.stage(Stage.dpo)
    base = policy_model(job, paths, Stage.dpo)
    tokenizer = load_tokenizer(base)
    train, val = split_pairs(load_pair_sources(cfg.pairs, job.seed), cfg.held_out_fraction, job.seed)
    train, val = (encode_dpo_pairs(p, tokenizer, cfg.max_len) for p in (train, val))
    rows = job.learner.num_ranks * job.learner.micro_batch * job.learner.grad_accum
    learner_cfg = dataclasses.replace(job.learner, lr=cfg.lr, warmup_steps=cfg.warmup_steps)
    policy = start_learners(learner_cfg, str(base), cfg.steps, actor_class=PolicyLearner)
    try:
        run_dpo(policy, cfg, train, val, rows, job.learner.num_ranks, tokenizer, out, job.seed, job.resume)
    finally:
        policy.shutdown()


def _start(job: JobConfig, paths: RunPaths, stage: Stage, assert_wrong: Optional[float] = None):
    """The stage's starting policy, its tokenizer, and the training and held-out tasks in its chat format
    (assert_wrong: the stage's own share of training questions with a wrong assertion; None: tasks.train's)."""
    from data.tasks import train_and_held_out
    from data.tokenizer import load_tokenizer
    base = policy_model(job, paths, stage)
    tokenizer = load_tokenizer(base)
    tasks = job.tasks
    if assert_wrong is not None:
        tasks = dataclasses.replace(tasks, train=dataclasses.replace(tasks.train, assert_wrong=assert_wrong))
    return (base, tokenizer) + train_and_held_out(tasks, tokenizer, job.seed)


ALIGNMENT_STAGES = {Stage.sft: sft_stage, Stage.grpo: grpo_stage, Stage.sycophancy_ppo: sycophancy_ppo_stage,
                    Stage.rsft: rsft_stage, Stage.ppo: ppo_stage, Stage.dpo: dpo_stage}
