"""Finding tools: built-ins, the entry-point group `tether.tools`, or "module:function"; binding their options
(checked when the config loads); and calling one so that nothing it does can end the episode.

A plugin package declares, in its pyproject.toml,

    [project.entry-points."tether.tools"]
    weather = "mypkg.tools:weather"

and a config offers it: `episode: {tools: [{fn: weather, options: {units: metric}}]}`."""
from __future__ import annotations

import asyncio
import inspect
import threading
from dataclasses import dataclass
from typing import Any, Callable

from tools.config import ToolSpec
from tools.types import ToolCall, ToolContext, ToolResult
from verifiers.registry import load_named

ENTRY_POINT_GROUP = "tether.tools"
THREAD_PREFIX = "tool-"      # names the thread of each call (a tool worker counts the hung ones by it)
BUILT_INS = {
    "calculator": "tools.calculator:calculator",
    "python": "tools.python_tool:python",
    "search": "tools.search:search",
}


class ToolNotFound(LookupError):
    """A tool name that resolves to nothing; the message says where it was looked for."""


def load(target: str, group: str, built_ins: dict[str, str], what: str) -> Callable:
    """The callable `target` names: "module:attr", a built-in, or an entry point of `group` (ToolNotFound)."""
    return load_named(target, group, built_ins, what, ToolNotFound, "callable")


@dataclass(frozen=True)
class BoundTool:
    name: str                        # what the model calls it by
    fn: Callable                     # (call, ctx, **options) -> ToolResult | str, sync or async
    options: dict[str, Any]
    timeout_s: float


def bind(spec: ToolSpec) -> BoundTool:
    """The tool with its options; options it does not take are an error here, not mid-episode."""
    fn = load(spec.fn, ENTRY_POINT_GROUP, BUILT_INS, "tool")
    try:
        inspect.signature(fn).bind(None, None, **spec.options)
    except TypeError as e:
        raise ValueError(f"tool '{spec.label}': options {dict(spec.options)} do not fit "
                         f"{getattr(fn, '__name__', fn)}{inspect.signature(fn)}: {e}") from None
    if not spec.timeout_s > 0:
        raise ValueError(f"tool '{spec.label}': timeout_s must be > 0, got {spec.timeout_s}")
    return BoundTool(spec.label, fn, dict(spec.options), spec.timeout_s)


def run_tool(tool: BoundTool, call: ToolCall, ctx: ToolContext, max_chars: int) -> ToolResult:
    """Calls the tool on a thread of its own and waits at most its timeout. A raise, a timeout, a wrong return
    type or an answer over max_chars becomes a ToolResult (error=True, except a cut answer); never an exception.
    A sync tool that hangs keeps its (daemon) thread; the tool pool replaces a worker that holds such threads."""
    box: list = []

    def target() -> None:
        try:
            out = tool.fn(call, ctx, **tool.options)
            if inspect.isawaitable(out):
                out = asyncio.run(asyncio.wait_for(_awaited(out), tool.timeout_s))
            box.append(out)
        except BaseException as e:     # noqa: BLE001 - a tool's failure is the model's observation
            box.append(e)

    thread = threading.Thread(target=target, name=f"{THREAD_PREFIX}{tool.name}", daemon=True)
    thread.start()
    thread.join(tool.timeout_s)
    if not box:
        return ToolResult(f"error: {tool.name} did not answer within {tool.timeout_s:g}s", error=True)
    out = box[0]
    if isinstance(out, BaseException):
        kind = "timeout" if isinstance(out, (asyncio.TimeoutError, TimeoutError)) else type(out).__name__
        return ToolResult(f"error: {tool.name}: {kind}: {str(out)[:200]}", error=True)
    if isinstance(out, str):
        out = ToolResult(out)
    if not isinstance(out, ToolResult):
        return ToolResult(f"error: {tool.name} returned {type(out).__name__}, not a ToolResult or str", error=True)
    if len(out.text) > max_chars:
        return ToolResult(out.text[:max_chars] + f" ...[cut: {len(out.text)} characters]", error=out.error)
    return out


async def _awaited(awaitable):
    return await awaitable
