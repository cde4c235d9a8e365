"""The tool contract: the calculator against a brute-force evaluator of random expression trees, calls that hang,
raise, or print 10 MB cost one observation, the python and search tools, the registry (options checked when bound,
a plug-in found by entry point) and the default environment's steps on a real tokenizer."""
import random
import time
from fractions import Fraction

import pytest

from data.tasks import Task
from data.tokenizer import train_tokenizer
from tools.calculator import CalculatorError, calculator, evaluate, format_value
from tools.config import EpisodeConfig, ToolSpec
from tools.environment import ToolEnvironment, bind_tools, make_environments, parse_call
from tools.python_tool import python
from tools.registry import BoundTool, ToolNotFound, bind, run_tool
from tools.search import search
from tools.types import ToolCall, ToolContext, ToolResult

CTX = ToolContext(question=None, turn=1)


def random_tree(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.3:
        return Fraction(rng.randint(0, 999), rng.choice([1, 1, 1, 10, 100]))
    return (rng.choice("+-*/"), random_tree(rng, depth - 1), random_tree(rng, depth - 1))


def render(tree) -> str:
    if isinstance(tree, Fraction):
        hundredths = tree * 100                        # denominators divide 100: two decimals are exact
        whole, part = divmod(hundredths.numerator, 100)
        return str(tree.numerator) if tree.denominator == 1 else f"{whole}.{part:02d}"
    op, left, right = tree
    return f"({render(left)} {op} {render(right)})"


def value(tree) -> Fraction:
    if isinstance(tree, Fraction):
        return tree
    op, left, right = tree
    a, b = value(left), value(right)
    return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b}[op]()


def test_the_calculator_is_exact_and_agrees_with_a_brute_force_tree_walk():
    assert evaluate("1 + 2 * 3") == 7 and evaluate("(1 + 2) * 3") == 9 and evaluate("10 - 4 - 3") == 3
    assert evaluate("12 / 4 / 3") == 1 and evaluate("-(2 - 5) * -2") == -6 and evaluate("0.1 + 0.2") == Fraction(3, 10)
    assert format_value(evaluate("7 / 2")) == "7/2" and format_value(evaluate("1234 + 5678 + 91")) == "7003"
    rng, checked = random.Random(0), 0
    for _ in range(400):
        tree = random_tree(rng, 4)
        try:
            expected = value(tree)
        except ZeroDivisionError:
            with pytest.raises(CalculatorError, match="division by zero"):
                evaluate(render(tree))
            continue
        assert evaluate(render(tree)) == expected, render(tree)
        checked += 1
    assert checked > 300


@pytest.mark.parametrize("expression, message", [
    ("2 ** 3", "expected a number"), ("__import__('os')", "unexpected character"), ("(1 + 2", r"expected '\)'"),
    ("1 2", "after a complete expression"), ("", "empty"), ("1" * 101, "more than 100 digits"),
    ("(" * 60 + "1" + ")" * 60, "nested deeper"), ("1 + " * 200 + "1", "longer than 500")])
def test_the_calculator_refuses_what_it_cannot_evaluate_with_a_reason(expression, message):
    with pytest.raises(CalculatorError, match=message):
        evaluate(expression)
    result = calculator(ToolCall("calculator", expression), CTX)
    assert result.error and result.text.startswith("error: ")


def tool(fn, timeout_s=0.5, **options) -> BoundTool:
    return BoundTool("t", fn, options, timeout_s)


def test_a_tool_that_hangs_raises_or_prints_10_mb_costs_one_observation():
    start = time.perf_counter()
    hung = run_tool(tool(lambda call, ctx: time.sleep(30)), ToolCall("t", ""), CTX, 100)
    assert hung.error and "within 0.5s" in hung.text and time.perf_counter() - start < 2
    raised = run_tool(tool(lambda call, ctx: 1 / 0), ToolCall("t", ""), CTX, 100)
    assert raised.error and "ZeroDivisionError" in raised.text
    flood = run_tool(tool(lambda call, ctx: "x" * 10_000_000), ToolCall("t", ""), CTX, 100)
    assert flood.text == "x" * 100 + " ...[cut: 10000000 characters]" and not flood.error
    wrong = run_tool(tool(lambda call, ctx: 42), ToolCall("t", ""), CTX, 100)
    assert wrong.error and "returned int" in wrong.text

    async def slow(call, ctx):
        import asyncio
        await asyncio.sleep(30)

    async def fine(call, ctx):
        return ToolResult(call.args.upper())

    assert run_tool(tool(fine), ToolCall("t", "ok"), CTX, 100) == ToolResult("OK")
    start = time.perf_counter()
    assert run_tool(tool(slow), ToolCall("t", ""), CTX, 100).error and time.perf_counter() - start < 2


