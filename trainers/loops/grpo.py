"""GRPO: group-relative policy optimisation against verifiable rewards (RLVR; Shao et al. 2024), one
instance of max E[R(x, y)] - beta KL(pi || pi_ref) from Part 2 of the reference.

    for each step:
        generate   group_size responses to each of prompts_per_step tasks (drawn as a function of seed and step);
                   with async_rollout.max_staleness = k > 0 the workers sampled them during the last k updates
        reward     the rubric (verifiers and/or reward model) per response
        advantage  group-normalised rewards (or RLOO / REINFORCE++); dynamic sampling, overlong filter
        reference  log pi_ref of every response token (KL is always measured; in the loss when kl_coef > 0)
        update     ppo_epochs passes of minibatch steps of the clipped surrogate on the policy learners
                   (TIS-weighted when the rollouts may be stale)
        sync       the new weights -> every rollout worker, tagged policy_version, after the generate calls
                   already queued on it"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.config import TasksConfig
from data.tasks import Task
from evals.metrics import MetricsLog, PhaseTimer
from rollout.types import FinishReason, Rollout
from trainers.align_config import AdvantageKind, GrpoConfig
from trainers.learners.rl_batches import row_ends
from trainers.loops.alignment import (
    Roles,
    begin_stage,
    episode_rewards,
    evaluate,
    finish_stage,
    rollout_stats,
    rollout_stream,
    rollout_tasks,
    save_stage_checkpoint,
    step_rows,
    update_policy,
)
from trainers.loops.checkpoints import Checkpoints, DriverState
from trainers.loops.rollout_stream import staleness_record
from trainers.losses.advantages import group_advantages, reinforce_pp_baseline, rloo_advantages

ADVANTAGES = {  # rewards [G, n] -> advantages [G, n]
    AdvantageKind.grpo: lambda r: group_advantages(r, divide_by_std=True),
    AdvantageKind.dr_grpo: lambda r: group_advantages(r, divide_by_std=False),
    AdvantageKind.rloo: rloo_advantages,
    AdvantageKind.reinforce_pp: reinforce_pp_baseline,
}


def group_filter(rewards: np.ndarray, rollouts: list[Rollout], cfg: GrpoConfig) -> np.ndarray:
    """Which rollouts enter the loss [G*n] bool: dynamic sampling drops groups whose rewards are all equal
    (zero advantage, no signal); the overlong filter drops responses cut off at max_new_tokens."""
    keep = np.ones(rewards.size, bool)
    if cfg.dynamic_sampling:
        keep &= np.repeat(rewards.max(1) > rewards.min(1), rewards.shape[1])
    if cfg.overlong_filter:
        keep &= np.array([r.finish_reason != FinishReason.length for r in rollouts])
    return keep


def needs_reference(cfg: GrpoConfig, step: int) -> bool:
    """Whether step `step` (1-based) runs the reference forward: always for a KL term in the loss; without one
    (kl_coef 0) only at the steps that evaluate, so that KL to pi_ref is still logged there."""
    return cfg.update.kl_coef > 0 or step % cfg.eval_every == 0 or step == cfg.steps


def run_grpo(roles: Roles, cfg: GrpoConfig, tasks_cfg: TasksConfig, train: list[Task], held_out: list[Task],
             ranks: int, tokenizer, stage_dir: Path, seed: int, resume: bool) -> Path | None:
    """Trains to cfg.steps; returns the published policy dir, or None if stopped early (stop_after_steps)."""
    checkpoints, log = Checkpoints(stage_dir / "checkpoints"), MetricsLog(stage_dir)
    state = begin_stage(roles, checkpoints, log, "grpo", resume, held_out, tasks_cfg, seed, cfg.episode)
    max_staleness = cfg.async_rollout.max_staleness
    stream = rollout_stream(roles, train, cfg.prompts_per_step, cfg.group_size, cfg.temperature, tasks_cfg, seed,
                            cfg.steps, max_staleness, state, checkpoints, cfg.episode)
    stop_at = cfg.steps if cfg.stop_after_steps is None else min(cfg.steps, state.step + cfg.stop_after_steps)
    timer = PhaseTimer()
    bar = tqdm(total=cfg.steps, initial=state.step, desc="grpo", unit="step", dynamic_ncols=True)
    while state.step < stop_at:
        start = time.perf_counter()
        with timer("generate"):                          # async: only what the last update did not cover
            batch = stream.take(state.step)              # and queues the next max_staleness steps' calls
        tasks, rollouts = batch.tasks, batch.rollouts
        with timer("reward"):
            scored = roles.rewarder.score(rollout_tasks(tasks, cfg.group_size), rollouts, cfg.reward)
        with timer("advantage"):
            rewards = (scored.rewards + episode_rewards(rollouts, cfg.episode)).reshape(len(tasks), cfg.group_size)
            advantages = ADVANTAGES[cfg.advantage](torch.from_numpy(rewards)).numpy().reshape(-1)  # [G*n]
            keep = group_filter(rewards, rollouts, cfg)
        record = {"reward/mean": float(rewards.mean()), "reward/std_in_group": float(rewards.std(1).mean()),
                  "rollout/kept_fraction": float(keep.mean()), **scored.pass_rates,
                  **rollout_stats(rollouts, timer.seconds["generate"]), **staleness_record(batch, max_staleness)}
        if keep.any():
            kept = [r for r, k in zip(rollouts, keep) if k]
            rows = step_rows(kept, list(advantages[keep]), tokenizer.pad_token_id, cfg.update.minibatch_size)
            if roles.reference is not None and needs_reference(cfg, state.step + 1):
                with timer("reference"):
                    rows.ref_logprobs = roles.reference.logprobs(rows.tokens, row_ends(rows.loss_mask)) * rows.loss_mask
            with timer("update"):
                roles.pool.free_gpu()                    # colocated: the engines sleep while the learners train
                record.update(update_policy(roles.policy, rows, cfg.update, ranks, seed, state.step, max_staleness > 0))
            state = DriverState(state.step + 1, state.tokens_seen + int(rows.loss_mask.sum()), state.policy_version + 1)
            with timer("sync"):
                stream.sync_weights(state.policy_version)
        else:  # every group was uniform: nothing to learn from this step
            state = DriverState(state.step + 1, state.tokens_seen, state.policy_version)
        record["time/step"] = time.perf_counter() - start   # sample to sync (evaluation and checkpoints aside)
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            with timer("evaluate"):
                record.update(evaluate(roles, held_out, tasks_cfg, seed, cfg.episode))
        if state.step % cfg.checkpoint_every == 0 or state.step == stop_at:
            with timer("checkpoint"):
                save_stage_checkpoint(roles, checkpoints, state, tokenizer, stream)
        log.write(state.step, {**record, **timer.pop()})
        bar.update(1)
        bar.set_postfix(reward=f"{record['reward/mean']:.3f}")
    bar.close()
    if state.step < cfg.steps:
        log.close()
        return None
    return finish_stage(checkpoints, log, stage_dir, "grpo", ["reward/mean", "eval/pass@1", "policy/kl_to_ref",
                                                             "policy/entropy", "policy/clip_fraction",
                                                             "rollout/response_tokens"])
