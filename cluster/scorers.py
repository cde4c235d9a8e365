"""Forward-only roles, one actor each, called with a bounded wait: the reward model R_phi and the
frozen reference policy pi_ref.

    rm = RewardModelActor(model_dir, spec, precision)
    scores = rm.score(prompt_ids, response_ids)     # one float per pair
    ref = ReferenceActor(model_dir, cfg, precision)
    ref_logprobs = ref.logprobs(tokens)             # [B, T]"""
from __future__ import annotations

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from cluster.actor_group import RoleError
from modeling.config import Precision
from rewards.config import RewardModelSpec
from rewards.model_worker import RewardModelWorker
from trainers.align_config import ReferenceConfig
from trainers.learners.reference import ReferencePolicy


def _start(worker_class, cpus: float, gpus: float, *args):
    """The actor reserves `gpus` and is told so (it computes on that GPU when > 0)."""
    threads = max(1, int(cpus))
    return ray.remote(worker_class).options(
        num_cpus=cpus, num_gpus=gpus, max_concurrency=1,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}},
    ).remote(*args, gpus, threads)


def _bounded(ref, role: str, what: str, timeout_s: float):
    try:
        return ray.get(ref, timeout=timeout_s)
    except GetTimeoutError:
        raise RoleError(f"{role}: {what} did not finish within {timeout_s:.0f}s") from None
    except RayActorError as e:
        raise RoleError(f"{role} worker died during {what}: {e}") from None


class RewardModelActor:
    def __init__(self, model_dir: str, spec: RewardModelSpec, precision: Precision = Precision.fp32,
                 timeout_s: float = 600.0):
        self.timeout_s = timeout_s
        self.actor = _start(RewardModelWorker, spec.cpus, spec.gpus, model_dir, spec.batch_size, precision)

    def score(self, prompts: list[list[int]], responses: list[list[int]]) -> list[float]:
        return _bounded(self.actor.score.remote(prompts, responses), "reward model",
                        f"scoring {len(prompts)} pairs", self.timeout_s)

    def shutdown(self) -> None:
        ray.kill(self.actor)


class ReferenceActor:
    def __init__(self, model_dir: str, cfg: ReferenceConfig, precision: Precision, timeout_s: float = 600.0):
        self.timeout_s = timeout_s
        self.actor = _start(ReferencePolicy, cfg.cpus, cfg.gpus, model_dir, cfg.batch_size, precision)

    def logprobs(self, tokens: np.ndarray, ends: np.ndarray | None = None) -> np.ndarray:
        """ends: ReferencePolicy.logprobs' (the columns each row needs; None: all)."""
        return _bounded(self.actor.logprobs.remote(tokens, ends), "reference policy",
                        f"log-probs of {len(tokens)} rows", self.timeout_s)

    def shutdown(self) -> None:
        ray.kill(self.actor)
