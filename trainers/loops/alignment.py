"""What the alignment loops (grpo, ppo, rsft, sft) share: the roles they drive, held-out evaluation,
the clipped policy update over minibatches, and per-step seeds.

Role handles are passed in (Ray actor groups and pools built by cluster.align_stages); nothing here
starts or stops an actor."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from data.config import TasksConfig
from data.tasks import Task
from evals.harness import StageEvals, pass_at_k
from evals.metrics import MetricsLog, plot_curves, read_metrics
from rollout.types import FinishReason, Rollout, Sampling
from tools.config import EpisodeConfig
from trainers.align_config import PolicyUpdateConfig
from trainers.learners.batches import TokenBatch
from trainers.learners.rl_batches import (
    PolicyBatch,
    PolicyLoss,
    PolicyStepResult,
    length_order,
    per_token,
    row_ends,
    token_rows,
)
from trainers.loops.checkpoints import Checkpoints, DriverState, publish_dir, resume_stage
from trainers.loops.pretrain import save_checkpoint
from trainers.loops.rollout_stream import AHEAD_FILE, Episodes, RolloutStream


@dataclass
class Roles:
    """The actors one alignment stage drives."""
    policy: Any                      # ActorGroup[PolicyLearner]: every call is collective
    pool: Any                        # RolloutPool: generate, sync_weights
    rewarder: Any                    # cluster.rewarder.Rewarder: verifiers and/or reward model
    reference: Any = None            # ReferenceActor (when a KL term needs pi_ref)
    critic: Any = None               # ActorGroup[CriticLearner] (ppo)
    suites: Optional[StageEvals] = None  # eval suites run at each held-out evaluation (eval.in_stages)


def step_seed(seed: int, step: int, salt: int) -> int:
    """A seed for one step's draw (prompts, sampling, shuffles) that a resumed run recomputes exactly."""
    return (seed * 1_000_003 + step * 7919 + salt) % 2**31


def step_indices(total: int, count: int, seed: int, step: int) -> list[int]:
    """The step's prompts' indices: a seeded draw without replacement (a function of seed and step, so resume
    replays it)."""
    rng = np.random.default_rng(step_seed(seed, step, 1))
    return [int(i) for i in rng.choice(total, size=min(count, total), replace=False)]


def step_tasks(tasks: list[Task], count: int, seed: int, step: int) -> list[Task]:
    return [tasks[i] for i in step_indices(len(tasks), count, seed, step)]


def step_sampling(n: int, temperature: float, tasks_cfg: TasksConfig, seed: int, step: int) -> Sampling:
    """n samples per prompt, seeded by the step so that a resumed (or regenerated) step draws the same ones."""
    return Sampling(temperature=temperature, n=n, max_new_tokens=tasks_cfg.max_new_tokens,
                    min_new_tokens=tasks_cfg.min_new_tokens, seed=step_seed(seed, step, 3))


def rollout_stream(roles: Roles, train: list[Task], prompts: int, n: int, temperature: float, tasks_cfg: TasksConfig,
                   seed: int, steps: int, max_staleness: int, state: DriverState, checkpoints: Checkpoints,
                   episode: Optional[EpisodeConfig] = None) -> RolloutStream:
    """The stage's rollouts, step by step: each step's prompts (step_tasks) with n samples each (multi-turn
    episodes with `episode`), sampled up to max_staleness steps ahead; a resumed stage takes the queued steps
    from its checkpoint."""
    def draw(step: int) -> tuple[list[Task], Sampling]:
        return step_tasks(train, prompts, seed, step), step_sampling(n, temperature, tasks_cfg, seed, step)

    latest = checkpoints.latest() if state.step > 0 else None
    ahead = latest / AHEAD_FILE if latest is not None else None
    return RolloutStream(roles.pool, draw, steps, max_staleness, state.policy_version,
                         ahead.read_text() if ahead is not None and ahead.is_file() else None, episode)


def rollout_tasks(tasks: list[Task], n: int) -> list[Task]:
    """The task each of n-per-task rollouts (flattened task by task) answers."""
    return [t for t in tasks for _ in range(n)]


