"""Records that cross the tool boundary: a call the model wrote, what the tool answers, and the episode it is in."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ToolCall:
    """What the model wrote between the call markers: `<tool>name: args</tool>`."""
    name: str
    args: str


@dataclass(frozen=True)
class ToolResult:
    """What the model reads back between `<result>` and `</result>`. error: the call failed (an unknown tool,
    bad arguments, a raise, a timeout, too much output); text then says why, and the episode goes on."""
    text: str
    error: bool = False


@dataclass(frozen=True)
class ToolContext:
    """The episode a call belongs to: its question (never the reference answer, which no tool may see, so none
    can hand it to the model) and the turn, 1-based."""
    question: Optional[str]
    turn: int
