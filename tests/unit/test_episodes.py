"""Multi-turn episodes (rollout/episodes.py) on a scripted engine: the episode is the exact concatenation of the
sampled turns and the observations, its loss mask equals one built by hand, no episode waits for another's tool
call, and the token budget holds."""
import time

from data.tasks import Task
from rollout.episodes import BatchTurns, run_episodes
from rollout.types import FinishReason, Sampling
from tools.environment import EnvStep


class ScriptedEngine:
    """Hands out each episode's scripted turns in the order they were asked for, one per poll."""

    def __init__(self, turns: dict[int, list[list[int]]]):
        self.turns, self.queue, self.added, self.given = turns, [], [], {}

    def add(self, key, prompt_ids, s):
        self.added.append((key, list(prompt_ids), s.max_new_tokens))
        self.queue.append((key, s.max_new_tokens))

    def busy(self):
        return bool(self.queue)

    def poll(self):
        key, limit = self.queue.pop(0)
        turn = self.given.get(key, 0)
        self.given[key] = turn + 1
        ids = self.turns[key][turn][:limit]
        return [(key, (ids, [-0.1 * (j + 1) for j in range(len(ids))],
                       FinishReason.length if len(ids) == limit else FinishReason.stop))]


class Env:
    """Answers turns 1 .. max_turns - 1 with [900 + turn, 950 + turn] after `delay` seconds."""
    stop = ["</x>"]

    def __init__(self, max_turns=3, delay=0.0):
        self.max_turns, self.delay, self.turn = max_turns, delay, 0

    def reset(self, task):
        self.turn = 0
        return list(task.prompt_ids)

    def step(self, action):
        time.sleep(self.delay)
        self.turn += 1
        if self.turn >= self.max_turns:
            return EnvStep([], True)
        return EnvStep([900 + self.turn, 950 + self.turn], False, {"tool_calls": 1.0})


def task(*ids):
    return Task(sample=None, prompt_ids=list(ids), solution="")


def test_an_episode_is_its_turns_and_observations_token_for_token_with_a_hand_built_mask():
    engine = ScriptedEngine({0: [[11, 12], [13], [14, 15, 16]]})
    [episode] = run_episodes(engine, [Env()], [task(1, 2)], Sampling(max_new_tokens=8), 64, version=7)
    assert episode.prompt_ids == [1, 2]
    assert episode.response_ids == [11, 12, 901, 951, 13, 902, 952, 14, 15, 16]
    assert episode.response_mask == [1, 1, 0, 0, 1, 0, 0, 1, 1, 1]
    assert episode.logprobs == [-0.1, -0.2, 0.0, 0.0, -0.1, 0.0, 0.0, -0.1, -0.2, -0.30000000000000004]
    assert episode.turns == 3 and episode.env_parts == {"tool_calls": 2.0} and episode.policy_version == 7
    # token in: each turn continued exactly the ids so far, and stopped at the environment's stop strings
    assert [prompt for _, prompt, _ in engine.added] == [[1, 2], [1, 2, 11, 12, 901, 951],
                                                         [1, 2, 11, 12, 901, 951, 13, 902, 952]]


def test_no_episode_waits_for_another_episodes_tool_call():
    engine = ScriptedEngine({0: [[10], [10], [10]], 1: [[20], [20], [20]]})
    envs = [Env(delay=0.5), Env(delay=0.0)]
    start = time.perf_counter()
    out = run_episodes(engine, envs, [task(1), task(2)], Sampling(max_new_tokens=4), 64, version=0)
    order = [key for key, _, _ in engine.added]
    # episode 1 finishes all three turns while episode 0's first tool call is still running
    assert order == [0, 1, 1, 1, 0, 0], order
    assert [e.turns for e in out] == [3, 3] and time.perf_counter() - start < 2.0


def test_the_episode_token_budget_caps_turns_and_observations():
    engine = ScriptedEngine({0: [[11, 12, 13, 14], [15, 16, 17, 18]]})
    [episode] = run_episodes(engine, [Env()], [task(1, 2, 3)], Sampling(max_new_tokens=4), 8, version=0)
    # 3 prompt + 4 sampled leaves 1: one observation token, then no room for a second turn
    assert episode.response_ids == [11, 12, 13, 14, 901] and episode.response_mask == [1, 1, 1, 1, 0]
    assert episode.finish_reason == FinishReason.length and episode.turns == 1


def test_batch_turns_decodes_the_turns_queued_since_the_last_poll_together():
    class Engine:
        calls = []

        def generate(self, prompts, s):
            self.calls.append(len(prompts))
            return [[([p[-1] + 1], [-1.0], FinishReason.stop)] for p in prompts]

    engine = Engine()
    out = run_episodes(BatchTurns(engine), [Env(), Env()], [task(1), task(5)], Sampling(max_new_tokens=2), 64, 0)
    assert [e.response_ids for e in out] == [[2, 901, 951, 952, 902, 952, 953], [6, 901, 951, 952, 902, 952, 953]]
    assert engine.calls[0] == 2 and sum(engine.calls) == 6     # later turns batch as their observations return