def evaluate(roles: Roles, tasks: list[Task], cfg: TasksConfig, seed: int,
             episode: Optional[EpisodeConfig] = None) -> dict[str, float]:
    """Held-out measures of the policy the rollout workers hold: pass@1 and pass@k (every applicable
    verifier passed), the reward model's mean score, and the mean response length; with an episode config,
    the same again with the tools (eval/tools/...: multi-turn episodes) and the episodes' tool use."""
    sampling = Sampling(temperature=cfg.eval_temperature, n=cfg.eval_samples, max_new_tokens=cfg.max_new_tokens,
                        seed=step_seed(seed, 0, 2))
    out = held_out_measures(roles, tasks, cfg, roles.pool.generate([t.prompt_ids for t in tasks], sampling), "eval")
    if episode is not None:
        groups = Episodes(roles.pool, tasks, sampling, episode).result()
        out.update(held_out_measures(roles, tasks, cfg, groups, "eval/tools"))
        out.update({f"eval/tools/{k.removeprefix('episode/')}": v
                    for k, v in episode_stats([r for g in groups for r in g]).items()})
    if roles.suites is not None:
        out.update(roles.suites.measures(roles.pool, roles.rewarder.pool))
    return out


def held_out_measures(roles: Roles, tasks: list[Task], cfg: TasksConfig, groups: list[list[Rollout]],
                      prefix: str) -> dict[str, float]:
    flat = [r for g in groups for r in g]
    scored = roles.rewarder.score([t for t, g in zip(tasks, groups) for _ in g], flat, roles.rewarder.all_terms)
    out = {f"{prefix}/response_tokens": float(np.mean([len(r.response_ids) for r in flat]))}
    if roles.rewarder.pool is not None:              # per verifier: the mean score (the facts verifier's: 1 - Hall)
        out.update({f"{prefix}/{k}": v for k, v in scored.pass_rates.items() if k.endswith("/mean_score")})
        correct = scored.passed.reshape(len(tasks), cfg.eval_samples).sum(1)
        out[f"{prefix}/pass@1"] = float(np.mean([pass_at_k(cfg.eval_samples, int(c), 1) for c in correct]))
        out[f"{prefix}/pass@{cfg.eval_k}"] = float(np.mean([pass_at_k(cfg.eval_samples, int(c), cfg.eval_k)
                                                           for c in correct]))
    if scored.model_scores is not None:
        out[f"{prefix}/reward_model_score"] = float(scored.model_scores.mean())
    return out


def episode_stats(rollouts: list[Rollout]) -> dict[str, float]:
    """Multi-turn episodes: mean model turns, tool calls and tool errors per episode, the share of tool calls
    that ran without error, the share of attempted calls (malformed ones included) that were well formed and
    ran, and the share of response tokens masked out of the loss (observations)."""
    calls = sum(r.env_parts.get("tool_calls", 0.0) for r in rollouts)
    errors = sum(r.env_parts.get("tool_errors", 0.0) for r in rollouts)
    attempts = calls + sum(r.env_parts.get("malformed_calls", 0.0) for r in rollouts)
    tokens = sum(len(r.response_ids) for r in rollouts)
    masked = sum(len(r.response_ids) - sum(r.sampled_mask()) for r in rollouts)
    return {"episode/turns": float(np.mean([r.turns for r in rollouts])), "episode/tool_calls": calls / len(rollouts),
            "episode/tool_errors": errors / len(rollouts),
            "episode/call_ok_share": 1 - errors / calls if calls else 0.0,
            "episode/well_formed_share": (calls - errors) / attempts if attempts else 0.0,
            "episode/masked_share": masked / max(tokens, 1)}


def episode_rewards(rollouts: list[Rollout], episode: Optional[EpisodeConfig]) -> np.ndarray:
    """[N] the episodes' weighted reward parts, sum_k episode.part_weights[k] * parts[k] (0 without)."""
    weights = episode.part_weights if episode is not None else {}
    return np.array([sum(w * r.env_parts.get(k, 0.0) for k, w in weights.items()) for r in rollouts], np.float32)


