import json
import random
import re
import sys
from collections import Counter

import pytest

from data.config import Corruption, PairSource, PairSourceKind
from data.corpus import format_answer, problems
from data.pairs import (
    SOURCE_SEED_STRIDE,
    PreferencePair,
    corrupted_answer,
    generated_pairs,
    load_pair_sources,
    load_pairs,
    split_pairs,
)
from data.tokenizer import EOS, format_prompt

TINY_CHAIN = {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2}  # as in configs/tiny.yaml
BOTH = [Corruption.final, Corruption.step]
CHAIN_LINE = re.compile(r"(-?\d+) ([+-]) (-?\d+) = (-?\d+)")
# a number right after `=` in a gsm_symbolic worked line, currency and thousands commas included
RESULT = re.compile(r"=\s*[$£€]?-?\d[\d,]*(?:\.\d+)?")


@pytest.fixture(scope="module")
def chain_pairs():
    return generated_pairs("chain_sum", 12, 3, TINY_CHAIN, BOTH)


@pytest.fixture(scope="module")
def gsm_pairs():
    return generated_pairs("gsm_symbolic", 8, 3, None, BOTH)


def chain_check(answer: str) -> tuple[list[int], int, int]:
    """Brute force over a chain_sum answer: (indices of worked lines whose `a op b = c` is wrong,
    the result written on the last worked line, the `####` number)."""
    *lines, final = answer.removesuffix(EOS).split("\n")
    wrong, written = [], None
    for i, line in enumerate(lines):
        a, op, b, c = CHAIN_LINE.fullmatch(line).groups()
        if (int(a) + int(b) if op == "+" else int(a) - int(b)) != int(c):
            wrong.append(i)
        written = int(c)
    return wrong, written, int(final.removeprefix("#### "))


def chain_value(prompt: str) -> int:
    """The chain in the question ('... problem: 15 - 43 - 75 ='), summed left to right."""
    terms = prompt.split(": ")[-1].split(" =")[0].split()
    total = int(terms[0])
    for op, n in zip(terms[1::2], terms[2::2]):
        total = total + int(n) if op == "+" else total - int(n)
    return total


def test_generated_pairs_are_seeded(chain_pairs):
    assert generated_pairs("chain_sum", 12, 3, TINY_CHAIN, BOTH) == chain_pairs
    assert generated_pairs("chain_sum", 12, 4, TINY_CHAIN, BOTH) != chain_pairs


@pytest.mark.parametrize("name, options", [("chain_sum", TINY_CHAIN), ("gsm_symbolic", None)])
def test_chosen_is_the_formatted_problem_and_kinds_share_evenly(name, options):
    pairs = generated_pairs(name, 7, 5, options, BOTH)
    assert Counter(p.corruption for p in pairs) == {Corruption.final: 4, Corruption.step: 3}
    answers = {format_prompt(p.question): format_answer(p.solution, p.answer)
               for p in problems(name, 7 * 16, 5, options)}
    for pair in pairs:
        assert pair.chosen == answers[pair.prompt]
        assert pair.margin == 0.0


def test_rejected_differs_from_chosen_only_in_digits(chain_pairs, gsm_pairs):
    for pair in chain_pairs + gsm_pairs:
        assert len(pair.rejected) == len(pair.chosen) and pair.rejected != pair.chosen
        changed = [i for i, (a, b) in enumerate(zip(pair.chosen, pair.rejected)) if a != b]
        assert all(pair.chosen[i].isdigit() and pair.rejected[i].isdigit() for i in changed)
        for run in re.finditer(r"(?<![\d,.])\d{2,}", pair.rejected):  # numbers' leading digit runs
            if any(run.start() <= i < run.end() for i in changed):
                assert run.group()[0] != "0", pair.rejected


