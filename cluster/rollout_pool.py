"""The rollout workers, kept in step with the learners.

    pool.connect_learners(learners)        # each worker's route: shared (learner rank 0's device) or wire
    pool.sync_weights(version)             # learner rank 0 -> every worker, in buckets; all learner ranks gather
    pool.generate(prompts, sampling)       # prompts spread over the workers by load; n Rollouts per prompt
    pool.submit(prompts, sampling)         # the same, returning at once; .result() waits (async rollouts)
    pool.submit_episodes(tasks, s, cfg)    # multi-turn episodes with tools, one Rollout per task; .result() waits
    pool.free_gpu()                        # colocated mode: the engines sleep while the learners train

A worker that dies during generate is restarted, brought to the current weights, and given its
prompts again. Every wait is bounded by rollout.timeout_s and names the worker when it runs out."""
from __future__ import annotations

import dataclasses
import logging

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.placement_group import PlacementGroup, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.actor_group import Bundle, RoleError, place_role
from data.tasks import Task
from rollout.config import PromptOverflow, RolloutConfig
from rollout.types import Rollout, Sampling
from rollout.weight_sync import Route, TensorSpec, members, plan_buckets, plan_routes
from rollout.worker import RolloutWorker
from tools.config import EpisodeConfig

log = logging.getLogger(__name__)
MAX_RESTARTS_PER_CALL = 3


