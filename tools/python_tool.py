"""The python tool: the model's code runs in the verifiers' sandbox (its own process, no network, rlimits,
a throw-away directory, a wall-clock kill); it reads back stdout, or how the run failed."""
from __future__ import annotations

from tools.types import ToolCall, ToolContext, ToolResult
from verifiers.sandbox import SandboxLimits, SandboxStatus, run_python


def python(call: ToolCall, ctx: ToolContext, wall_s: float = 5.0, cpu_s: int = 3, memory_mb: int = 512,
           output_kb: int = 16) -> ToolResult:
    """`<tool>python: print(sum(range(10)))</tool>` -> `<result>45</result>`. Output past output_kb, a run past
    wall_s or cpu_s, or an exception is an error observation with the sandbox's one-line reason."""
    result = run_python(call.args, SandboxLimits(wall_s=wall_s, cpu_s=cpu_s, memory_mb=memory_mb,
                                                 output_kb=output_kb, file_mb=max(1, -(-output_kb // 1024))))
    if result.status == SandboxStatus.OK:
        return ToolResult(result.stdout.rstrip("\n"))
    return ToolResult(f"error: {result.status.value}: {result.reason}", error=True)
