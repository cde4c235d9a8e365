"""Rollouts for the steps ahead: the workers sample steps s+1 .. s+k while the learners train on step s
(asynchronous rollouts, off-policy by at most k weight syncs; k = async_rollout.max_staleness, 0 is the
synchronous loop: each step's rollouts are sampled, then trained on, then the weights synced).

    stream.take(step)           # step's rollouts; first queues the generate calls of the steps up to step + k
    stream.sync_weights(v)      # the learners' weights -> workers, queued after the generate calls in flight
    stream.ahead_json()         # the rollouts of the steps queued ahead, for a checkpoint (resume replays them)

A worker runs its calls in the order they were sent, so a generate queued before a sync samples the old
weights and one queued after it the new: the staleness of every rollout follows from the schedule, never
from timing, and a seeded run gives the same rollouts whatever the machine's speed. Each rollout carries
the version of the weights that sampled it; a group more than k syncs behind is sampled again before any
loss sees it."""
from __future__ import annotations

import bisect
import dataclasses
import json
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from data.tasks import Task
from rollout.types import FinishReason, Rollout, Sampling
from tools.config import EpisodeConfig

AHEAD_FILE = "rollouts_ahead.json"


@dataclass
class StepRollouts:
    """One step's rollouts: n per task, task by task (rollout i answers tasks[i // n])."""
    tasks: list[Task]
    rollouts: list[Rollout]
    staleness: np.ndarray        # [len(rollouts)] int: weight syncs between sampling and the step's update
    regenerated: int             # groups sampled again because they were past the bound


def with_provenance(tasks: list[Task], groups: list[list[Rollout]]) -> list[Rollout]:
    """The pool's groups flattened task by task, each rollout carrying its task's retrieved chunk ids."""
    return [dataclasses.replace(r, provenance=t.provenance) if t.provenance else r
            for t, group in zip(tasks, groups) for r in group]


class Episodes:
    """n multi-turn episodes per task in flight, regrouped task by task when they are back."""

    def __init__(self, pool, tasks: list[Task], s: Sampling, cfg: EpisodeConfig):
        self.n = s.n
        self.call = pool.submit_episodes([t for t in tasks for _ in range(s.n)], dataclasses.replace(s, n=1), cfg)

    def result(self) -> list[list[Rollout]]:
        flat = self.call.result()
        return [flat[i:i + self.n] for i in range(0, len(flat), self.n)]


class RolloutStream:
    def __init__(self, pool, draw: Callable[[int], tuple[list[Task], Sampling]], last_step: int,
                 max_staleness: int, version: int, ahead: Optional[str] = None,
                 episode: Optional[EpisodeConfig] = None):
        """draw(step) -> the step's tasks and sampling (a function of the step, so a regenerated or
        resumed step draws the same); last_step: the stage's last step (nothing is queued past it);
        version: the weights the workers hold now; ahead: ahead_json() of the checkpoint resumed from;
        episode: each sample is a multi-turn episode with these tools (None: one turn)."""
        if max_staleness < 0:
            raise ValueError(f"max_staleness={max_staleness}: must be >= 0")
        self.pool, self.draw, self.last_step, self.max_staleness = pool, draw, last_step, max_staleness
        self.episode = episode
        self.synced = [version]                     # every version the workers were sent, oldest first
        self.queued: dict[int, object] = {}         # step -> a PendingGenerate, or its groups once known
        if ahead is not None:
            saved = json.loads(ahead)
            self.synced = saved["synced"]
            self.queued = {int(step): [[_rollout(r) for r in g] for g in groups]
                           for step, groups in saved["steps"].items()}

    def take(self, step: int) -> StepRollouts:
        for s in range(step, min(step + self.max_staleness, self.last_step - 1) + 1):
            if s not in self.queued:
                self.queued[s] = self._submit(*self.draw(s))
        tasks, sampling = self.draw(step)
        groups = self._groups(step)
        del self.queued[step]
        ages = [[self.staleness(r.policy_version) for r in g] for g in groups]
        stale = [i for i, a in enumerate(ages) if max(a) > self.max_staleness]
        if stale:  # never trained on: sampled again from the weights the workers hold now
            for i, group in zip(stale, self._submit([tasks[i] for i in stale], sampling).result()):
                groups[i], ages[i] = group, [self.staleness(r.policy_version) for r in group]
        return StepRollouts(tasks, with_provenance(tasks, groups), np.array([a for g in ages for a in g]), len(stale))

    def _submit(self, tasks: list[Task], sampling: Sampling):
        if self.episode is None:
            return self.pool.submit([t.prompt_ids for t in tasks], sampling)
        return Episodes(self.pool, tasks, sampling, self.episode)

    def staleness(self, version: int) -> int:
        """Weight syncs sent to the workers after the one that gave them `version` (versions only grow)."""
        return len(self.synced) - bisect.bisect_right(self.synced, version)

    def sync_weights(self, version: int) -> None:
        """The learners' weights -> every worker, after the generate calls already queued on it."""
        self.pool.sync_weights(version)
        self.synced.append(version)

    def ahead_json(self) -> str:
        """Waits for the steps queued ahead; their rollouts and the sync history, as JSON for a checkpoint."""
        steps = {str(s): [[_record(r) for r in g] for g in self._groups(s)] for s in sorted(self.queued)}
        return json.dumps({"synced": self.synced, "steps": steps})

    def _groups(self, step: int) -> list[list[Rollout]]:
        if not isinstance(self.queued[step], list):
            self.queued[step] = self.queued[step].result()
        return self.queued[step]


def _record(r: Rollout) -> dict:
    return {**dataclasses.asdict(r), "finish_reason": r.finish_reason.value, "provenance": list(r.provenance)}


def _rollout(d: dict) -> Rollout:
    return Rollout(**{**d, "finish_reason": FinishReason(d["finish_reason"]), "provenance": tuple(d["provenance"])})


def staleness_record(batch: StepRollouts, max_staleness: int) -> dict[str, float]:
    """The step's staleness histogram (share of rollouts d syncs behind, d = 0 .. max_staleness), its mean,
    and how many groups were sampled again."""
    out = {f"async/staleness_{d}": float(np.mean(batch.staleness == d)) for d in range(max_staleness + 1)}
    return {**out, "async/staleness_mean": float(batch.staleness.mean()),
            "async/regenerated_groups": float(batch.regenerated)}
