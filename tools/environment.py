"""The Environment an episode steps through, and the default one: tool calls in a documented chat format.

    env.reset(task) -> observation ids      the prompt the first model turn continues
    env.step(action ids) -> EnvStep         the model's turn in; the ids appended after it (a tool's result,
                                            masked out of the loss), whether the episode ended, reward parts

The default format, inside the assistant's turn: the model writes `<tool>name: args</tool>` (generation stops
at `</tool>`), the environment appends `<result>...</result>` tokenised once, and the model goes on; a turn
without a call (or the max_turns-th) ends the episode. A turn that opens `<tool>` without a call in the format
counts as a malformed call (reward part malformed_calls). Token ids are never re-tokenised: the episode is the
prompt, then each model turn as the engine sampled it, then each result as the environment tokenised it."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from data.tasks import Task
from tools.config import EpisodeConfig
from tools.registry import BoundTool, bind, load, run_tool
from tools.types import ToolCall, ToolContext, ToolResult

CALL_OPEN, CALL_CLOSE = "<tool>", "</tool>"
RESULT_OPEN, RESULT_CLOSE = "<result>", "</result>"
CALL = re.compile(r"<tool>\s*([^:<>\s]+)\s*:(.*?)</tool>\s*$", re.S)
ENVIRONMENT_GROUP = "tether.environments"


@dataclass
class EnvStep:
    observation: list[int]                     # ids appended after the model's turn (masked out of the loss)
    done: bool
    reward_parts: dict[str, float] = field(default_factory=dict)   # per-turn parts, summed over the episode


class Environment(Protocol):
    stop: list[str]                            # strings that end a model turn (besides EOS)

    def reset(self, task: Task) -> list[int]: ...

    def step(self, action: list[int]) -> EnvStep: ...


def parse_call(text: str) -> Optional[ToolCall]:
    """The call a model turn ends with, if it ends with one: `<tool>name: args</tool>`."""
    match = CALL.search(text)
    return ToolCall(match.group(1), match.group(2).strip()) if match else None


Tool = Callable[[ToolCall, ToolContext], ToolResult]     # a bound tool, as an environment calls it


class ToolEnvironment:
    """One episode at a time. tools: name -> the tool as make_environments routes it (bounded by its timeout, run
    on a thread here or in the tool pool; it never raises)."""
    stop = [CALL_CLOSE]

    def __init__(self, tokenizer, tools: dict[str, Tool], cfg: EpisodeConfig):
        self.tokenizer, self.tools, self.cfg = tokenizer, tools, cfg
        self.task: Optional[Task] = None
        self.turn = 0

    def reset(self, task: Task) -> list[int]:
        self.task, self.turn = task, 0
        return list(task.prompt_ids)

    def step(self, action: list[int]) -> EnvStep:
        self.turn += 1
        text = self.tokenizer.decode(action, skip_special_tokens=False)
        call = parse_call(text)
        if call is None or self.turn >= self.cfg.max_turns:
            return EnvStep([], True, {"malformed_calls": 1.0} if call is None and CALL_OPEN in text else {})
        tool = self.tools.get(call.name)
        if tool is None:
            result = ToolResult(f"error: no tool '{call.name}' (offered: {', '.join(self.tools)})", error=True)
        else:
            question = self.task.sample.prompt if self.task and self.task.sample else None
            result = tool(call, ToolContext(question, self.turn))
        text = f"{RESULT_OPEN}{result.text}{RESULT_CLOSE}"
        return EnvStep(self.tokenizer(text, add_special_tokens=False)["input_ids"], False,
                       {"tool_calls": 1.0, "tool_errors": float(result.error)})


def bind_tools(cfg: EpisodeConfig) -> dict[str, BoundTool]:
    """name -> bound tool; two tools under one name are an error."""
    tools: dict[str, BoundTool] = {}
    for spec in cfg.tools:
        tool = bind(spec)
        if tool.name in tools:
            raise ValueError(f"episode.tools: two tools are named '{tool.name}' (set name: on one)")
        tools[tool.name] = tool
    return tools


def check_episode(cfg: EpisodeConfig, context_len: int, lora_rank: int = 0) -> None:
    """Raises ValueError (or ToolNotFound) on a config no episode can run with: its tools are bound (options
    checked), its environment is found, and its budgets fit the model's context."""
    if cfg.max_turns < 1 or cfg.max_result_chars < 1 or cfg.calls_per_tool_worker < 1:
        raise ValueError("max_turns, max_result_chars and calls_per_tool_worker must be >= 1")
    if cfg.tool_workers < 0 or not cfg.cpus_per_tool_worker > 0:
        raise ValueError("tool_workers must be >= 0 and cpus_per_tool_worker > 0")
    if not 2 <= cfg.max_episode_tokens <= context_len:
        raise ValueError(f"max_episode_tokens={cfg.max_episode_tokens}: must be in [2, the context {context_len}]")
    if lora_rank:
        raise ValueError("multi-turn episodes do not serve a LoRA adapter yet (set rollout.lora_rank: 0)")
    bind_tools(cfg)
    if cfg.environment is not None:
        load(cfg.environment, ENVIRONMENT_GROUP, {}, "environment")


def make_environments(cfg: EpisodeConfig, tokenizer, count: int, call_tool=run_tool) -> list[Environment]:
    """`count` environments of the configured kind (tools bound and the factory found once): the default
    ToolEnvironment, or cfg.environment's factory, called as factory(tokenizer, tools, cfg) (a class or a
    function). tools maps each name to a callable (call, ctx) -> ToolResult that runs it through call_tool
    (run_tool: a thread here; the rollout worker's RemoteTools: the tool pool), its answer cut to
    cfg.max_result_chars."""
    def routed(tool: BoundTool) -> Tool:
        return lambda call, ctx: call_tool(tool, call, ctx, cfg.max_result_chars)

    tools = {name: routed(tool) for name, tool in bind_tools(cfg).items()}
    factory = ToolEnvironment if cfg.environment is None else load(cfg.environment, ENVIRONMENT_GROUP, {},
                                                                   "environment")
    return [factory(tokenizer, tools, cfg) for _ in range(count)]
