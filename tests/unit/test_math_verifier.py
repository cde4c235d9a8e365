"""The math verifier (verifiers/math_answers.py): extraction, normalisation, the equality rules of its
module docstring, the power/size guard, and the GSM8K test split as a reference check."""
import gzip
import json
import time
from pathlib import Path

import pytest

from verifiers.math_answers import answers_equal, extract_final_answer, math_answer, normalize_answer
from verifiers.types import Sample

GSM8K_TEST = Path(__file__).parents[1] / "data" / "gsm8k_test.jsonl.gz"


@pytest.mark.parametrize("text, expected", [
    ("2 + 2 = 4\n#### 4<|eos|>", "4"),
    ("#### 3\nchecking again\n#### 5<|end|>", "5"),                   # the last #### wins
    ("She makes 9 * 2 = $<<9*2=18>>18\n#### 18", "18"),              # calculator annotations ignored
    ("so he made $<<200000-130000=70000>>70,000\n#### 70,000", "70,000"),
    ("#### 18 dollars", "18 dollars"),                                # normalisation drops the unit later
    ("x = 12, so \\boxed{12} ... \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # last \boxed, nested braces
    ("\\boxed{12} and #### 13", "13"),                                # #### outranks \boxed
    ("the answer is \\boxed{x^{2}+1}.", "x^{2}+1"),
    ("first \\boxed{7} then \\boxed{8", "7"),                         # unbalanced last box: an earlier one
    ("I got 3 apples and then 41.", "41"),
    ("Total: 1,200 then -7 left", "-7"),
    ("from 3-4 hours", "4"),                                          # a range, not minus four
    ("half of it: 1/2", "1/2"),
    ("It is .5 of 2.25<|eos|>", "2.25"),
    ("no digits here<|eos|>", None),
    ("", None),
])
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("  42 ", "42"),
    ("$1,200", "1200"),
    ("1,450,000", "1450000"),
    ("1\\,200", "1200"),
    ("1,200 dollars.", "1200"),
    ("€20", "20"),
    ("£3.50", "3.5"),
    ("\\$18", "18"),
    ("50%", "50"),
    ("50\\%", "50"),
    ("50 percent", "50"),
    ("12.0", "12"),
    ("12.00", "12"),
    ("12.50", "12.5"),
    ("007", "7"),
    ("-0", "0"),
    ("+5", "5"),
    (".5", "0.5"),
    ("-.5", "-0.5"),
    ("540 meters", "540"),
    ("5\\text{ cm}", "5"),
    ("\\text{5 hours}", "5"),
    ("\\frac{3}{4}", "3/4"),
    ("\\dfrac{6}{8}", "3/4"),                                         # fractions are reduced
    ("\\frac12", "1/2"),
    ("3\\frac{1}{2}", "7/2"),                                         # a mixed number, not 31/2
    ("3 1/2", "7/2"),
    ("-4/2", "-2"),
    ("\\left( x+1 \\right)", "(x+1)"),
    ("2\\!\\cdot\\! x", "2*x"),
    ("\\sqrt{\\frac{1}{2}}", "sqrt(1/2)"),
    ("2^{10}", "2**(10)"),
    ("x = 5", "5"),
    ("3 pi", "3 pi"),                                                 # pi is a constant, not a unit
    ("90^\\circ", "90"),
    ("\\boxed{7}", "7"),
    ("Yes", "Yes"),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("a, b", [
    ("1/2", "0.5"),
    ("\\frac{3}{4}", "0.75"),
    ("\\dfrac{1}{4}", "25/100"),
    ("2*x+x", "3*x"),
    ("3x", "x+2x"),
    ("sqrt(8)", "2*sqrt(2)"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("(x+1)^2", "x^2+2x+1"),
    ("2^{-3}", "1/8"),
    ("x^{\\frac{1}{2}}", "\\sqrt{x}"),
    ("2^{10}", "1024"),
    ("\\frac{\\pi}{2}", "pi/2"),
    ("$1,200", "1200"),
    ("1,200 dollars", "1200.00"),
    ("50%", "50"),
    ("12.0", "12"),
    ("-10", "-10.0"),
    ("-3", "\\frac{-6}{2}"),
    ("-1/2", "-0.5"),
    ("7/2", "3\\frac{1}{2}"),
    # rounded decimals of values with no finite decimal: at least 3 significant digits
    ("1/3", "0.333"),
    ("1/3", "0.3333"),
    ("\\frac{2}{3}", "0.667"),                                        # rounded
    ("2/3", "0.6666"),                                                # truncated
    ("-1/3", "-0.3333"),
    ("sqrt(2)", "1.414"),
    ("pi", "3.1416"),
])
def test_equal(a, b):
    assert answers_equal(a, b) and answers_equal(b, a)


@pytest.mark.parametrize("a, b", [
    ("12", "120"),
    ("12", "12.0001"),
    ("1450000", "1450001"),                                           # no relative tolerance on exact numbers
    ("1/3", "0.33"),                                                  # too few digits to be an approximation
    ("1/3", "0.334"),                                                 # neither rounded nor truncated
    ("2/3", "0.66"),
    ("1/8", "0.13"),                                                  # 1/8 = 0.125 has a finite decimal
    ("1/3", "-0.333"),
    ("50%", "0.5"),                                                   # 50% means 50 here
    ("-10", "10"),
    ("3*x", "2*x"),
    ("x", "y"),
    ("2**1000", "2**1000+1"),
    ("sqrt(2)", "1.4"),                                               # 2 significant digits
    ("sqrt(2)", "1.42"),                                              # 1.41421...: neither rounded nor truncated
    ("", "0"),
    ("Yes", "No"),
])
def test_not_equal(a, b):
    assert not answers_equal(a, b) and not answers_equal(b, a)


@pytest.mark.parametrize("hostile", [
    "9**9**9", "9^9^9", "(((9**99)**99)**99)**99", "2**(x*9**9)", "x**1001", "1e99999999",
    "(a+b+c+d+f+g+h)**100", "2**(1000000007*x)", "__import__('os').system('true')", "a.b", "lambda",
    "(2", "1/0", "x" * 200, "9" * 5000, "9" * 5000 + "/7",
])
def test_hostile_expressions_return_promptly(hostile):
    start = time.perf_counter()
    assert not answers_equal(hostile, "1")
    assert time.perf_counter() - start < 2.0


def test_math_answer_verdicts():
    sample = Sample(prompt="q", answer="$1,200")
    assert math_answer(sample, "so 600 * 2 = 1200\n#### 1,200<|eos|>") == \
        math_answer(sample, "#### 1200") != math_answer(sample, "#### 1300")
    good = math_answer(Sample(prompt="q", answer="42"), "6 * 7 = 42\n#### 42<|eos|>")
    assert (good.score, good.passed, good.reason, good.applicable) == (1.0, True, "42 == 42", True)
    bad = math_answer(Sample(prompt="q", answer="42"), "#### 41")
    assert (bad.score, bad.passed, bad.reason) == (0.0, False, "41 != 42")
    none = math_answer(Sample(prompt="q", answer="42"), "I do not know<|eos|>")
    assert (none.score, none.passed, none.reason, none.applicable) == (0.0, False, "no final answer", True)
    skip = math_answer(Sample(prompt="q"), "#### 42")
    assert (skip.applicable, skip.reason) == (False, "no reference answer")


def test_gsm8k_reference_solutions_pass_and_corrupted_answers_fail():
    rows = [json.loads(line) for line in gzip.open(GSM8K_TEST, "rt", encoding="utf-8")]
    accepted = rejected_plus_one = rejected_last_digit = 0
    for row in rows:
        reference = row["answer"].split("####")[-1].strip()
        value = int(reference.replace(",", ""))
        last_digit_changed = reference[:-1] + str((int(reference[-1]) + 1) % 10)  # same number of digits
        accepted += math_answer(Sample(prompt=row["question"], answer=reference), row["answer"]).passed
        rejected_plus_one += not math_answer(Sample(prompt=row["question"], answer=str(value + 1)),
                                             row["answer"]).passed
        rejected_last_digit += not math_answer(Sample(prompt=row["question"], answer=last_digit_changed),
                                               row["answer"]).passed
    print(f"\nGSM8K test: accepted {accepted}/{len(rows)}, rejected N+1 {rejected_plus_one}/{len(rows)}, "
          f"rejected last digit changed {rejected_last_digit}/{len(rows)}")
    assert len(rows) == 1319
    assert accepted == rejected_plus_one == rejected_last_digit == 1319
