"""The job config's checks of the tasks and the alignment stages (sft, grpo, rsft, ppo, dpo): combinations
their types alone cannot rule out. cluster/config.py calls them as it validates a job."""
from __future__ import annotations

from typing import Callable, Optional

from cluster.job import JobConfig
from cluster.stages import Stage
from data.config import TaskKind
from tools.config import EpisodeConfig
from tools.demonstrations import demonstration_fits
from tools.environment import check_episode
from trainers.align_config import CriticInit, RewardTerms


def validate_alignment(job: JobConfig, need: Callable[[bool, str], None]) -> None:
    """The tasks and the sft, grpo, rsft, ppo and dpo stages; need(ok, message) raises the config error."""
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
        problem = None
        try:
            if e is not None:
                check_episode(e, job.model.max_seq_len, job.rollout.lora_rank)
        except (LookupError, ValueError) as error:
            problem = str(error)
        need(problem is None, f"{key}.episode: {problem}")

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
