"""The reward-model role: one RewardModelWorker actor holding R_phi, called with a bounded wait.

    rm = RewardModelActor(model_dir, spec)
    scores = rm.score(prompt_ids, response_ids)     # one float per pair"""
from __future__ import annotations

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from cluster.actor_group import RoleError
from rewards.config import RewardModelSpec
from rewards.model_worker import RewardModelWorker


class RewardModelActor:
    def __init__(self, model_dir: str, spec: RewardModelSpec, timeout_s: float = 600.0):
        self.timeout_s = timeout_s
        threads = max(1, int(spec.cpus))
        self.actor = ray.remote(RewardModelWorker).options(
            num_cpus=spec.cpus, num_gpus=spec.gpus, max_concurrency=1,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}},
        ).remote(model_dir, spec.batch_size, threads)

    def score(self, prompts: list[list[int]], responses: list[list[int]]) -> list[float]:
        try:
            return ray.get(self.actor.score.remote(prompts, responses), timeout=self.timeout_s)
        except GetTimeoutError:
            raise RoleError(f"reward model: scoring {len(prompts)} pairs did not finish within {self.timeout_s:.0f}s") from None
        except RayActorError as e:
            raise RoleError(f"reward model worker died while scoring: {e}") from None

    def shutdown(self) -> None:
        ray.kill(self.actor)
