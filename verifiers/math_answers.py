"""The `math` built-in verifier: find the final answer in a worked solution and compare it with the reference.

A response ends its work with `#### N` (the format of `data.corpus.format_answer` and GSM8K); a
`\\boxed{...}` answer (MATH-style) or, failing both, the last number in the text is taken instead.

Equality (`answers_equal`), after `normalize_answer` on both sides:
- Exact numbers: integers, decimals and fractions compare as exact rationals, so 1/2 == 0.5 and
  \\frac{3}{4} == 0.75, but 12 != 12.0001. There is no relative tolerance between two such numbers:
  one would let 1450001 pass for 1450000.
- Rounded decimals: a value with no finite decimal expansion (1/3, sqrt(2), pi) equals a decimal that is
  it rounded or truncated to the places written, when that decimal has a point and at least 3 significant
  digits: 0.333 == 0.3333 == 1/3, 0.6667 == 2/3, 1.414 == sqrt(2); but 0.33 != 1/3 (too few digits to
  tell an approximation from a different answer) and 0.334 != 1/3.
- Expressions: parsed with sympy (whitelisted names, no eval of raw text, bounded powers, at most
  MAX_EXPRESSION_CHARS) and equal when simplify(a - b) == 0: 2*x+x == 3*x, sqrt(8) == 2*sqrt(2).
  A numeric probe at one fixed point first rules out pairs that clearly differ, which keeps simplify
  off the slow cases. Answers sympy cannot take are equal only as identical normalized strings.
- Percent: 50% == 50, since GSM8K-style references to "what percent" questions are bare numbers; 50% != 0.5.
- Units: currency signs and words, and unit words after a number, are dropped, never converted:
  "$1,200" == "1200 dollars" == 1200, and "50 cents" == 50.
"""
from __future__ import annotations

import keyword
import re
from decimal import Decimal
from fractions import Fraction
from tokenize import TokenError

import sympy
from sympy.parsing.sympy_parser import auto_number, auto_symbol, implicit_multiplication, parse_expr, rationalize

from verifiers.types import Sample, Verdict

# The chat markers of data.tokenizer (EOS, END), repeated here so verifier workers need not import
# transformers.
MARKERS = ("<|eos|>", "<|end|>")
MAX_EXPRESSION_CHARS = 100
"""Longer answers are not given to sympy, whose cost grows with size: only exact numbers or equal strings match."""
MAX_POWER = 1000
"""Bound on an exponent, multiplied along nested powers ((x^10)^10 counts 100), so 9^9^9 is never computed."""
MIN_ROUNDED_DIGITS = 3
MAX_NUMBER_CHARS = 1000
"""Longer answers are compared as strings only (int() refuses over 4300 digits; no answer needs them)."""

