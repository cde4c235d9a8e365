"""The calculator tool: exact rational arithmetic on + - * / and parentheses, parsed by hand (never eval), so
an answer is exact ("7/2", never 3.4999999) and no input can run code."""
from __future__ import annotations

import re
from fractions import Fraction

from tools.types import ToolCall, ToolContext, ToolResult

TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)|(.))")
MAX_CHARS = 500
MAX_DIGITS = 100
MAX_DEPTH = 50


class CalculatorError(ValueError):
    """An expression the calculator cannot evaluate; the message is what the model reads."""


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression: numbers (integers or decimals), + - * /, unary signs and
    parentheses, with the usual precedence and left associativity."""
    if len(expression) > MAX_CHARS:
        raise CalculatorError(f"expression longer than {MAX_CHARS} characters")
    tokens = []
    for number, symbol in TOKEN.findall(expression.strip()):
        if number:
            if len(number.replace(".", "")) > MAX_DIGITS:
                raise CalculatorError(f"a number with more than {MAX_DIGITS} digits")
            tokens.append(Fraction(number))
        elif symbol in "+-*/()":
            tokens.append(symbol)
        else:
            raise CalculatorError(f"unexpected character {symbol!r} (allowed: digits . + - * / ( ))")
    if not tokens:
        raise CalculatorError("empty expression")
    parser = _Parser(tokens)
    value = parser.expression(0)
    if parser.pos != len(tokens):
        raise CalculatorError(f"unexpected {parser.describe(parser.pos)} after a complete expression")
    return value


class _Parser:
    def __init__(self, tokens: list):
        self.tokens, self.pos = tokens, 0

    def describe(self, pos: int) -> str:
        return "end of input" if pos >= len(self.tokens) else repr(str(self.tokens[pos]))

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def expression(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            value = value + self.term(depth) if op == "+" else value - self.term(depth)
        return value

    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.tokens[self.pos]
            self.pos += 1
            right = self.factor(depth)
            if op == "/" and right == 0:
                raise CalculatorError("division by zero")
            value = value * right if op == "*" else value / right
        return value

    def factor(self, depth: int) -> Fraction:
        if depth > MAX_DEPTH:
            raise CalculatorError(f"nested deeper than {MAX_DEPTH}")
        token = self.peek()
        self.pos += 1
        if isinstance(token, Fraction):
            return token
        if token in ("+", "-"):
            value = self.factor(depth + 1)
            return value if token == "+" else -value
        if token == "(":
            value = self.expression(depth + 1)
            if self.peek() != ")":
                raise CalculatorError(f"expected ')' but found {self.describe(self.pos)}")
            self.pos += 1
            return value
        raise CalculatorError(f"expected a number or '(' but found {self.describe(self.pos - 1)}")


def format_value(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def calculator(call: ToolCall, ctx: ToolContext) -> ToolResult:
    """`<tool>calculator: 123 + 4567 * (2 - 1)</tool>` -> `<result>4690</result>`."""
    try:
        return ToolResult(format_value(evaluate(call.args)))
    except CalculatorError as e:
        return ToolResult(f"error: {e}", error=True)
