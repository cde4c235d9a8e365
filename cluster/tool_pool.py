"""The tool workers: a CPU pool of Ray actors that run the tool calls of every rollout worker's episodes, sized
by `episode.tool_workers`, apart from the engines (a tool that hangs, crashes or eats memory takes down a tool
worker, never a rollout worker).

    tools = ToolPool(episode_cfg)
    rollout_pool.attach_tools(tools)        # the rollout workers' episodes send their calls here
    tools.heal()                            # between steps: replace workers that died or hold hung calls

A call is bounded on both sides: the tool worker stops waiting at the tool's timeout (run_tool), and the
rollout worker (rollout.episodes.RemoteTools) a little later: a worker that died or hangs costs that call an
error observation."""
from __future__ import annotations

import logging

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.placement_group import remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.actor_group import Bundle, RoleError, place_role
from tools.config import EpisodeConfig
from tools.environment import bind_tools
from tools.worker import ToolWorker

log = logging.getLogger(__name__)
START_TIMEOUT_S = 120.0
MAX_STUCK_CALLS = 4          # hung tool threads a worker may hold before it is replaced


class ToolPool:
    def __init__(self, cfg: EpisodeConfig):
        if cfg.tool_workers < 1:
            raise ValueError("ToolPool: episode.tool_workers must be >= 1")
        bind_tools(cfg)        # a tool that resolves to nothing fails here, before any actor starts
        self.cfg = cfg
        self.restarts = 0
        self.placement = place_role("tools", [Bundle(cfg.cpus_per_tool_worker, 0)] * cfg.tool_workers,
                                    START_TIMEOUT_S)
        self.workers = [self._start(i) for i in range(cfg.tool_workers)]
        self._wait([w.stuck.remote() for w in self.workers], "start")

    def _start(self, index: int):
        return ray.remote(ToolWorker).options(
            num_cpus=self.cfg.cpus_per_tool_worker, num_gpus=0, max_concurrency=self.cfg.calls_per_tool_worker,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}},
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=index),
        ).remote(self.cfg)

    def heal(self) -> int:
        """Replace each worker that died or holds more than MAX_STUCK_CALLS hung calls; returns how many."""
        replaced = 0
        for i, worker in enumerate(self.workers):
            try:
                healthy = ray.get(worker.stuck.remote(), timeout=START_TIMEOUT_S) <= MAX_STUCK_CALLS
            except (RayActorError, GetTimeoutError):
                healthy = False
            if not healthy:
                log.warning("tool worker %d died or holds hung calls; replacing it", i)
                ray.kill(worker)
                self.workers[i] = self._start(i)
                replaced += 1
        self.restarts += replaced
        if replaced:
            self._wait([w.stuck.remote() for w in self.workers], "restart")
        return replaced

    def _wait(self, refs: list, what: str) -> list:
        try:
            return ray.get(refs, timeout=START_TIMEOUT_S)
        except (RayActorError, GetTimeoutError) as e:
            raise RoleError(f"tool workers: '{what}' did not finish within {START_TIMEOUT_S:.0f}s: {e}") from None

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        remove_placement_group(self.placement)
