"""Knobs owned by the tools package: which tools an episode offers, and the episode's budgets."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional


@dataclass
class ToolSpec:
    fn: str = "calculator"
    """A built-in (calculator, python, search), an entry-point name in the group `tether.tools`, or a
    "module:function" string."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments the function takes after (call, ctx), e.g. {top_k: 2} for search; checked at load."""
    name: Optional[str] = None
    """The name the model calls it by (default: fn)."""
    timeout_s: float = 10.0
    """Per call; past it the call's observation is an error and the episode goes on."""

    @property
    def label(self) -> str:
        return self.name or self.fn


@dataclass
class EpisodeConfig:
    tools: list[ToolSpec] = field(default_factory=lambda: [ToolSpec()])
    """The tools the default environment offers."""
    environment: Optional[str] = None
    """A custom Environment factory: an entry-point name in the group `tether.environments` or "module:function"
    (called with the tokenizer, the bound tools and this config); None: the default tool environment."""
    max_turns: int = 4
    """Model turns per episode; the last ends the episode whatever it says."""
    max_episode_tokens: int = 512
    """Prompt, model turns and tool results together; a turn never runs past it."""
    max_result_chars: int = 2000
    """A tool's answer is cut to this many characters (and says so)."""
    tool_workers: int = 0
    """Ray actors that run the tool calls, shared by every rollout worker (cluster/tool_pool.py); 0: each rollout
    worker runs its episodes' calls on threads of its own."""
    cpus_per_tool_worker: float = 0.25
    """CPUs Ray reserves per tool worker."""
    calls_per_tool_worker: int = 8
    """Calls one tool worker runs at once."""
    part_weights: dict[str, float] = field(default_factory=dict)
    """Per-turn reward parts added to the rubric's reward: weight per part the environment reports (the default
    environment: tool_calls, tool_errors), e.g. {tool_errors: -0.1}; empty: the rubric alone."""


class CallArgs(Enum):
    expression = "expression"
    """The arithmetic expression in the question (the longest run of numbers, operators and brackets)."""
    question = "question"
    """The question as the user asked it (a search query)."""


@dataclass
class Demonstration:
    """How a generated demonstration calls its tool: SFT on these teaches the call format and when to call."""
    tool: str = "calculator"
    """The name (in the episode's tools) of the tool the demonstration calls."""
    args: CallArgs = CallArgs.expression
    """What the call's args are, taken from the question."""
    answer: str = "#### {answer}"
    """The final turn after the tool's result: {answer} is the task's reference answer, {solution} its worked
    answer (e.g. "{solution}" for the knowledge base's answer sentences)."""
