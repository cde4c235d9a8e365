"""Multi-turn episodes, token in and token out: the episode is one growing list of token ids, the model's turns
exactly as the engine sampled them (with their log-probs), each environment observation (a tool's result)
tokenised once by the environment and appended, masked out of the loss. Nothing is ever re-tokenised, so the
learner scores the very tokens that were sampled (re-tokenising each turn's text shifts token boundaries).

    run_episodes(turns, envs, tasks, sampling, max_episode_tokens) -> one Rollout per episode

Episodes advance independently: a turn that ends goes to its environment (a tool call, on a thread) while
the engine keeps decoding the others, and the episode's next turn joins the engine's running batch as soon as
its observation is back (vLLM: add_request / step; the engine's prefix cache serves the grown prompt)."""
from __future__ import annotations

import itertools
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Protocol

from data.tasks import Task
from rollout.types import FinishReason, Rollout, Sampling
from tools.environment import Environment, EnvStep
from tools.registry import BoundTool
from tools.types import ToolCall, ToolContext, ToolResult

Turn = tuple[list[int], list[float], FinishReason]      # a model turn: token ids, their log-probs, why it ended


class TurnEngine(Protocol):
    def add(self, key: int, prompt_ids: list[int], s: Sampling) -> None: ...

    def poll(self) -> list[tuple[int, Turn]]: ...       # turns finished since the last poll (blocks for work)

    def busy(self) -> bool: ...


@dataclass
class _Episode:
    prompt: list[int]
    ids: list[int] = field(default_factory=list)       # after the prompt: model turns and observations
    mask: list[int] = field(default_factory=list)      # 1: sampled by the model (in the loss); 0: observation
    logprobs: list[float] = field(default_factory=list)
    turns: int = 0
    parts: dict[str, float] = field(default_factory=dict)
    reason: FinishReason = FinishReason.eos


def run_episodes(engine: TurnEngine, envs: list[Environment], tasks: list[Task], s: Sampling,
                 max_episode_tokens: int, version: int, threads: int = 8) -> list[Rollout]:
    """One episode per (env, task) pair, all at once; s.max_new_tokens bounds each model turn, and no turn runs
    past max_episode_tokens (prompt included). s.n must be 1: each sample is an episode of its own."""
    if s.n != 1:
        raise ValueError(f"run_episodes: n={s.n}; give each sample its own environment and task instead")
    if len(envs) != len(tasks):
        raise ValueError(f"run_episodes: {len(envs)} environments for {len(tasks)} tasks")
    episodes = [_Episode(env.reset(task)) for env, task in zip(envs, tasks)]
    pending: dict[Future, int] = {}

    def next_turn(i: int) -> None:
        e = episodes[i]
        room = max_episode_tokens - len(e.prompt) - len(e.ids)
        if room < 1:
            e.reason = FinishReason.length
            return
        stop = sorted(set(s.stop) | set(envs[i].stop))
        engine.add(i, e.prompt + e.ids, replace(s, max_new_tokens=min(s.max_new_tokens, room), stop=stop,
                                                min_new_tokens=min(s.min_new_tokens, room)))

    for i, e in enumerate(episodes):
        if len(e.prompt) >= max_episode_tokens:
            raise ValueError(f"episode {i}: its prompt of {len(e.prompt)} tokens fills max_episode_tokens")
        next_turn(i)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="episode-env") as pool:
        while engine.busy() or pending:
            for i, (ids, logprobs, reason) in (engine.poll() if engine.busy() else []):
                e = episodes[i]
                e.ids += ids
                e.mask += [1] * len(ids)
                e.logprobs += logprobs
                e.turns += 1
                e.reason = reason
                pending[pool.submit(envs[i].step, ids)] = i
            done = [f for f in pending if f.done()]
            if not done and not engine.busy():
                done = list(wait(list(pending), return_when=FIRST_COMPLETED)[0])
            for future in done:
                i = pending.pop(future)
                step: EnvStep = future.result()
                e = episodes[i]
                for key, value in step.reward_parts.items():
                    e.parts[key] = e.parts.get(key, 0.0) + value
                if step.done:
                    continue
                room = max_episode_tokens - len(e.prompt) - len(e.ids)
                observation = step.observation[:room]
                e.ids += observation
                e.mask += [0] * len(observation)
                e.logprobs += [0.0] * len(observation)
                next_turn(i)
    return [Rollout(e.prompt, e.ids, e.logprobs, e.reason, version, response_mask=e.mask, turns=e.turns,
                    env_parts=e.parts) for e in episodes]


class BatchTurns:
    """Any engine with generate(prompts, sampling) (the reference engine): the turns added since the last poll
    are decoded together in one call, grouped by their sampling settings."""

    def __init__(self, engine):
        self.engine = engine
        self.queue: list[tuple[int, list[int], Sampling]] = []

    def add(self, key: int, prompt_ids: list[int], s: Sampling) -> None:
        self.queue.append((key, prompt_ids, s))

    def busy(self) -> bool:
        return bool(self.queue)

    def poll(self) -> list[tuple[int, Turn]]:
        queue, self.queue = self.queue, []
        out = []
        for s, group in itertools.groupby(sorted(queue, key=lambda q: repr(q[2])), key=lambda q: q[2]):
            group = list(group)
            for (key, _, _), samples in zip(group, self.engine.generate([p for _, p, _ in group], s)):
                out.append((key, samples[0]))
        return out


class VllmTurns:
    """vLLM's engine driven step by step: each turn is a request of its own, added whenever its episode is
    ready, so no episode waits for another's tool call; requests share the running batch and the prefix cache."""

    def __init__(self, llm, to_params, completion):
        """to_params(Sampling) -> SamplingParams; completion(CompletionOutput) -> Turn (the worker's own)."""
        self.engine, self.to_params, self.completion = llm.llm_engine, to_params, completion
        self.ids = itertools.count()
        self.keys: dict[str, int] = {}

    def add(self, key: int, prompt_ids: list[int], s: Sampling) -> None:
        request = f"turn-{next(self.ids)}"
        self.keys[request] = key
        self.engine.add_request(request, {"prompt_token_ids": prompt_ids}, self.to_params(s))

    def busy(self) -> bool:
        return bool(self.keys)

    def poll(self) -> list[tuple[int, Turn]]:
        return [(self.keys.pop(out.request_id), self.completion(out.outputs[0]))
                for out in self.engine.step() if out.finished]


class RemoteTools:
    """Tool calls sent to the tool pool's workers (Ray actors; cluster/tool_pool.py) instead of run on threads here:
    each call goes to the next worker (round robin) and is waited on for the tool's timeout plus REPLY_MARGIN_S.
    A timeout or a lost worker is the call's error observation; nothing raises."""
    REPLY_MARGIN_S = 5.0

    def __init__(self, workers: list):
        self.workers = workers
        self.turn = itertools.count()

    def __call__(self, tool: BoundTool, call: ToolCall, ctx: ToolContext, max_chars: int) -> ToolResult:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError
        worker = self.workers[next(self.turn) % len(self.workers)]
        try:
            return ray.get(worker.call.remote(tool.name, call, ctx, max_chars),
                           timeout=tool.timeout_s + self.REPLY_MARGIN_S)
        except GetTimeoutError:
            return ToolResult(f"error: {tool.name}: the tool pool did not answer within {tool.timeout_s:g}s",
                              error=True)
        except RayActorError:
            return ToolResult(f"error: {tool.name}: the tool worker was lost", error=True)
