"""Which actors a job starts, with the CPUs/GPUs each reserves, checked against the cluster."""
from __future__ import annotations

import os
from dataclasses import dataclass

from cluster.job import JobConfig
from cluster.stages import ROLLOUT_STAGES, Stage


@dataclass
class RolePlan:
    role: str
    count: int
    cpus_each: float
    gpus_each: float
    stages: list[str]


def stage_roles(job: JobConfig, stage: Stage) -> list[tuple[str, int, float, float]]:
    """(role, actors, CPUs each, GPUs each) that `stage` runs at once."""
    lr, ro, pool = job.learner, job.rollout, job.verifier_pool
    learner = ("learner", lr.num_ranks, lr.cpus_per_rank, lr.gpus_per_rank)
    if stage in (Stage.pretrain, Stage.reward_model, Stage.dpo):
        return [learner]
    if stage not in ROLLOUT_STAGES:
        return []
    # colocated rollout workers take the same room, inside the learners' bundles
    roles = [learner, ("rollout", ro.num_workers, ro.cpus_per_worker, ro.gpus_per_worker)]
    if job.rewards.verifiers:
        roles.append(("verifier", pool.num_workers, pool.cpus_per_worker, 0.0))
    rm = job.rewards.reward_model
    if rm is not None and rm.http is None and not (rm.from_stage and stage == Stage.sft):
        roles.append(("reward_model", 1, rm.cpus, rm.gpus))
    if stage == Stage.grpo or stage in job.ppo_sections:
        roles.append(("reference", 1, job.reference.cpus, job.reference.gpus))
    if stage in job.ppo_sections:
        roles.append(("critic", lr.num_ranks, lr.cpus_per_rank, lr.gpus_per_rank))
    return roles


def plan_roles(job: JobConfig) -> list[RolePlan]:
    """Every role the job starts, with the stages that start it (roles live only during their stages)."""
    plans: dict[str, RolePlan] = {}
    for stage in job.stages:
        for role, count, cpus, gpus in stage_roles(job, stage):
            plan = plans.setdefault(role, RolePlan(role, count, cpus, gpus, []))
            plan.stages.append(stage.value)
    return list(plans.values())


def cluster_resources() -> dict[str, float]:
    import ray
    return ray.cluster_resources()


def peak_needs(roles: list[RolePlan]) -> dict[str, float]:
    """CPUs and GPUs of the busiest stage (the roles of one stage run at once; stages run one after another)."""
    stages = {s for r in roles for s in r.stages}
    return {key: max((sum(r.count * getattr(r, attr) for r in roles if s in r.stages) for s in stages), default=0.0)
            for key, attr in (("CPU", "cpus_each"), ("GPU", "gpus_each"))}


def plan_problems(roles: list[RolePlan], resources: dict[str, float]) -> list[str]:
    return [f"needs {need:g} {key} at its busiest stage, the cluster has {resources.get(key, 0.0):g}"
            for key, need in peak_needs(roles).items() if need > resources.get(key, 0.0) + 1e-9]


def check_plan(job: JobConfig) -> None:
    problems = plan_problems(plan_roles(job), cluster_resources())
    if problems:
        raise RuntimeError("the cluster cannot hold this job: " + "; ".join(problems))


def format_plan(roles: list[RolePlan], resources: dict[str, float], where: str) -> str:
    lines = [f"cluster: {where} ({resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU)",
             f"{'role':<12}{'actors':>7}{'CPU each':>10}{'GPU each':>10}  stages"]
    for r in roles:
        lines.append(f"{r.role:<12}{r.count:>7}{r.cpus_each:>10g}{r.gpus_each:>10g}  {', '.join(r.stages) or '-'}")
    peak = peak_needs(roles)
    lines.append(f"{'peak stage':<12}{'':>7}{peak['CPU']:>10g}{peak['GPU']:>10g}")
    problems = plan_problems(roles, resources)
    lines.append("fits" if not problems else "DOES NOT FIT: " + "; ".join(problems))
    return "\n".join(lines)


def local_resources(num_cpus: int | None) -> dict[str, float]:
    """What an embedded local Ray would offer, without starting it."""
    import torch
    return {"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