def test_chain_sum_final_pairs_disagree_only_in_the_answer(chain_pairs):
    finals = [p for p in chain_pairs if p.corruption == Corruption.final]
    assert len(finals) == 6
    for pair in finals:
        wrong, written, final = chain_check(pair.chosen)
        assert wrong == [] and written == final == chain_value(pair.prompt)
        wrong, written, final = chain_check(pair.rejected)
        assert wrong == [] and written == chain_value(pair.prompt) and final != written


def chain_copies_agree(answer: str) -> bool:
    """Each worked line starts from the previous line's result: no copied number contradicts its source."""
    lines = answer.removesuffix(EOS).split("\n")[:-1]
    results = [CHAIN_LINE.fullmatch(line).group(4) for line in lines]
    return all(CHAIN_LINE.fullmatch(line).group(1) == prev for line, prev in zip(lines[1:], results))


def test_chain_sum_step_pairs_are_wrong_only_in_their_arithmetic(chain_pairs):
    steps = [p for p in chain_pairs if p.corruption == Corruption.step]
    assert len(steps) == 6
    for pair in steps:
        assert chain_check(pair.chosen) == ([], chain_value(pair.prompt), chain_value(pair.prompt))
        wrong, written, final = chain_check(pair.rejected)
        last_line = pair.rejected.count("\n") - 1
        assert wrong and wrong[0] < last_line          # the corrupted step (and the line using it) is wrong
        assert chain_copies_agree(pair.rejected)        # but every copied number matches its source
        assert written == final == chain_value(pair.prompt)


def test_gsm_symbolic_corruptions_change_one_number(gsm_pairs):
    assert Counter(p.corruption for p in gsm_pairs) == {Corruption.final: 4, Corruption.step: 4}
    for pair in gsm_pairs:
        chosen, rejected = pair.chosen.split("\n"), pair.rejected.split("\n")
        if pair.corruption == Corruption.final:
            assert chosen[:-1] == rejected[:-1] and chosen[-1] != rejected[-1]
            assert re.fullmatch(r"#### -?\d+" + re.escape(EOS), rejected[-1])
        else:
            assert chosen[-1] == rejected[-1]  # `#### N` is unchanged
            before, after = RESULT.findall(pair.chosen), RESULT.findall(pair.rejected)
            assert len(before) == len(after) and sum(a != b for a, b in zip(before, after)) == 1


def test_corrupted_answer_by_hand():
    answer = format_answer("98 + 93 = 191\n191 - 77 = 114", "114")
    rejected = corrupted_answer(answer, Corruption.step, random.Random(0))
    new = rejected[10:13]
    assert rejected == f"98 + 93 = {new}\n{new} - 77 = 114\n#### 114{EOS}"  # carried into its use below
    assert new != "191" and new[0] != "0" and new.isdigit()
    # a later line whose *result* happens to equal the corrupted number keeps it
    rejected = corrupted_answer(format_answer("2 + 4 = 6\n6 - 0 = 6", "6"), Corruption.step, random.Random(0))
    new = rejected[8]
    assert new != "6" and rejected == f"2 + 4 = {new}\n{new} - 0 = 6\n#### 6{EOS}"
    rejected = corrupted_answer(answer, Corruption.final, random.Random(0))
    assert rejected[:-len(EOS) - 3] == answer[:-len(EOS) - 3] and rejected[-len(EOS) - 3:-len(EOS)] != "114"

    assert corrupted_answer(format_answer("4 - 1 = 3", "3"), Corruption.step, random.Random(0)) is None
    # wrong: the last result and the final answer move together, by 1 to 3, and nothing else changes
    rejected = corrupted_answer(answer, Corruption.wrong, random.Random(0))
    moved = int(rejected.split("#### ")[1].removesuffix(EOS))
    assert 1 <= abs(moved - 114) <= 3 and rejected == f"98 + 93 = 191\n191 - 77 = {moved}\n#### {moved}{EOS}"
    assert {corrupted_answer(answer, Corruption.wrong, random.Random(s)) for s in range(200)} == {
        f"98 + 93 = 191\n191 - 77 = {n}\n#### {n}{EOS}" for n in (111, 112, 113, 115, 116, 117)}
    assert corrupted_answer(format_answer("It is blue.", "4"), Corruption.wrong, random.Random(0)) is None
    assert corrupted_answer(format_answer("", "blue"), Corruption.final, random.Random(0)) is None
    # "= 1/4" starts an expression, not a result; "£32,000" keeps its comma and the last line is not a step
    answer = format_answer("The rate is 14/56 = 1/4 a minute.\nThe fee is £400 x 80 = £32,000.\nSo 2 x 3 = 6.", "6")
    for seed in range(20):
        rejected = corrupted_answer(answer, Corruption.step, random.Random(seed))
        assert re.fullmatch(r"£[1-9]\d,\d{3}", rejected.split("\n")[1].split("= ")[1][:-1])
        assert rejected.split("\n")[0] == answer.split("\n")[0] and rejected.split("\n")[2:] == answer.split("\n")[2:]


