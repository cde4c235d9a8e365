"""ToolWorker: runs tool calls for the rollout workers' episodes, as a Ray actor of the tool pool (cluster/
tool_pool.py), so that a tool's hang, crash or memory never touches an engine. Calls run concurrently (the actor
takes several at once), each on its own thread bounded by its tool's timeout."""
from __future__ import annotations

import threading

from tools.config import EpisodeConfig
from tools.environment import bind_tools
from tools.registry import THREAD_PREFIX, run_tool
from tools.types import ToolCall, ToolContext, ToolResult


class ToolWorker:
    def __init__(self, cfg: EpisodeConfig):
        self.tools = bind_tools(cfg)

    def call(self, name: str, call: ToolCall, ctx: ToolContext, max_chars: int) -> ToolResult:
        tool = self.tools.get(name)
        if tool is None:
            return ToolResult(f"error: no tool '{name}' in the tool pool (offered: {', '.join(self.tools)})",
                              error=True)
        return run_tool(tool, call, ctx, max_chars)

    def stuck(self) -> int:
        """Tool threads still running past their timeout (they cannot be stopped; the pool replaces a worker
        that holds too many)."""
        return sum(t.name.startswith(THREAD_PREFIX) for t in threading.enumerate())
