"""A tether tool plugin: `<tool>convert_units: 3 km in m</tool>` -> `<result>3000 m</result>`.

A tool is a plain function (call, ctx, **options) -> ToolResult (or str); it never needs to import tether
to be found (the entry point names it), only to build a ToolResult, which a plain string replaces."""
from __future__ import annotations

import re
from fractions import Fraction

FACTORS = {"mm": Fraction(1, 1000), "cm": Fraction(1, 100), "m": Fraction(1), "km": Fraction(1000),
           "mg": Fraction(1, 1000), "g": Fraction(1), "kg": Fraction(1000)}
LENGTH, MASS = {"mm", "cm", "m", "km"}, {"mg", "g", "kg"}
QUERY = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-z]+)\s+(?:in|to)\s+([a-z]+)\s*$")


def convert_units(call, ctx, digits: int = 6) -> str:
    match = QUERY.match(call.args)
    if not match:
        raise ValueError("write '<number> <unit> in <unit>'")
    value, source, target = Fraction(match.group(1)), match.group(2), match.group(3)
    if not any({source, target} <= kind for kind in (LENGTH, MASS)):
        raise ValueError(f"cannot convert {source} to {target}")
    out = value * FACTORS[source] / FACTORS[target]
    text = str(out.numerator) if out.denominator == 1 else f"{float(out):.{digits}g}"
    return f"{text} {target}"