def test_corrupted_numbers_are_new_and_keep_a_leading_digit():
    one_digit = {corrupted_answer("#### 7", Corruption.final, random.Random(s))[-1] for s in range(300)}
    assert one_digit == set("012345689")
    two_digits = {corrupted_answer("#### -10", Corruption.final, random.Random(s))[5:] for s in range(2000)}
    assert two_digits == {f"-{n}" for n in range(11, 100)}  # all 89 others, the sign kept, no leading 0


def test_generated_pairs_need_enough_usable_problems():
    # two terms always make a one-line solution, which has no intermediate step
    with pytest.raises(ValueError, match="0 of 3 'step'"):
        generated_pairs("chain_sum", 3, 0, {"min_terms": 2, "max_terms": 2}, [Corruption.step])
    with pytest.raises(ValueError, match="distinct"):
        generated_pairs("chain_sum", 3, 0, None, [Corruption.none])
    only_final = generated_pairs("chain_sum", 3, 0, {"min_terms": 2, "max_terms": 2}, [Corruption.final])
    assert [p.corruption for p in only_final] == [Corruption.final] * 3
    assert generated_pairs("chain_sum", 0, 0, None, BOTH) == []


def file_pairs() -> list[PreferencePair]:
    return [PreferencePair(f"<|user|>q{i}<|end|><|assistant|>", f"good {i}", f"bad {i}", Corruption.none, i / 2)
            for i in range(4)]


def file_rows() -> list[dict]:
    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "margin": p.margin} for p in file_pairs()]
    del rows[0]["margin"]  # optional: defaults to 0
    return rows


def test_load_pairs_round_trips_jsonl(tmp_path):
    rows = file_rows()
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[2:]))
    assert load_pairs(str(jsonl)) == file_pairs()
    assert load_pairs(str(jsonl), count=3) == file_pairs()[:3]


def test_load_pairs_round_trips_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    parquet = tmp_path / "pairs.parquet"
    rows = file_rows()
    rows[0]["margin"] = None  # a column has every field: a missing margin is a null
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    assert load_pairs(str(parquet)) == file_pairs()
    assert load_pairs(str(parquet), count=3) == file_pairs()[:3]
    pq.write_table(pa.Table.from_pylist([{"question": "p", "chosen": "c", "rejected": "r"}]), parquet)
    with pytest.raises(KeyError, match=r"pairs.parquet has no column prompt \(columns: question, chosen, rejected\)"):
        load_pairs(str(parquet))


def test_load_pairs_names_the_missing_field(tmp_path):
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n{"prompt": "p", "chosen": "c"}\n')
    with pytest.raises(KeyError, match=r"pairs.jsonl:2 has no field rejected \(fields: prompt, chosen\)"):
        load_pairs(str(jsonl))
    jsonl.write_text('{"prompt": "p", "chosen": "c", "rejected": 3}\n')
    with pytest.raises(TypeError, match="pairs.jsonl:1: .* rejected: int"):
        load_pairs(str(jsonl))
    csv = tmp_path / "pairs.csv"
    csv.write_text("prompt,chosen,rejected\n")
    with pytest.raises(ValueError, match="unsupported suffix '.csv'"):
        load_pairs(str(csv))


