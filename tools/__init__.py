"""Tools a policy calls during an episode: the contract (a plain function `(call, ctx) -> ToolResult`), the
registry (built-ins, the `tether.tools` entry-point group, "module:function"), the built-in calculator, python
and search tools, and the Environment an episode steps through."""
