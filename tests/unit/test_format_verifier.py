"""The format verifier (verifiers/format.py): hand-made responses and the verdict each must get."""
import pytest

from verifiers.config import VerifierSpec
from verifiers.format import tag_format
from verifiers.registry import bind
from verifiers.types import Sample

SAMPLE = Sample(prompt="What is 6 * 7?", answer="42")
GOOD = "<think>6 * 7 = 42</think>\n<answer>42</answer>"  # 7 + 10 + 8 + 1 + 8 + 2 + 9 = 45 characters


@pytest.mark.parametrize("response", [
    GOOD,
    "<think>6 * 7 = 42</think><answer>42</answer>",
    "  \n<think>\n6 * 7 = 42\n</think>\n\n<answer> 42 </answer>\n<|eos|>",
    GOOD + "<|end|><|eos|>",
    "<think>a <b>bold</b> step</think><answer>42</answer>",      # other tags inside are content
])
def test_well_formed_responses_pass(response):
    verdict = tag_format(SAMPLE, response)
    assert (verdict.score, verdict.passed, verdict.applicable) == (1.0, True, True)
    assert verdict.reason.startswith("tags think, answer in order")


@pytest.mark.parametrize("response, reason", [
    ("<think>6 * 7 = 42</think>\n<answer>42", "missing </answer>"),
    ("<think>6 * 7 = 42</think>", "missing <answer>; missing </answer>"),
    ("42", "missing <think>; missing </think>; missing <answer>; missing </answer>"),
    ("<think>a</think><think>b</think><answer>42</answer>", "<think> appears 2 times; </think> appears 2 times"),
    ("<think>a</think><answer>41</answer><answer>42</answer>",
     "<answer> appears 2 times; </answer> appears 2 times"),
    ("<answer>42</answer><think>6 * 7 = 42</think>", "tags out of order: answer, think (expected think, answer)"),
    ("<think>6 * 7 <answer>42</answer></think>", "<answer> inside <think>"),
    ("<think>a<answer>42</think></answer>", "<answer> inside <think>"),
    ("</think>a<think><answer>42</answer>", "</think> before <think>"),
    ("Sure! <think>a</think><answer>42</answer>", "text before <think>"),
    ("<think>a</think> so <answer>42</answer>", "text between </think> and <answer>"),
    ("<think>a</think><answer>42</answer> Done.", "text after </answer>"),
    ("<think>a</think><answer>42</answer><|eos|> more", "text after </answer>"),  # only trailing markers go
    ("<think>  \n</think><answer>42</answer>", "empty <think>"),
    ("<think></think><answer></answer>", "empty <think>; empty <answer>"),
    ("<THINK>a</THINK><answer>42</answer>", "missing <think>; missing </think>"),  # tags are case-sensitive
])
def test_malformed_responses_fail_with_a_reason(response, reason):
    verdict = tag_format(SAMPLE, response)
    assert (verdict.score, verdict.passed, verdict.reason) == (0.0, False, reason)


def test_length_out_of_bounds_gets_partial_credit():
    long = f"<think>{'x' * 5000}</think><answer>42</answer>"  # 7 + 5000 + 8 + 8 + 2 + 9 characters
    verdict = tag_format(SAMPLE, long)
    assert (verdict.score, verdict.passed, verdict.reason) == (0.5, False, "length 5034 > 4000")
    verdict = tag_format(SAMPLE, GOOD, max_chars=40)
    assert (verdict.score, verdict.passed, verdict.reason) == (0.5, False, "length 45 > 40")
    verdict = tag_format(SAMPLE, GOOD, min_chars=100)
    assert (verdict.score, verdict.passed, verdict.reason) == (0.5, False, "length 45 < 100")
    assert tag_format(SAMPLE, GOOD, min_chars=45, max_chars=45).passed  # both bounds inclusive
    assert tag_format(SAMPLE, "\n" + GOOD + "<|eos|>\n", max_chars=45).passed  # markers and whitespace not counted


def test_bad_structure_and_length_report_both_and_score_zero():
    verdict = tag_format(SAMPLE, "<answer>42", max_chars=5)
    assert (verdict.score, verdict.reason) == (
        0.0, "missing <think>; missing </think>; missing </answer>; length 10 > 5")


def test_custom_tags():
    response = "<plan>multiply</plan> <work>6 * 7</work> <final>42</final>"
    assert tag_format(SAMPLE, response, tags=["plan", "work", "final"]).passed
    assert tag_format(SAMPLE, "<answer>42</answer>", tags=["answer"]).passed
    verdict = tag_format(SAMPLE, response, tags=["plan", "final", "work"])
    assert verdict.reason == "tags out of order: plan, work, final (expected plan, final, work)"
    assert not tag_format(SAMPLE, GOOD, tags=["answer"]).passed  # <think> section is text before <answer>


@pytest.mark.parametrize("options, message", [
    (dict(tags=[]), "tags is empty"),
    (dict(tags=["an swer"]), "not tag names"),
    (dict(tags=["<answer>"]), "not tag names"),
    (dict(tags=["answer", "answer"]), "name a tag twice"),
    (dict(min_chars=10, max_chars=5), "min_chars <= max_chars"),
    (dict(min_chars=-1), "min_chars <= max_chars"),
])
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        tag_format(SAMPLE, GOOD, **options)


def test_built_in_binds_options_from_config():
    check = bind(VerifierSpec(fn="format", options={"tags": ["answer"], "max_chars": 100}))
    assert check(SAMPLE, "<answer>42</answer><|eos|>").passed
    assert check(SAMPLE, GOOD).reason == "text before <answer>"