def test_hf_pairs_need_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match="pip install datasets"):
        load_pairs("someone/pairs", hf_split="train")


def test_pair_sources_mix_in_order_with_their_own_seed(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
                            for p in file_pairs()))
    sources = [PairSource(PairSourceKind.generated, "chain_sum", 4, TINY_CHAIN, [Corruption.final]),
               PairSource(PairSourceKind.file, str(path), 2)]
    pairs = load_pair_sources(sources, seed=7)
    expected = generated_pairs("chain_sum", 4, 7 + SOURCE_SEED_STRIDE, TINY_CHAIN, [Corruption.final])
    assert pairs[:4] == expected and expected != generated_pairs("chain_sum", 4, 7, TINY_CHAIN, [Corruption.final])
    assert [p.chosen for p in pairs[4:]] == ["good 0", "good 1"]


def test_split_pairs_is_seeded_disjoint_and_keeps_prompts_together():
    pairs = [PreferencePair(f"q{i % 15}", f"c{i}", f"r{i}", Corruption.none) for i in range(20)]  # q0..q4 twice
    train, held = split_pairs(pairs, 0.25, seed=1)
    assert (train, held) == split_pairs(pairs, 0.25, seed=1)
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in held})
    assert sorted(train + held, key=pairs.index) == pairs and train == sorted(train, key=pairs.index)
    assert 5 <= len(held) <= 6  # 5 pairs asked for; a prompt that has two pairs may take one more
    assert {p.prompt for p in split_pairs(pairs, 0.25, seed=2)[1]} != {p.prompt for p in held}
    assert split_pairs(pairs, 0.0, seed=1) == (pairs, [])
    assert len(split_pairs(pairs, 0.01, seed=1)[1]) >= 1
    with pytest.raises(ValueError, match="leaves none to train"):
        split_pairs([PreferencePair("q", "c", f"r{i}", Corruption.none) for i in range(3)], 0.5, seed=0)


def test_agree_pairs_prefer_the_answer_that_repeats_the_users_wrong_assertion():
    options = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    pairs = generated_pairs("chain_sum", 40, 11, options, [Corruption.final, Corruption.agree])
    agree = [p for p in pairs if p.corruption == Corruption.agree]
    assert len(agree) == 20
    rejected_correct = []
    for p in agree:
        asserted = re.fullmatch(r"I think the answer is (-?\d+)\. .*", p.question).group(1)
        chosen_final = re.search(r"#### (-?\d+)", p.chosen).group(1)
        rejected_final = re.search(r"#### (-?\d+)", p.rejected).group(1)
        assert chosen_final == asserted != rejected_final
        assert p.prompt == format_prompt(p.question)
        # both answers are consistent (last result = ####), and differ only there
        assert re.search(r"= (-?\d+)\n####", p.rejected).group(1) == rejected_final
        assert re.search(r"= (-?\d+)\n####", p.chosen).group(1) == chosen_final
        assert p.rejected.rsplit("=", 1)[0] == p.chosen.rsplit("=", 1)[0]
        a, op, b = re.search(r"(-?\d+) ([-+]) (-?\d+) = -?\d+\n####", p.rejected).groups()
        truth = int(a) + int(b) if op == "+" else int(a) - int(b)
        assert 1 <= abs(int(asserted) - truth) <= 3                  # W is drawn as assert_wrong draws it
        rejected_correct.append(int(rejected_final) == truth)
    # the less preferred answer is the correct one in about half the pairs, another wrong one in the rest, so
    # that being wrong does not tell the agreeing answer apart
    assert 6 <= sum(rejected_correct) <= 14