def rollout_stats(rollouts: list[Rollout], generate_s: float) -> dict[str, float]:
    """tokens_per_s is per second the driver waited for them (with async rollouts, only what the overlap left)."""
    tokens = sum(len(r.response_ids) for r in rollouts)
    out = {"rollout/responses": float(len(rollouts)), "rollout/response_tokens": tokens / len(rollouts),
           "rollout/tokens_per_s": tokens / max(generate_s, 1e-9),
           "rollout/truncated": float(np.mean([r.finish_reason == FinishReason.length for r in rollouts]))}
    if any(r.response_mask is not None for r in rollouts):
        out.update(episode_stats(rollouts))
    return out


@dataclass
class StepRows:
    """A step's rollouts as learner rows, padded with filler rows to a whole number of minibatches.

    tokens [N', T+1], loss_mask [N', T], advantages [N', T]; ref_logprobs and old_logprobs [N', T] or None
    (old_logprobs None: update_policy computes them when the update is not exactly on-policy); N' >= N.
    behaviour_logprobs [N', T]: the rollout workers' own log-probs, which TIS corrects for (off-policy steps)."""
    tokens: np.ndarray
    loss_mask: np.ndarray
    advantages: np.ndarray
    behaviour_logprobs: np.ndarray
    ref_logprobs: Optional[np.ndarray] = None
    old_logprobs: Optional[np.ndarray] = None