_FINAL_LINE = re.compile(r"####[ \t]*([^\n]*\S)")
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|(?<![\w.])-?\.\d+")
_DECIMAL = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_FRACTION = re.compile(r"(-?\d+)/(\d+)")
_THOUSANDS_SEPARATOR = re.compile(r"(?<=\d)(?:,|\\,|\{,\})(?=\d{3}(?!\d))")  # 1,200  1\,200  1{,}200
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_FRAC = re.compile(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_FRAC_DIGITS = re.compile(r"\\frac\s*(\d)\s*(\d)")  # \frac12, MATH shorthand for \frac{1}{2}
_MIXED_LATEX = re.compile(r"(\d)\s*\\frac")  # 3\frac{1}{2} is 3 1/2, not 31/2
_MIXED_NUMBER = re.compile(r"(-?)(\d+)\s+(\d+)/(\d+)")
_SQRT = re.compile(r"\\sqrt\s*(?:\{([^{}]*)\}|(\d+|[A-Za-z]))")
_CURRENCY = re.compile(r"[$€£¥₹]|\b(?:dollars?|usd|euros?|eur|pounds?|gbp|yen|rupees?)\b", re.I)
_PERCENT = re.compile(r"%|\bpercent\b", re.I)
_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*")
_UNIT_WORDS = re.compile(r"^([-+]?[\d.]+(?:/\d+)?)(?:\s+[A-Za-z]{2,}\.?)+$")
_SIMPLE_TOKEN = re.compile(r"[\w.]+")
_EXPRESSION_CHARS = re.compile(r"[0-9A-Za-z+\-*/^(). ]+")

_SYMPY_NAMES = {"sqrt": sympy.sqrt, "pi": sympy.pi, "log": sympy.log, "ln": sympy.log, "exp": sympy.exp,
                "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan}
"""The functions and constants an answer may name; any other name becomes a plain symbol."""
# What the generated code calls: number and symbol constructors, and for evaluate=False the operators.
_PARSER_GLOBALS = {"__builtins__": {}, "Integer": sympy.Integer, "Float": sympy.Float,
                   "Rational": sympy.Rational, "Symbol": sympy.Symbol, "Function": sympy.Function,
                   "Add": sympy.Add, "Mul": sympy.Mul, "Pow": sympy.Pow, **_SYMPY_NAMES}
_TRANSFORMATIONS = (auto_symbol, auto_number, rationalize, implicit_multiplication)


def extract_final_answer(text: str) -> str | None:
    """The final answer: the last `#### N`, else the last `\\boxed{...}`, else the last number; None if none."""
    text = _without_markers(text)
    finals = _FINAL_LINE.findall(text)
    if finals:
        return finals[-1].strip()
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def normalize_answer(text: str) -> str:
    """A canonical form of an answer: plain numbers ('1200', '12.5', '3/4') or sympy-style expressions."""
    s = _without_markers(text).strip()
    boxed = _last_boxed(s)
    if boxed is not None:
        s = boxed
    s = _TEXT_COMMAND.sub(r" \1", s)
    s = _THOUSANDS_SEPARATOR.sub("", s)
    for latex, plain in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", " "), ("\\;", " "),
                         ("\\:", " "), ("\\ ", " "), ("\\$", ""), ("\\%", "%"), ("^\\circ", ""),
                         ("^{\\circ}", ""), ("°", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
                         ("\\cdot", "*"), ("\\times", "*"), ("\\pi", "pi")):
        s = s.replace(latex, plain)
    s = _FRAC_DIGITS.sub(r"\\frac{\1}{\2}", s)
    s = _MIXED_LATEX.sub(r"\1 \\frac", s)
    while True:  # innermost first, so nested fractions and roots unfold
        unfolded = _SQRT.sub(lambda m: f"sqrt({m.group(1) or m.group(2)})", s)
        unfolded = _FRAC.sub(lambda m: f"{_grouped(m.group(1))}/{_grouped(m.group(2))}", unfolded)
        if unfolded == s:
            break
        s = unfolded
    s = s.replace("{", "(").replace("}", ")").replace("^", "**")
    s = _CURRENCY.sub("", s)
    s = _PERCENT.sub("", s)
    s = s.strip().rstrip(".").strip()
    s = _ASSIGNMENT.sub("", s)
    units = _UNIT_WORDS.match(s)
    if units and not any(w.lower().rstrip(".") in _SYMPY_NAMES for w in s.split()[1:]):
        s = units.group(1)
    mixed = _MIXED_NUMBER.fullmatch(s) if len(s) <= MAX_NUMBER_CHARS else None
    if mixed and int(mixed.group(4)) != 0:
        whole, numerator, denominator = (int(g) for g in mixed.group(2, 3, 4))
        s = f"{mixed.group(1)}{whole * denominator + numerator}/{denominator}"
    s = re.sub(r"\s*([-+*/()=])\s*", r"\1", re.sub(r"\s+", " ", s)).lstrip("+")
    return _canonical_number(s) or s


def answers_equal(a: str, b: str) -> bool:
    """Whether two answers are the same value, by the rules in the module docstring."""
    na, nb = normalize_answer(a), normalize_answer(b)
    if na == nb:
        return True
    if max(len(na), len(nb)) > MAX_NUMBER_CHARS:
        return False
    ra, rb = _exact_rational(na), _exact_rational(nb)
    if ra is not None and rb is not None:
        return ra == rb or _rounds_to(na, _sympy_rational(rb)) or _rounds_to(nb, _sympy_rational(ra))
    ea, eb = _safe_expression(na), _safe_expression(nb)
    if ea is None or eb is None:
        return False
    try:
        # simplify can take minutes on e.g. (a+b+c+d+f)**12 - x, so it only confirms what a
        # numeric probe could not tell apart.
        if not _differ_at_a_point(ea, eb) and sympy.simplify(ea - eb) == 0:
            return True
        return _rounds_to(na, eb) or _rounds_to(nb, ea)
    except (TypeError, ValueError, ArithmeticError, RecursionError):
        return False


def math_answer(sample: Sample, response: str) -> Verdict:
    """1.0 when the response's final answer equals `sample.answer`; not applicable without a reference."""
    if sample.answer is None:
        return Verdict.not_applicable("no reference answer")
    found = extract_final_answer(response)
    if found is None:
        return Verdict.fail("no final answer")
    shown = f"{_short(normalize_answer(found))} {{}} {_short(normalize_answer(sample.answer))}"
    if answers_equal(found, sample.answer):
        return Verdict(1.0, True, shown.format("=="))
    return Verdict(0.0, False, shown.format("!="))


def _without_markers(text: str) -> str:
    for marker in MARKERS:
        text = text.replace(marker, "")
    return text


def _last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` with balanced braces, or None."""
    start = text.rfind("\\boxed")
    while start != -1:
        brace = start + len("\\boxed")
        while brace < len(text) and text[brace] == " ":
            brace += 1
        if brace < len(text) and text[brace] == "{":
            depth = 0
            for i in range(brace, len(text)):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                if depth == 0:
                    return text[brace + 1:i].strip()
        start = text.rfind("\\boxed", 0, start)  # unbalanced or bare: try an earlier one
    return None


def _grouped(part: str) -> str:
    part = part.strip()
    return part if _SIMPLE_TOKEN.fullmatch(part) else f"({part})"


def _canonical_number(s: str) -> str | None:
    """'12.50' -> '12.5', '12.0' -> '12', '-0' -> '0', '6/8' -> '3/4'; None when s is not a plain number.
    Decimals are rewritten as text, since Decimal.normalize would round them to 28 digits."""
    if _DECIMAL.fullmatch(s):
        whole, _, places = s.lstrip("-").partition(".")
        text = (whole.lstrip("0") or "0") + ("." + places.rstrip("0") if places.rstrip("0") else "")
        return "-" + text if s.startswith("-") and text != "0" else text
    fraction = _FRACTION.fullmatch(s)
    if fraction and len(s) <= MAX_NUMBER_CHARS and int(fraction.group(2)) != 0:
        return str(Fraction(int(fraction.group(1)), int(fraction.group(2))))
    return None


def _exact_rational(s: str) -> Fraction | None:
    """The exact value of a normalized plain number (integer, decimal, fraction), else None."""
    if _DECIMAL.fullmatch(s):
        return Fraction(Decimal(s))
    fraction = _FRACTION.fullmatch(s)
    if fraction and int(fraction.group(2)) != 0:
        return Fraction(int(fraction.group(1)), int(fraction.group(2)))
    return None


def _rounds_to(decimal_text: str, value: sympy.Expr) -> bool:
    """Whether `decimal_text` is `value` rounded (half up) or truncated to its places, for a value with
    no finite decimal and a decimal with a point and at least MIN_ROUNDED_DIGITS significant digits."""
    if not _DECIMAL.fullmatch(decimal_text) or "." not in decimal_text:
        return False
    if len(decimal_text) > MAX_EXPRESSION_CHARS or value.free_symbols or value.is_real is not True:
        return False
    if value.is_Rational and _terminates(Fraction(int(value.p), int(value.q))):
        return False  # a terminating value can be written exactly, so it must be
    negative, digits, exponent = Decimal(decimal_text).as_tuple()
    if len(digits) < MIN_ROUNDED_DIGITS or bool(negative) != bool(value.is_negative):
        return False
    written = int("".join(map(str, digits)))  # |decimal| * 10**places, exactly
    scaled = abs(value) * sympy.Integer(10) ** -exponent
    return written in (int(sympy.floor(scaled + sympy.Rational(1, 2))), int(sympy.floor(scaled)))


def _sympy_rational(x: Fraction) -> sympy.Rational:
    return sympy.Rational(x.numerator, x.denominator)


def _terminates(x: Fraction) -> bool:
    q = x.denominator
    for p in (2, 5):
        while q % p == 0:
            q //= p
    return q == 1


def _safe_expression(s: str) -> sympy.Expr | None:
    """s as a sympy expression, or None when it is not one we can compare safely and cheaply.

    parse_expr evaluates the code it generates, so the text is first limited to digits, letters,
    arithmetic and parentheses (no underscores, dots after names, quotes or brackets), every name is a
    non-keyword resolved in a namespace without builtins, scientific notation is refused, and powers
    are checked on an unevaluated parse before anything is computed."""
    if len(s) > MAX_EXPRESSION_CHARS or not _EXPRESSION_CHARS.fullmatch(s):
        return None
    if re.search(r"[A-Za-z]\.|\d\.?[eE][-+]?\d", s):  # attribute access; 1e99999999 as an exact integer
        return None
    if any(keyword.iskeyword(name) for name in re.findall(r"[A-Za-z]+", s)):
        return None
    try:
        unevaluated = parse_expr(s, global_dict=dict(_PARSER_GLOBALS), transformations=_TRANSFORMATIONS,
                                 evaluate=False)
        if not isinstance(unevaluated, sympy.Expr) or _power_load(unevaluated) > MAX_POWER:
            return None
        return parse_expr(s, global_dict=dict(_PARSER_GLOBALS), transformations=_TRANSFORMATIONS)
    except (SyntaxError, NameError, TypeError, ValueError, AttributeError, ArithmeticError, RecursionError,
            TokenError, sympy.SympifyError):
        return None


def _power_load(expr: sympy.Basic) -> int:
    """The largest product of exponents along nested powers of an unevaluated expression; over MAX_POWER
    for any exponent that is itself too large (9**(9**9)) or not finite."""
    if isinstance(expr, sympy.Pow):
        base, exponent = expr.args
        if exponent.free_symbols:  # 2**(1000000007*x): large factors make simplify crawl
            own = max([1, _power_load(exponent)] + [int(abs(n)) + 1 for n in exponent.atoms(sympy.Number)])
        elif _power_load(exponent) > MAX_POWER:
            return MAX_POWER + 1
        else:  # -2, 1/2 or 9**9, unevaluated: its powers are bounded, so a float evaluation is cheap
            magnitude = abs(sympy.N(exponent))
            own = int(sympy.ceiling(magnitude)) if magnitude.is_finite else MAX_POWER + 1
        return own * max(1, _power_load(base))
    return max((_power_load(arg) for arg in expr.args), default=1)


def _differ_at_a_point(a: sympy.Expr, b: sympy.Expr) -> bool:
    """Whether a and b take clearly different values with their symbols set to fixed irregular numbers;
    False when they agree or when the values cannot be compared (infinite, undefined)."""
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    point = {x: sympy.Float(1 + ((i + 1) * 0.6180339887) % 1, 30) for i, x in enumerate(symbols)}
    va, vb = (sympy.N(e.subs(point), 30) for e in (a, b))
    if not (va.is_number and vb.is_number) or any(v.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo)
                                                  for v in (va, vb)):
        return False
    return bool(abs(va - vb) > 1e-15 * max(abs(va), abs(vb), 1))


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