def worker_env(cfg: RolloutConfig) -> dict[str, str]:
    return {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": str(cfg.engine_threads), "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1"}


class RolloutPool:
    def __init__(self, cfg: RolloutConfig, model_dir: str, context_len: int, shared: PlacementGroup | None = None,
                 wait: bool = True):
        """shared: another role's placement group whose bundle i also holds worker i (colocation);
        None reserves the workers' own. wait=False returns while the engines start (a stage starts its
        learners meanwhile); wait_started() then blocks until they are up."""
        self.cfg, self.model_dir, self.context_len = cfg, model_dir, context_len
        self.version = 0
        self.restarts = 0
        self.asleep = False
        self.learners = None
        self.buckets: list[list[TensorSpec]] = []
        self.routes: list[Route] = []                 # per worker, once connected
        self.sync_bytes = 0
        self.tools = None                             # a ToolPool, once attached: episodes send their calls there
        bundle = Bundle(cfg.cpus_per_worker, cfg.gpus_per_worker)
        self.owns_placement = shared is None
        self.placement = place_role("rollout", [bundle] * cfg.num_workers, cfg.timeout_s) if shared is None else shared
        self.workers = [self._start(i) for i in range(cfg.num_workers)]
        self._starting = [w.policy_version.remote() for w in self.workers]
        if wait:
            self.wait_started()

    def wait_started(self) -> None:
        """Bounded: every engine is up (a worker that failed to start fails here, with its error)."""
        self._wait(self._starting, "start the engine")

    def _start(self, index: int):
        return ray.remote(RolloutWorker).options(
            num_cpus=self.cfg.cpus_per_worker, num_gpus=self.cfg.gpus_per_worker, max_concurrency=1,
            runtime_env={"env_vars": worker_env(self.cfg)},
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=index),
        ).remote(index, self.model_dir, self.cfg, 0)

    # -- weight sync ---------------------------------------------------------------------------------
    def connect_learners(self, learners) -> None:
        """Form the sync link: learner rank 0 sends; a worker on its GPU (colocated) or its node's CPU maps its
        buffers (shared route), the others join a broadcast group of their own (wire route)."""
        sender = learners.rank0(lambda a: a.device_id.remote(), "report device")
        routes = plan_routes(sender, self._wait([w.device_id.remote() for w in self.workers], "report device"))
        specs = learners.rank0(lambda a: a.weight_specs.remote(), "list weights")
        learner_vocab = next(sp.shape[0] for sp in specs if sp.name.endswith("embed_tokens.weight"))
        for i, vocab in enumerate(self._wait([w.vocab_size.remote() for w in self.workers], "report vocabulary")):
            if vocab != learner_vocab:
                raise ValueError(f"rollout worker {i} serves a vocabulary of {vocab} tokens, the learners "
                                 f"{learner_vocab}: they hold different models or tokenizers")
        self.learners = learners
        self.routes = routes
        self.buckets = plan_buckets(specs, self.cfg.sync_bucket_mb << 20)
        host, port = learners.rank0(lambda a: a.node_address.remote(), "find a sync port")
        places, wire_world, shared = members(routes)
        joining = learners.start_every_rank(lambda a: a.join_weight_sync.remote(host, port, wire_world, shared))
        self._wait([w.join_sync_group.remote(host, port, m, wire_world, self.cfg.timeout_s)
                    for w, m in zip(self.workers, places)], "join the weight-sync group")
        joining.result("join the weight-sync group")

    def sync_weights(self, version: int) -> None:
        """Push the learners' current weights to every worker and stamp them `version`: every weight in
        buckets, or (rollout.lora_rank > 0) the LoRA adapter alone. sync_bytes says what one worker got."""
        if self.learners is None:
            raise RuntimeError("sync_weights before connect_learners")
        if self.asleep:
            self._wait([w.wake_up.remote(["weights"]) for w in self.workers], "wake up (weights)")
        if self.cfg.lora_rank:
            # the frozen base is the same on both sides; rank 0 holds the whole adapter (ZeRO 0-2)
            tensors, config = self.learners.rank0(lambda a: a.adapter_payload.remote(), "read the adapter")
            shared = ray.put(tensors)
            self._wait([w.load_adapter.remote(shared, config, version) for w in self.workers], "load the adapter")
            self.sync_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
        else:
            pushing = self.learners.start_every_rank(lambda a: a.push_weights.remote(self.buckets, version))
            self._wait([w.receive_weights.remote(self.buckets, version) for w in self.workers], "receive weights")
            pushing.result("push weights")
            self.sync_bytes = sum(spec.nbytes for bucket in self.buckets for spec in bucket)
        self.version = version
        self._wake()

    def free_gpu(self) -> None:
        """Colocated mode: every engine sleeps (weights to host memory, KV cache freed) so that the learners
        sharing its GPU can train; sync_weights and generate wake it. Without rollout.colocate: nothing."""
        if self.cfg.colocate and not self.asleep:
            self._wait([w.sleep.remote() for w in self.workers], "sleep")
            self.asleep = True

    def _wake(self) -> None:
        if self.asleep:
            self._wait([w.wake_up.remote(None) for w in self.workers], "wake up")
            self.asleep = False

    def attach_tools(self, tools) -> None:
        """The ToolPool (cluster/tool_pool.py) that runs the tool calls of every worker's episodes."""
        self.tools = tools

    # -- generation ----------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], s: Sampling) -> list[list[Rollout]]:
        return self.submit(prompts, s).result()

    def submit(self, prompts: list[list[int]], s: Sampling) -> "PendingGenerate":
        """Start generating and return at once: the workers take the call after the ones already queued on
        them (a weight sync queued earlier applies first), so a driver can train while they sample."""
        if not prompts:
            raise ValueError("generate: the prompt list is empty")
        prompts = fit_prompts(prompts, s.max_new_tokens, self.context_len, self.cfg.prompt_overflow)
        self._wake()
        shares = spread_by_load([len(p) + s.n * s.max_new_tokens for p in prompts], len(self.workers))
        return PendingGenerate(self, len(prompts), shares,
                               lambda worker, indices: worker.generate.remote([prompts[i] for i in indices], s))

    def submit_episodes(self, tasks: list[Task], s: Sampling, cfg: EpisodeConfig) -> "PendingGenerate":
        """One multi-turn episode per task (rollout.episodes), spread over the workers by their prompts' length;
        result() gives one Rollout per task. Like submit, it returns at once."""
        if not tasks:
            raise ValueError("run_episodes: the task list is empty")
        room = min(cfg.max_episode_tokens, self.context_len)
        too_long = [i for i, t in enumerate(tasks) if len(t.prompt_ids) >= room]
        if too_long:
            raise ValueError(f"task {too_long[0]}: its prompt of {len(tasks[too_long[0]].prompt_ids)} tokens leaves "
                             f"no room in max_episode_tokens={cfg.max_episode_tokens} (context {self.context_len})")
        self._wake()
        cfg = dataclasses.replace(cfg, max_episode_tokens=room)       # an episode never outgrows the context
        if self.tools is not None:
            self.tools.heal()                                         # no call goes to a dead or stuck worker
        tool_workers = self.tools.workers if self.tools is not None else None
        shares = spread_by_load([len(t.prompt_ids) + room for t in tasks], len(self.workers))
        return PendingGenerate(self, len(tasks), shares,
                               lambda worker, indices: worker.run_episodes.remote([tasks[i] for i in indices], s, cfg,
                                                                                  tool_workers))

    def restart(self, index: int, dead=None) -> None:
        """Replace worker `index` and bring it to the current weights before it takes work. dead: the handle
        that failed; when it is no longer worker `index` (an earlier call already replaced it), nothing."""
        if dead is not None and dead is not self.workers[index]:
            return
        log.warning("rollout worker %d died; restarting it at policy version %d", index, self.version)
        ray.kill(self.workers[index])
        self.workers[index] = self._start(index)
        self.restarts += 1
        self._wait([self.workers[index].policy_version.remote()], "restart")
        if self.learners is not None and self.version > 0:
            self.connect_learners(self.learners)  # the old group lost a member: everyone re-forms it
            self.sync_weights(self.version)

    def versions(self) -> list[int]:
        return self._wait([w.policy_version.remote() for w in self.workers], "report version")

    def _wait(self, refs: list, what: str) -> list:
        try:
            return ray.get(refs, timeout=self.cfg.timeout_s)
        except GetTimeoutError:
            busy = [i for i, r in enumerate(refs) if r not in ray.wait(refs, num_returns=len(refs), timeout=0)[0]]
            raise RoleError(f"rollout worker(s) {busy}: '{what}' did not finish within {self.cfg.timeout_s:.0f}s") from None
        except RayActorError as e:
            raise RoleError(f"a rollout worker died during '{what}': {e}") from None

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w)
        if self.owns_placement:
            remove_placement_group(self.placement)