def step_rows(rollouts: list[Rollout], advantages: list, pad_id: int, minibatch: int) -> StepRows:
    """advantages[i]: a scalar (every response token of rollout i) or one value per response token."""
    rows = -(-len(rollouts) // minibatch) * minibatch
    sampled = [r.sampled_mask() for r in rollouts]
    tokens, mask = token_rows([r.prompt_ids for r in rollouts], [r.response_ids for r in rollouts], pad_id, rows,
                              response_masks=sampled)
    behaviour = [np.asarray(r.logprobs, np.float32)[np.asarray(m, bool)] for r, m in zip(rollouts, sampled)]
    return StepRows(tokens, mask, per_token(advantages, mask), per_token(behaviour, mask))


def policy_logprobs(policy, tokens: np.ndarray, ranks: int) -> np.ndarray:
    """Collective: the current policy's log-probs of tokens [N, T+1] -> [N, T] (N a multiple of ranks)."""
    parts = policy.sharded(TokenBatch(tokens, None, 0).split(ranks), lambda a, b: a.logprobs.remote(b), "log-probs")
    return np.concatenate([np.stack(p) for p in parts])


def minibatches(rows: StepRows, cfg: PolicyUpdateConfig, seed: int, step: int) -> list[np.ndarray]:
    """Row indices of each optimizer step: ppo_epochs seeded shuffles, each cut into minibatch_size
    chunks; chunks holding only filler rows are left out."""
    out = []
    for epoch in range(cfg.ppo_epochs):
        order = np.random.default_rng(step_seed(seed, step, 10 + epoch)).permutation(len(rows.tokens))
        out += [c for c in np.split(order, len(order) // cfg.minibatch_size) if rows.loss_mask[c].any()]
    return out


def update_policy(policy, rows: StepRows, cfg: PolicyUpdateConfig, ranks: int, seed: int, step: int,
                  off_policy: bool = False) -> dict[str, float]:
    """ppo_epochs passes of minibatch optimizer steps of the clipped surrogate; returns the step's metrics.
    off_policy: the rollouts may be older than the policy (async rollouts), so TIS weights every token by
    min(pi_old / pi_behaviour, cfg.tis_cap). Each minibatch's rows go to the ranks longest first (length_order),
    so that a micro-batch holds rows of like length and is cut to its longest."""
    spec = PolicyLoss(cfg.clip_low, cfg.clip_high, cfg.dual_clip, cfg.kl_coef, cfg.loss_aggregation,
                      cfg.tis_cap if off_policy else None)
    count = len(rows.tokens) // cfg.minibatch_size
    on_policy = cfg.ppo_epochs == 1 and count == 1
    old = rows.old_logprobs
    if old is None and not on_policy:
        old = policy_logprobs(policy, rows.tokens, ranks) * rows.loss_mask
    results: list[PolicyStepResult] = []
    chunks = [c[length_order(rows.loss_mask[c], ranks)] for c in minibatches(rows, cfg, seed, step)]
    for chunk in chunks:
        mask = rows.loss_mask[chunk]

        def part(array: Optional[np.ndarray]) -> Optional[np.ndarray]:
            return None if array is None else array[chunk]

        batch = PolicyBatch(rows.tokens[chunk], mask, rows.advantages[chunk], part(old), part(rows.ref_logprobs),
                            int(mask.sum()), int((mask.sum(1) > 0).sum()),
                            part(rows.behaviour_logprobs) if spec.tis_cap is not None else None)
        results += policy.sharded(batch.split(ranks), lambda a, b: a.train_policy.remote(b, spec), "policy update")
    tokens = max(1, sum(r.tokens for r in results))
    steps = max(1, len(results) // ranks)
    record = {"policy/loss": sum(r.loss_sum for r in results) / steps,
              "policy/entropy": sum(r.entropy_sum for r in results) / tokens,
              "policy/clip_fraction": sum(r.clipped_sum for r in results) / tokens,
              "policy/approx_kl": sum(r.approx_kl_sum for r in results) / tokens,
              "policy/grad_norm": results[-1].grad_norm if results else 0.0,
              "policy/lr": results[-1].lr if results else 0.0,
              "policy/optimizer_steps": steps,
              **padding_shares(rows.loss_mask, chunks, sum(r.padded_cells for r in results))}
    if rows.ref_logprobs is not None:              # measured only where the reference ran
        record["policy/kl_to_ref"] = sum(r.ref_kl_sum for r in results) / tokens
    tis_tokens = sum(r.tis_tokens for r in results)
    if tis_tokens:
        record["tis/mean_ratio"] = sum(r.tis_ratio_sum for r in results) / tis_tokens
        record["tis/truncated_share"] = sum(r.tis_truncated_sum for r in results) / tis_tokens
    return record


def padding_shares(loss_mask: np.ndarray, chunks: list[np.ndarray], cells: int) -> dict[str, float]:
    """Share of the update's forward-pass cells (rows x columns) that hold no token: with every row padded to
    the step's longest (before), and as the learners ran it, each micro-batch cut to its own longest (cells)."""
    ends = row_ends(loss_mask)                                                                   # [N']
    real = float(sum(ends[c].sum() for c in chunks))
    before = float(sum(len(c) for c in chunks) * loss_mask.shape[1])
    return {"batch/padding_share_before": 1 - real / max(before, 1.0), "batch/padding_share": 1 - real / max(cells, 1)}


def begin_stage(roles: Roles, checkpoints: Checkpoints, log: MetricsLog, stage: str, resume: bool,
                held_out: list[Task], tasks_cfg: TasksConfig, seed: int,
                episode: Optional[EpisodeConfig] = None) -> DriverState:
    """Resume from the latest checkpoint (policy, critic, driver state; the workers get its weights), or
    start at step 0 with a held-out evaluation of the starting policy."""
    state = resume_stage(roles.policy, checkpoints, log, stage, resume)
    if state is not None:
        if roles.critic is not None:
            latest = str(checkpoints.latest() / "critic")
            roles.critic.every_rank(lambda a: a.load.remote(latest), "load critic checkpoint")
        roles.pool.sync_weights(state.policy_version)
        return state
    log.write(0, evaluate(roles, held_out, tasks_cfg, seed, episode))
    return DriverState(step=0, tokens_seen=0, policy_version=0)


def save_stage_checkpoint(roles: Roles, checkpoints: Checkpoints, state: DriverState, tokenizer,
                          stream: Optional[RolloutStream] = None) -> Path:
    """Collective on the policy (and critic); with a stream, the rollouts it holds for the steps ahead too."""
    files = {AHEAD_FILE: stream.ahead_json()} if stream is not None else {}
    return save_checkpoint(roles.policy, checkpoints, state, tokenizer, roles.critic, files)


def finish_stage(checkpoints: Checkpoints, log: MetricsLog, stage_dir: Path, title: str, keys: list[str]) -> Path:
    """Plot the stage's curves and publish its last checkpoint's policy as <stage_dir>/model."""
    log.close()
    plot_curves(read_metrics(log.path), keys, stage_dir / "curves.png", title)
    model_dir = stage_dir / "model"
    publish_dir(checkpoints.latest() / "hf", model_dir)
    return model_dir
