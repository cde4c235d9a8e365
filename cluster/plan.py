"""Which actors a job starts, with the CPUs/GPUs each reserves, checked against the cluster."""
from __future__ import annotations

import os
from dataclasses import dataclass

from cluster.config import JobConfig, Stage


@dataclass
class RolePlan:
    role: str
    count: int
    cpus_each: float
    gpus_each: float
    stages: list[str]


def plan_roles(job: JobConfig) -> list[RolePlan]:
    uses = [s.value for s in job.stages if s in (Stage.pretrain, Stage.reward_model)]
    learners = job.learner
    return [RolePlan("learner", learners.num_ranks if uses else 0, learners.cpus_per_rank, learners.gpus_per_rank, uses)]


def cluster_resources() -> dict[str, float]:
    import ray
    return ray.cluster_resources()


def plan_problems(roles: list[RolePlan], resources: dict[str, float]) -> list[str]:
    problems = []
    for key, attr in (("CPU", "cpus_each"), ("GPU", "gpus_each")):
        need = sum(r.count * getattr(r, attr) for r in roles)
        if need > resources.get(key, 0.0) + 1e-9:
            problems.append(f"needs {need:g} {key} in all, the cluster has {resources.get(key, 0.0):g}")
    return problems


def check_plan(job: JobConfig) -> None:
    problems = plan_problems(plan_roles(job), cluster_resources())
    if problems:
        raise RuntimeError("the cluster cannot hold this job: " + "; ".join(problems))


def format_plan(roles: list[RolePlan], resources: dict[str, float], where: str) -> str:
    lines = [f"cluster: {where} ({resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU)",
             f"{'role':<12}{'actors':>7}{'CPU each':>10}{'GPU each':>10}  stages"]
    for r in roles:
        lines.append(f"{r.role:<12}{r.count:>7}{r.cpus_each:>10g}{r.gpus_each:>10g}  {', '.join(r.stages) or '-'}")
    need_cpu = sum(r.count * r.cpus_each for r in roles)
    need_gpu = sum(r.count * r.gpus_each for r in roles)
    lines.append(f"{'total':<12}{sum(r.count for r in roles):>7}{need_cpu:>10g}{need_gpu:>10g}")
    problems = plan_problems(roles, resources)
    lines.append("fits" if not problems else "DOES NOT FIT: " + "; ".join(problems))
    return "\n".join(lines)


def local_resources(num_cpus: int | None) -> dict[str, float]:
    """What an embedded local Ray would offer, without starting it."""
    import torch
    return {"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