def test_the_python_tool_runs_in_the_sandbox_and_returns_stdout_or_the_reason():
    assert python(ToolCall("python", "print(sum(range(10)))"), CTX) == ToolResult("45")
    flood = python(ToolCall("python", "print('x' * 10_000_000)"), CTX, output_kb=4)
    assert flood.error and "output_limit" in flood.text
    assert python(ToolCall("python", "import socket; socket.create_connection(('1.1.1.1', 80), 1)"), CTX).error
    loop = python(ToolCall("python", "while True: pass"), CTX, wall_s=1.0, cpu_s=1)
    assert loop.error and ("timeout" in loop.text or "cpu_limit" in loop.text)


def test_search_returns_the_top_passages_of_its_corpus(tmp_path):
    (tmp_path / "a.txt").write_text("Vellmar is a river town.\n\nThe capital of Ostra is Vellmar.\n\nBread is baked.")
    out = search(ToolCall("search", "capital of Ostra"), CTX, corpus=str(tmp_path), top_k=1)
    assert out == ToolResult("[1] The capital of Ostra is Vellmar.")
    assert search(ToolCall("search", "x"), CTX, corpus=str(tmp_path / "none")).error


def test_the_registry_checks_options_when_binding_and_finds_a_plugin_by_entry_point():
    assert bind(ToolSpec("search", options={"top_k": 3})).options == {"top_k": 3}
    with pytest.raises(ValueError, match="do not fit"):
        bind(ToolSpec("calculator", options={"precision": 3}))
    with pytest.raises(ToolNotFound, match="not a built-in"):
        bind(ToolSpec("no_such_tool"))
    with pytest.raises(ToolNotFound, match="has no callable"):
        bind(ToolSpec("tools.calculator:nothing"))
    plugin = bind(ToolSpec("convert_units"))            # examples/units-tool, installed by `make install`
    assert plugin.fn.__module__ == "tether_units"
    assert run_tool(plugin, ToolCall("convert_units", "3 km in m"), CTX, 100) == ToolResult("3000 m")
    assert run_tool(plugin, ToolCall("convert_units", "3 km in kg"), CTX, 100).error
    with pytest.raises(ValueError, match="two tools are named 'calculator'"):
        bind_tools(EpisodeConfig(tools=[ToolSpec("calculator"), ToolSpec("calculator")]))


def test_parse_call_reads_the_call_a_turn_ends_with():
    assert parse_call("I add. <tool>calculator: 12 + 34</tool>") == ToolCall("calculator", "12 + 34")
    assert parse_call("<tool> search :capital of Ostra </tool>\n") == ToolCall("search", "capital of Ostra")
    assert parse_call("<tool>calculator: 1</tool> and then more") is None
    assert parse_call("no call #### 46") is None and parse_call("<tool>calculator 1 + 2</tool>") is None


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    text = ["<tool>calculator: 12 + 34</tool><result>46</result> The sum is 46. #### 46"] * 50
    return train_tokenizer(text, 300, tmp_path_factory.mktemp("tok"), 128)


def test_the_default_environment_appends_results_tokenised_once_and_ends_on_a_plain_turn(tokenizer):
    [env] = make_environments(EpisodeConfig(tools=[ToolSpec("calculator")], max_turns=3), tokenizer, 1)
    assert isinstance(env, ToolEnvironment) and env.stop == ["</tool>"]
    task = Task(sample=None, prompt_ids=[5, 6, 7], solution="")
    assert env.reset(task) == [5, 6, 7]

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    step = env.step(ids("Add. <tool>calculator: 12 + 34</tool>"))
    assert not step.done and step.observation == ids("<result>46</result>")
    assert step.reward_parts == {"tool_calls": 1.0, "tool_errors": 0.0}
    unknown = env.step(ids("<tool>abacus: 1</tool>"))
    assert not unknown.done and tokenizer.decode(unknown.observation).startswith("<result>error: no tool 'abacus'")
    assert unknown.reward_parts["tool_errors"] == 1.0
    assert env.step(ids("<tool>calculator: 1 + 1</tool>")).done          # the third turn is the last
    env.reset(task)
    final = env.step(ids("The sum is 46. #### 46"))
    assert final.done and final.observation == []


def test_a_tool_sees_the_question_and_never_the_reference_answer(tokenizer):
    from verifiers.types import Sample
    [env] = make_environments(EpisodeConfig(tools=[ToolSpec("tests.fixtures.tools:echo_context", name="peek")]),
                              tokenizer, 1)
    env.reset(Task(sample=Sample(prompt="What is 12 + 34?", answer="4646"), prompt_ids=[5], solution="#### 4646"))
    seen = tokenizer.decode(env.step(tokenizer("<tool>peek: x</tool>", add_special_tokens=False)["input_ids"])
                            .observation)
    assert "question='What is 12 + 34?'" in seen and "4646" not in seen
