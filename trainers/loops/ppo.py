"""PPO against a reward model (RLHF; Part 2 of the reference, Ouyang et al. 2022): the policy maximises
E[R(x, y)] - beta KL(pi || pi_ref) with a critic, GAE and the clipped surrogate.

    for each step:
        generate   samples_per_prompt responses to each of prompts_per_step tasks (a function of seed and step);
                   with async_rollout.max_staleness = k > 0 the workers sampled them during the last k updates
        reward     the reward model's score (and/or verifiers) per response
        reference  log pi_ref and log pi_old of every response token
        values     V(s_t) from the critic
        advantage  per-token rewards (-beta k1 each token when KL is in the reward, R at the last) -> GAE
                   -> whitened advantages, returns
        update     critic (clipped value loss), then policy (clipped surrogate; + beta k3 when KL is in the loss;
                   TIS-weighted when the rollouts may be stale)
        adapt      beta, when kl_target is set (Ziegler et al. 2019)
        sync       the new weights -> rollout workers, after the generate calls already queued on them"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.config import TasksConfig
from data.tasks import Task
from evals.metrics import MetricsLog, PhaseTimer
from trainers.align_config import KlPlacement, PpoConfig
from trainers.learners.rl_batches import ValueBatch, row_ends
from trainers.loops.alignment import (
    Roles,
    begin_stage,
    episode_rewards,
    evaluate,
    finish_stage,
    minibatches,
    policy_logprobs,
    rollout_stats,
    rollout_stream,
    rollout_tasks,
    save_stage_checkpoint,
    step_rows,
    update_policy,
)
from trainers.loops.checkpoints import Checkpoints, DriverState
from trainers.loops.rollout_stream import staleness_record
from trainers.losses.advantages import gae, whiten
from trainers.losses.rl import kl_k1

KL_GAIN = 0.1   # Ziegler et al.'s K_beta: how fast the adaptive coefficient moves


def adaptive_kl_coef(beta: float, kl: float, target: float) -> float:
    """Proportional controller: beta *= 1 + K_beta * clip(KL / target - 1, -0.2, 0.2)."""
    return beta * (1.0 + KL_GAIN * float(np.clip(kl / target - 1.0, -0.2, 0.2)))


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """r_t = -beta * kl_t on every response token, plus the sequence reward R(x, y) on its last token.
    scores [B], kl [B, T] (0 when KL is not in the reward), mask [B, T] -> [B, T]."""
    rewards = -beta * kl * mask                                                    # [B, T]
    has = mask.sum(1) > 0                                                          # [B]
    last = (mask.shape[1] - 1 - mask.flip(1).argmax(1))                            # [B]: last response position
    rewards[has, last[has]] += scores[has].to(rewards.dtype)
    return rewards


def update_critic(critic, tokens: np.ndarray, mask: np.ndarray, old_values: np.ndarray, returns: np.ndarray,
                  chunks: list[np.ndarray], clip: float | None, ranks: int) -> float:
    """Collective: one optimizer step per chunk of the value loss; returns the mean loss per token."""
    losses = tokens_seen = 0.0
    for chunk in chunks:
        batch = ValueBatch(tokens[chunk], mask[chunk], old_values[chunk], returns[chunk], int(mask[chunk].sum()))
        for part in critic.sharded(batch.split(ranks), lambda a, b: a.train_values.remote(b, clip), "critic update"):
            losses, tokens_seen = losses + part.loss_sum, tokens_seen + part.tokens
    return losses / max(1.0, tokens_seen)


def run_ppo(roles: Roles, cfg: PpoConfig, tasks_cfg: TasksConfig, train: list[Task], held_out: list[Task],
            ranks: int, tokenizer, stage_dir: Path, seed: int, resume: bool) -> Path:
    checkpoints, log = Checkpoints(stage_dir / "checkpoints"), MetricsLog(stage_dir)
    state = begin_stage(roles, checkpoints, log, "ppo", resume, held_out, tasks_cfg, seed, cfg.episode)
    beta = state.kl_coef if state.kl_coef is not None else cfg.update.kl_coef
    max_staleness = cfg.async_rollout.max_staleness
    stream = rollout_stream(roles, train, cfg.prompts_per_step, cfg.samples_per_prompt, cfg.temperature, tasks_cfg,
                            seed, cfg.steps, max_staleness, state, checkpoints, cfg.episode)
    timer = PhaseTimer()
    bar = tqdm(total=cfg.steps, initial=state.step, desc="ppo", unit="step", dynamic_ncols=True)
    while state.step < cfg.steps:
        start = time.perf_counter()
        with timer("generate"):                          # async: only what the last update did not cover
            batch = stream.take(state.step)              # and queues the next max_staleness steps' calls
        tasks, rollouts = batch.tasks, batch.rollouts
        with timer("reward"):
            scored = roles.rewarder.score(rollout_tasks(tasks, cfg.samples_per_prompt), rollouts, cfg.reward)
        rows = step_rows(rollouts, [0.0] * len(rollouts), tokenizer.pad_token_id, cfg.update.minibatch_size)
        mask = rows.loss_mask
        with timer("reference"):
            rows.ref_logprobs = roles.reference.logprobs(rows.tokens, row_ends(mask)) * mask
            rows.old_logprobs = policy_logprobs(roles.policy, rows.tokens, ranks) * mask
        with timer("values"):
            values = np.concatenate(roles.critic.sharded(np.split(rows.tokens, ranks), lambda a, t: a.values.remote(t),
                                                         "values")) * mask
        with timer("advantage"):
            kl = kl_k1(torch.from_numpy(rows.old_logprobs), torch.from_numpy(rows.ref_logprobs)) * torch.from_numpy(mask)
            scores = torch.zeros(len(mask))
            scores[:len(rollouts)] = torch.from_numpy(scored.rewards + episode_rewards(rollouts, cfg.episode))
            in_reward = cfg.kl_placement == KlPlacement.reward
            rewards = token_rewards(scores, kl if in_reward else torch.zeros_like(kl), torch.from_numpy(mask), beta)
            advantages, returns = gae(rewards, torch.from_numpy(values), torch.from_numpy(mask), cfg.gamma, cfg.lam)
            rows.advantages = whiten(advantages, torch.from_numpy(mask)).numpy()
        chunks = minibatches(rows, cfg.update, seed, state.step)
        with timer("update_critic"):
            roles.pool.free_gpu()                        # colocated: the engines sleep while the learners train
            value_loss = update_critic(roles.critic, rows.tokens, mask, values, returns.numpy(), chunks,
                                       cfg.value_clip, ranks)
        kl_per_response = float(kl.sum(1)[:len(rollouts)].mean())
        record = {"reward/mean": float(scored.rewards.mean()), "ppo/kl_per_response": kl_per_response,
                  "ppo/kl_coef": beta, "critic/loss": value_loss, **scored.pass_rates,
                  **rollout_stats(rollouts, timer.seconds["generate"]), **staleness_record(batch, max_staleness)}
        if scored.model_scores is not None:
            record["reward/model_score"] = float(scored.model_scores.mean())
        version = state.policy_version
        if state.step >= cfg.critic_warmup_steps:
            with timer("update"):
                update = dataclasses.replace(cfg.update, kl_coef=0.0 if in_reward else beta)
                record.update(update_policy(roles.policy, rows, update, ranks, seed, state.step, max_staleness > 0))
            version += 1
            with timer("sync"):
                stream.sync_weights(version)
        if cfg.kl_target is not None:
            beta = adaptive_kl_coef(beta, kl_per_response, cfg.kl_target)
        state = DriverState(state.step + 1, state.tokens_seen + int(mask.sum()), version, beta)
        record["time/step"] = time.perf_counter() - start   # sample to sync (evaluation and checkpoints aside)
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            with timer("evaluate"):
                record.update(evaluate(roles, held_out, tasks_cfg, seed, cfg.episode))
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
            with timer("checkpoint"):
                save_stage_checkpoint(roles, checkpoints, state, tokenizer, stream)
        log.write(state.step, {**record, **timer.pop()})
        bar.update(1)
        bar.set_postfix(reward=f"{record['reward/mean']:.3f}", kl=f"{kl_per_response:.3f}")
    bar.close()
    return finish_stage(checkpoints, log, stage_dir, "ppo", ["reward/mean", "eval/reward_model_score",
                                                            "ppo/kl_per_response", "critic/loss", "policy/entropy"])