class PendingGenerate:
    """One call in flight on the workers, one result per input (a group of rollouts per prompt, or one episode per
    task). result() waits (each wait bounded by rollout.timeout_s); a share whose worker died is given again to its
    replacement, at the weights the pool holds then."""

    def __init__(self, pool: RolloutPool, count: int, shares: list[list[int]], send):
        """send(worker, indices) -> the ObjectRef of that worker's call on those inputs."""
        self.pool, self.count, self.send = pool, count, send
        self.pending = {}
        for w, indices in enumerate(shares):
            if indices:
                self._send(w, indices)

    def _send(self, w: int, indices: list[int]) -> None:
        worker = self.pool.workers[w]
        self.pending[self.send(worker, indices)] = (w, indices, worker)

    def result(self) -> list:
        results: list = [None] * self.count
        restarts = 0
        while self.pending:
            done, _ = ray.wait(list(self.pending), num_returns=1, timeout=self.pool.cfg.timeout_s)
            if not done:
                stuck = sorted({w for w, _, _ in self.pending.values()})
                raise RoleError(f"rollout worker(s) {stuck}: generate did not finish within "
                                f"{self.pool.cfg.timeout_s:.0f}s")
            w, indices, worker = self.pending.pop(done[0])
            try:
                for i, out in zip(indices, ray.get(done[0])):
                    results[i] = out
            except RayActorError:
                restarts += 1
                if restarts > MAX_RESTARTS_PER_CALL:
                    raise RoleError(f"rollout worker {w} died {restarts} times in one generate call") from None
                self.pool.restart(w, dead=worker)
                self._send(w, indices)
        return results


def fit_prompts(prompts: list[list[int]], max_new_tokens: int, context_len: int,
                overflow: PromptOverflow) -> list[list[int]]:
    """Apply the overflow rule to prompts that leave no room for max_new_tokens in the context."""
    room = context_len - max_new_tokens
    if room < 2:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in a context of {context_len}")
    fitted = []
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty")
        if len(p) > room:
            if overflow == PromptOverflow.reject:
                raise ValueError(f"prompt {i} has {len(p)} tokens; with max_new_tokens={max_new_tokens} the "
                                 f"context of {context_len} leaves room for {room} (rollout.prompt_overflow=reject)")
            log.warning("prompt %d: kept its first token and last %d of %d tokens (rollout.prompt_overflow="
                        "truncate_left)", i, room - 1, len(p))
            p = p[:1] + p[len(p) - (room - 1):]
        fitted.append(p)
    return fitted


def spread_by_load(costs: list[int], workers: int) -> list[list[int]]:
    """Longest-processing-time-first: each prompt (costliest first) goes to the worker with the fewest
    outstanding tokens. Returns the prompt indices per worker, in prompt order."""
    load = [0] * workers
    shares: list[list[int]] = [[] for _ in range(workers)]
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        w = min(range(workers), key=lambda k: load[k])
        shares[w].append(i)
        load[w] += costs[i]
    return [sorted(s) for s in shares]
