"""A role's actors, one per placement-group bundle, with call sites that say how work is spread.

    learners.every_rank(lambda a: a.save.remote(path), "save checkpoint")        # all ranks, same call
    learners.sharded(shards, lambda a, s: a.train_step.remote(s), "train step")  # one shard per rank
    learners.rank0(lambda a: a.node_address.remote(), "find rendezvous port")     # rank 0 only

Every wait is bounded: a call that does not finish within the group's timeout raises an error
naming the role, the ranks still busy and what they were doing."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

A = TypeVar("A")


@dataclass
class Bundle:
    cpus: float
    gpus: float

    def resources(self) -> dict[str, float]:
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus else {})}


class RoleError(RuntimeError):
    """A role's call failed, timed out or could not be placed."""


def place_role(role: str, bundles: list[Bundle], timeout_s: float) -> PlacementGroup:
    """Reserve one bundle per actor of `role`, packed onto as few nodes as possible."""
    group = placement_group([b.resources() for b in bundles], strategy="PACK")
    try:
        ray.get(group.ready(), timeout=timeout_s)
    except GetTimeoutError:
        remove_placement_group(group)
        need = [b.resources() for b in bundles]
        raise RoleError(f"cannot place role '{role}' within {timeout_s:.0f}s: it needs {need}, "
                        f"the cluster has {ray.available_resources()} free") from None
    return group


class ActorGroup(Generic[A]):
    def __init__(self, role: str, actor_class: type[A], bundles: list[Bundle], args_for_rank: Callable[[int], tuple],
                 timeout_s: float, env: dict[str, str] | None = None, room: Bundle | None = None):
        """bundles: what each rank's actor takes; room: more reserved in each bundle for another role's
        actor placed beside it (colocation)."""
        self.role, self.timeout_s = role, timeout_s
        reserve = bundles if room is None else [Bundle(b.cpus + room.cpus, b.gpus + room.gpus) for b in bundles]
        self.placement = place_role(role, reserve, timeout_s)
        remote_class = ray.remote(actor_class)
        self.actors = [
            remote_class.options(
                num_cpus=b.cpus, num_gpus=b.gpus, name=None, max_concurrency=1,
                runtime_env={"env_vars": env or {}},
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=rank),
            ).remote(*args_for_rank(rank))
            for rank, b in enumerate(bundles)]

    def __len__(self) -> int:
        return len(self.actors)

    def every_rank(self, call: Callable[[Any], ray.ObjectRef], what: str) -> list:
        """The same call on every rank (collectives such as a ZeRO-3 gather need all of them)."""
        return self.start_every_rank(call).result(what)

    def start_every_rank(self, call: Callable[[Any], ray.ObjectRef]) -> "Pending":
        """every_rank without waiting: for collectives whose other members are in another role."""
        return Pending(self, [call(a) for a in self.actors])

    def sharded(self, shards: Sequence, call: Callable[[Any, Any], ray.ObjectRef], what: str) -> list:
        """Shard r goes to rank r."""
        if len(shards) != len(self.actors):
            raise ValueError(f"{self.role}: {len(shards)} shards for {len(self.actors)} ranks")
        return self._wait([call(a, s) for a, s in zip(self.actors, shards)], what)

    def rank0(self, call: Callable[[Any], ray.ObjectRef], what: str) -> Any:
        return self._wait([call(self.actors[0])], what)[0]

    def _wait(self, refs: list[ray.ObjectRef], what: str) -> list:
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=self.timeout_s)
        if pending:
            busy = [i for i, r in enumerate(refs) if r in pending]
            for r in pending:
                ray.cancel(r, force=True)
            raise RoleError(f"{self.role} rank(s) {busy}: '{what}' did not finish within {self.timeout_s:.0f}s")
        results = []
        for rank, ref in enumerate(refs):
            try:
                results.append(ray.get(ref))
            except RayActorError as e:
                raise RoleError(f"{self.role} rank {rank} died during '{what}': {e}") from None
            except RayTaskError as e:
                raise RoleError(f"{self.role} rank {rank} failed in '{what}': {e}") from e.cause
        return results

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        remove_placement_group(self.placement)


@dataclass
class Pending:
    """Calls in flight on every rank of a group; result() waits for them, bounded as any group call."""
    group: ActorGroup
    refs: list

    def result(self, what: str) -> list:
        return self.group._wait(self.refs, what)
