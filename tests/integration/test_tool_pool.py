"""The tool pool on real Ray: a tool that hangs, raises, prints 10 MB or kills its process costs one error
observation each and never the caller; a dead worker is replaced between steps; rollout workers' episodes send
their calls to the pool and read its answers back as observations."""
import time

import pytest
import ray
from ray.exceptions import RayActorError

from cluster.rollout_pool import RolloutPool
from cluster.tool_pool import ToolPool
from data.tasks import Task
from data.tokenizer import load_tokenizer
from rollout.episodes import RemoteTools
from rollout.types import Sampling
from tests.integration.test_rollout import ROLLOUT, prompts
from tools.config import EpisodeConfig, ToolSpec
from tools.environment import bind_tools
from tools.types import ToolCall, ToolContext, ToolResult

pytestmark = pytest.mark.integration
FIX = "tests.fixtures.tools"
CTX = ToolContext(None, 1)


def test_misbehaving_tools_cost_one_observation_and_a_lost_worker_is_replaced(ray_cluster):
    cfg = EpisodeConfig(tools=[ToolSpec(f"{FIX}:hang", name="hang", timeout_s=1.0),
                               ToolSpec(f"{FIX}:boom", name="boom"), ToolSpec(f"{FIX}:flood", name="flood"),
                               ToolSpec(f"{FIX}:crash", name="crash"), ToolSpec("calculator")],
                        tool_workers=1, cpus_per_tool_worker=0.1, max_result_chars=50)
    pool = ToolPool(cfg)
    try:
        bound, call = bind_tools(cfg), RemoteTools(pool.workers)
        start = time.perf_counter()
        hung = call(bound["hang"], ToolCall("hang", ""), CTX, 50)
        assert hung.error and "within 1s" in hung.text and time.perf_counter() - start < 5
        assert call(bound["boom"], ToolCall("boom", ""), CTX, 50).text.startswith("error: boom: RuntimeError")
        assert call(bound["flood"], ToolCall("flood", ""), CTX, 50).text == "x" * 50 + " ...[cut: 10000000 characters]"
        assert call(bound["calculator"], ToolCall("calculator", "1234 + 4321"), CTX, 50) == ToolResult("5555")
        assert pool.heal() == 0                                  # one hung call is within what a worker may hold
        lost = call(bound["crash"], ToolCall("crash", ""), CTX, 50)
        assert lost.error and "lost" in lost.text
        assert pool.heal() == 1 and pool.restarts == 1
        assert RemoteTools(pool.workers)(bound["calculator"], ToolCall("calculator", "2 * 21"), CTX, 50).text == "42"
    finally:
        pool.shutdown()


def wait_dead(actor, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.stuck.remote(), timeout=5.0)
        except RayActorError:
            return
        time.sleep(0.2)
    raise AssertionError(f"a killed tool worker still answers after {timeout_s:.0f}s")


def test_rollout_workers_send_episode_tool_calls_to_the_pool(ray_cluster, tiny_corpus):
    tok = load_tokenizer(tiny_corpus / "tokenizer")
    cfg = EpisodeConfig(tools=[ToolSpec("calculator")], environment="tests.fixtures.environments:CallsEachTurn",
                        max_turns=3, max_episode_tokens=120, tool_workers=1, cpus_per_tool_worker=0.1)
    rollout = RolloutPool(ROLLOUT, str(tiny_corpus / "init"), context_len=128, wait=False)
    tools = ToolPool(cfg)
    try:
        rollout.wait_started()
        rollout.attach_tools(tools)
        tasks = [Task(sample=None, prompt_ids=p, solution="") for p in prompts(tiny_corpus, 3)]
        episodes = rollout.submit_episodes(tasks, Sampling(temperature=1.0, max_new_tokens=8, seed=1), cfg).result()
        expected = tok("<result>2</result>", add_special_tokens=False)["input_ids"] + \
            tok("<result>4</result>", add_special_tokens=False)["input_ids"]
        for e in episodes:
            assert [i for i, m in zip(e.response_ids, e.sampled_mask()) if not m] == expected
            assert e.env_parts == {"tool_errors": 0.0} and e.turns == 3
        ray.kill(tools.workers[0])                   # dies between steps: the next call for episodes heals first
        wait_dead(tools.workers[0])                  # ray.kill only asks; under load the death can lag behind
        again = rollout.submit_episodes(tasks[:1], Sampling(temperature=1.0, max_new_tokens=8, seed=2), cfg).result()
        assert tools.restarts == 1 and again[0].env_parts == {"tool_errors": 0.0}
    finally:
        tools.shutdown()
        rollout.shutdown()
