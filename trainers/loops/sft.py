"""Supervised fine-tuning: next-token NLL, eq. (9), on (prompt, answer) pairs with the prompt's tokens
masked out, so that only the answer is learned. Two loops use it:

sft (worked answers from the task source, or tool-use demonstrations: sft.demonstrate):
    for each step:  sample (the step's tasks) -> update (every rank, its shard) -> log
                    [every eval_every] sync -> held-out pass@k
                    [every checkpoint_every] checkpoint

rsft (the paper's rejection-sampling fine-tuning, RAFT), for each round:
    generate  N responses to each of prompts_per_round tasks on the rollout workers (with
              async_rollout.max_staleness = k > 0, sampled during the last k rounds' SFT)
    reward    the rubric per response
    keep      the best (or top-k, or all passing) responses at or above min_reward
    sft       sft_steps optimizer steps on the kept set
    sync      the new weights -> rollout workers, after the generate calls already queued on them"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.config import TasksConfig
from data.tasks import Task, answer_ids
from evals.metrics import MetricsLog, PhaseTimer
from tools.demonstrations import DemoTarget, NoDemonstration, demonstration
from tools.environment import make_environments
from trainers.align_config import KeepRule, RsftConfig, SftConfig
from trainers.learners.batches import TokenBatch
from trainers.learners.rl_batches import token_rows
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
    step_indices,
    step_seed,
)
from trainers.loops.checkpoints import Checkpoints, DriverState
from trainers.loops.rollout_stream import staleness_record

logger = logging.getLogger(__name__)


def sft_update(policy, prompts: list[list[int]], answers: list[list[int]], pad_id: int, ranks: int,
               answer_masks: list[list[int]] | None = None) -> tuple[float, int]:
    """Collective: one optimizer step of masked NLL on these rows (answer_masks: which answer tokens count, an
    episode's observations not; None: all); returns (mean NLL per counted token, tokens)."""
    tokens, mask = token_rows(prompts, answers, pad_id, response_masks=answer_masks)
    batch = TokenBatch(tokens, mask, int(mask.sum()))
    parts = policy.sharded(batch.split(ranks), lambda a, b: a.train_step.remote(b), "sft step")
    targets = sum(p.targets for p in parts)
    return sum(p.nll_sum for p in parts) / targets, targets


def run_sft(roles: Roles, cfg: SftConfig, tasks_cfg: TasksConfig, train: list[Task], held_out: list[Task],
            rows: int, ranks: int, tokenizer, stage_dir: Path, seed: int, resume: bool) -> Path:
    checkpoints, log = Checkpoints(stage_dir / "checkpoints"), MetricsLog(stage_dir)
    demos = None
    if cfg.demonstrate is not None:
        train, demos = tool_demonstrations(train, cfg, tokenizer)
    state = begin_stage(roles, checkpoints, log, "sft", resume, held_out, tasks_cfg, seed, cfg.episode)
    timer = PhaseTimer()
    bar = tqdm(total=cfg.steps, initial=state.step, desc="sft", unit="step", dynamic_ncols=True)
    while state.step < cfg.steps:
        with timer("sample"):
            chosen = step_indices(len(train), rows, seed, state.step)
            answers = [demos[i].ids if demos else answer_ids(train[i], tokenizer) for i in chosen]
            masks = [demos[i].mask for i in chosen] if demos else None
        with timer("update"):
            roles.pool.free_gpu()                        # colocated: the engines sleep while the learners train
            loss, targets = sft_update(roles.policy, [train[i].prompt_ids for i in chosen], answers,
                                       tokenizer.pad_token_id, ranks, masks)
        state = DriverState(state.step + 1, state.tokens_seen + targets, state.policy_version + 1)
        record = {"train/loss": loss}
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            with timer("sync"):
                roles.pool.sync_weights(state.policy_version)
            with timer("evaluate"):
                record.update(evaluate(roles, held_out, tasks_cfg, seed, cfg.episode))
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
            with timer("checkpoint"):
                save_stage_checkpoint(roles, checkpoints, state, tokenizer)
        log.write(state.step, {**record, **timer.pop()})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
    bar.close()
    tools = ["eval/tools/pass@1", "eval/tools/tool_calls"] if cfg.episode is not None else []
    return finish_stage(checkpoints, log, stage_dir, "sft",
                        ["train/loss", "eval/pass@1", f"eval/pass@{tasks_cfg.eval_k}", *tools])


def tool_demonstrations(train: list[Task], cfg: SftConfig, tokenizer) -> tuple[list[Task], list[DemoTarget]]:
    """The training tasks that have a demonstration, and theirs (the driver runs the tool; tools/demonstrations.py).
    Tasks whose tool answer misses the reference are dropped and counted in the log; none left is an error."""
    env = make_environments(cfg.episode, tokenizer, 1)[0]
    kept, demos, missed = [], [], []
    for task in tqdm(train, desc="demonstrations", unit="task", dynamic_ncols=True):
        try:
            demos.append(demonstration(env, task, cfg.demonstrate, tokenizer))
            kept.append(task)
        except NoDemonstration as e:
            missed.append(str(e))
    if missed:
        logger.warning("sft.demonstrate: %d of %d tasks dropped, e.g. %s", len(missed), len(train), missed[0])
    if not kept:
        raise ValueError(f"sft.demonstrate: no task has a demonstration ({missed[0]})")
    return kept, demos


def kept_indices(rewards: np.ndarray, cfg: RsftConfig) -> list[int]:
    """rewards [G, N] -> flat indices (into G*N) of the responses RSFT trains on. Only responses with
    reward >= min_reward qualify; best keeps each prompt's first highest, top_k its top_k highest."""
    kept = []
    for g, row in enumerate(rewards):
        order = [i for i in np.argsort(-row, kind="stable") if row[i] >= cfg.min_reward]
        if cfg.keep == KeepRule.best:
            order = order[:1]
        elif cfg.keep == KeepRule.top_k:
            order = order[:cfg.top_k]
        kept += [g * rewards.shape[1] + int(i) for i in sorted(order)]
    return kept


def run_rsft(roles: Roles, cfg: RsftConfig, tasks_cfg: TasksConfig, train: list[Task], held_out: list[Task],
             rows: int, ranks: int, tokenizer, stage_dir: Path, seed: int, resume: bool) -> Path:
    """Each round is one step of the stage's state (checkpoints and resume are per round)."""
    checkpoints, log = Checkpoints(stage_dir / "checkpoints"), MetricsLog(stage_dir)
    state = begin_stage(roles, checkpoints, log, "rsft", resume, held_out, tasks_cfg, seed, cfg.episode)
    max_staleness = cfg.async_rollout.max_staleness
    stream = rollout_stream(roles, train, cfg.prompts_per_round, cfg.samples_per_prompt, cfg.temperature, tasks_cfg,
                            seed, cfg.rounds, max_staleness, state, checkpoints, cfg.episode)
    timer = PhaseTimer()
    bar = tqdm(total=cfg.rounds, initial=state.step, desc="rsft", unit="round", dynamic_ncols=True)
    while state.step < cfg.rounds:
        start = time.perf_counter()
        with timer("generate"):                          # async: only what the last round's SFT did not cover
            batch = stream.take(state.step)              # and queues the next max_staleness rounds' calls
        tasks, rollouts = batch.tasks, batch.rollouts
        with timer("reward"):
            scored = roles.rewarder.score(rollout_tasks(tasks, cfg.samples_per_prompt), rollouts, cfg.reward)
        with timer("keep"):
            rewards = scored.rewards + episode_rewards(rollouts, cfg.episode)
            kept = kept_indices(rewards.reshape(len(tasks), cfg.samples_per_prompt), cfg)
        record = {"reward/mean": float(rewards.mean()), "rsft/kept": len(kept), **scored.pass_rates,
                  **rollout_stats(rollouts, timer.seconds["generate"]), **staleness_record(batch, max_staleness)}
        losses = []
        with timer("sft"):
            roles.pool.free_gpu()                        # colocated: the engines sleep while the learners train
            rng = np.random.default_rng(step_seed(seed, state.step, 4))
            for _ in range(cfg.sft_steps if kept else 0):
                chosen = [rollouts[kept[i]] for i in rng.choice(len(kept), size=rows, replace=len(kept) < rows)]
                losses.append(sft_update(roles.policy, [r.prompt_ids for r in chosen], [r.response_ids for r in chosen],
                                         tokenizer.pad_token_id, ranks, [r.sampled_mask() for r in chosen])[0])
        versions = len(losses)
        state = DriverState(state.step + 1, state.tokens_seen, state.policy_version + versions)
        if versions:
            record["train/loss"] = float(np.mean(losses))
            with timer("sync"):
                stream.sync_weights(state.policy_version)
        with timer("evaluate"):
            record.update(evaluate(roles, held_out, tasks_cfg, seed, cfg.episode))
        with timer("checkpoint"):
            save_stage_checkpoint(roles, checkpoints, state, tokenizer, stream)
        record["time/round"] = time.perf_counter() - start
        log.write(state.step, {**record, **timer.pop()})
        bar.update(1)
    bar.close()
    return finish_stage(checkpoints, log, stage_dir, "rsft", ["reward/mean", "rsft/kept", "train/loss", "eval/pass@1"])
