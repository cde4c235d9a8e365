"""Preference pairs (prompt, chosen, rejected) for reward-model training and DPO.

Generated pairs put a correct worked solution from reasoning_gym against the same text with one
number changed, so that only the arithmetic tells them apart (same length, same characters
outside the changed digits, no marker words):

    final: the `#### N` number is replaced; the worked lines stay correct, so N disagrees with them.
    step:  the result of one worked line other than the last is replaced, and so is every later use
           of it as an operand (not as a result), so the text stays consistent with itself: no copied
           number disagrees with where it came from; only that line's arithmetic, and that of the
           lines using it, is wrong. Results written after it, and `#### N`, are left as they were.

Pairs can also be read from a .jsonl/.parquet file or an HF dataset with prompt/chosen/rejected
(and optional margin) fields; those are used verbatim and their corruption is `none`."""
from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from data.config import Corruption, PairSource, PairSourceKind
from data.corpus import Problem, format_answer, problems, with_assertion, wrong_answer
from data.jsonl import jsonl_rows
from data.tokenizer import EOS, format_prompt

PAIR_FIELDS = ("prompt", "chosen", "rejected")

# generated_pairs draws at most this many problems per requested pair before giving up
MAX_DRAWS_PER_PAIR = 16

# reasoning_gym seeds problem j with `seed + j`, so the i-th generated source uses
# seed + (i + 1) * SOURCE_SEED_STRIDE: its problems are not the pretraining corpus's (seed + 0..count)
# nor another source's, as long as every count stays below the stride.
SOURCE_SEED_STRIDE = 1_000_000_000

# The integer digits of a number: optional minus, digits with optional thousands commas; the
# fraction after them is matched (so it is not read as another number) but never changed.
_NUMBER = r"-?(?P<digits>\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d.,]?\d)"
# A line's computed result: a number right after `=` (after an optional currency sign) that does not
# start an expression ("= 1/4", "= 4+2(20)" are not results).
_STEP_RESULT = re.compile(r"=[ \t]*[$£€]?" + _NUMBER + r"(?![ \t]*[-+*/×x÷^(][ \t]*[\d($£€])")
_FINAL_ANSWER = re.compile(r"^#### " + _NUMBER, re.M)


@dataclass
class PreferencePair:
    prompt: str
    """The chat-formatted prompt (format_prompt(question) for generated pairs)."""
    chosen: str
    """The preferred answer (the correct worked answer, format_answer(solution, answer))."""
    rejected: str
    """The dispreferred answer (the same worked answer with one number corrupted)."""
    corruption: Corruption
    """How rejected was made from chosen; `none` for pairs read from a file or dataset."""
    margin: float = 0.0
    """Bradley-Terry margin the pair asks for (a pairs file may give one)."""
    question: str | None = None
    """Generated pairs: the bare question, so that another model's chat template can render the prompt."""


def pair_texts(pair: PreferencePair, tokenizer) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) in the policy's own chat format: a generated pair's question goes through
    the tokenizer's chat template and its answers end with the tokenizer's end-of-sequence token (for
    tether's own tokenizer that is exactly the stored text); pairs read from files are used verbatim."""
    if pair.question is None:
        return pair.prompt, pair.chosen, pair.rejected
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": pair.question}], add_generation_prompt=True,
                                           tokenize=False)
    return (prompt, *(a.removesuffix(EOS) + tokenizer.eos_token for a in (pair.chosen, pair.rejected)))


def generated_pairs(name: str, count: int, seed: int, options: dict | None = None,
                    kinds: Sequence[Corruption] = (Corruption.final, Corruption.step)) -> list[PreferencePair]:
    """`count` pairs from seeded reasoning_gym problems, split evenly between `kinds`.

    Problem i is offered to kinds[i % len(kinds)] first, then to the next kinds that still need pairs;
    a problem that no kind can use (e.g. a one-line solution when only `step` needs pairs) is skipped,
    and more problems are drawn (up to MAX_DRAWS_PER_PAIR * count) until every kind has its share."""
    kinds = list(kinds)
    if not kinds or Corruption.none in kinds or len(set(kinds)) != len(kinds):
        raise ValueError(f"generated_pairs: kinds must be distinct values among final, step, wrong, agree (got {kinds})")
    if count < 0:
        raise ValueError(f"generated_pairs: count must be >= 0 (got {count})")
    if count == 0:
        return []
    quotas = {kind: count // len(kinds) + (i < count % len(kinds)) for i, kind in enumerate(kinds)}
    size, limit = count, MAX_DRAWS_PER_PAIR * count
    while True:
        pairs, made = _assign(problems(name, size, seed, options), kinds, quotas, seed)
        if len(pairs) == count:
            return pairs
        if size >= limit:
            short = ", ".join(f"{made[k]} of {quotas[k]} '{k.value}'" for k in kinds)
            raise ValueError(f"generated_pairs: {size} '{name}' problems (options {options or {}}) gave only {short} "
                             f"pairs; 'step' needs solutions with two or more lines that compute a result, "
                             f"'final' a numeric answer, 'wrong' and 'agree' an integer result right before it")
        size = min(2 * size, limit)


def _assign(items: list[Problem], kinds: list[Corruption], quotas: dict[Corruption, int],
            seed: int) -> tuple[list[PreferencePair], dict[Corruption, int]]:
    pairs, made = [], dict.fromkeys(kinds, 0)
    for i, problem in enumerate(items):
        if len(pairs) == sum(quotas.values()):
            break
        chosen = format_answer(problem.solution, problem.answer)
        for j in range(len(kinds)):
            kind = kinds[(i + j) % len(kinds)]
            if made[kind] == quotas[kind]:
                continue
            # a str seed is hashed with sha512, so the draw does not depend on PYTHONHASHSEED
            rng = random.Random(f"{seed}/{i}/{kind.value}")
            if kind == Corruption.agree:
                answers = _agreeing_and_disagreeing(chosen, rng)
                if answers is not None:
                    question = with_assertion(problem.question, final_number(answers[0]))
                    pairs.append(PreferencePair(format_prompt(question), *answers, kind, question=question))
                    made[kind] += 1
                    break
                continue
            rejected = corrupted_answer(chosen, kind, rng)
            if rejected is not None:
                pairs.append(PreferencePair(format_prompt(problem.question), chosen, rejected, kind,
                                            question=problem.question))
                made[kind] += 1
                break
    return pairs, made


def _agreeing_and_disagreeing(correct: str, rng: random.Random) -> tuple[str, str] | None:
    """(the answer that says the asserted wrong W, the one preferred less): the correct answer, or with even odds
    another wrong answer W'. Each concludes consistently (its last worked result is its `#### N`), so the pair
    differs only in agreeing: not in being inconsistent, nor (with W' against W) in being wrong, features a
    reward model would learn instead of agreement."""
    truth = _integer_conclusion(correct)
    if truth is None:
        return None
    asserted = other = wrong_answer(truth, rng)             # W: drawn as tasks.*.assert_wrong draws it
    while other == asserted:
        other = wrong_answer(truth, rng)
    return _concluding(correct, asserted), correct if rng.random() < 0.5 else _concluding(correct, other)


def _integer_conclusion(answer: str) -> int | None:
    """The answer's integer result when it concludes `= T` then `#### T`, else None."""
    truth = final_number(answer)
    if f"= {truth}\n#### {truth}" not in answer or not re.fullmatch(r"-?\d+", truth):
        return None
    return int(truth)


def _concluding(answer: str, n: int) -> str:
    """`answer` with its last worked result and its `#### N` both n."""
    truth = final_number(answer)
    return answer.replace(f"= {truth}\n#### {truth}", f"= {n}\n#### {n}")


def corrupted_answer(answer: str, kind: Corruption, rng: random.Random) -> str | None:
    """`answer` (a format_answer text) with one number's integer digits redrawn, or None when it has
    no number of that kind: no numeric `#### N` (final), no worked line before the last one with a
    result after `=` (step), no integer result concluding `= T` then `#### T` (wrong)."""
    if kind == Corruption.wrong:
        truth = _integer_conclusion(answer)
        return None if truth is None else _concluding(answer, wrong_answer(truth, rng))
    if kind == Corruption.final:
        spans = [m.span("digits") for m in _FINAL_ANSWER.finditer(answer)][-1:]
    elif kind == Corruption.step:
        # the last worked line computes the final result; the `#### N` line after it is not a step
        intermediate_end = sum(len(line) + 1 for line in answer.split("\n")[:-2])
        spans = [m.span("digits") for m in _STEP_RESULT.finditer(answer, 0, intermediate_end)]
    else:
        raise ValueError(f"corrupted_answer: cannot make a '{kind.value}' corruption (use final, step or wrong)")
    if not spans:
        return None
    start, end = rng.choice(spans)
    old, new = answer[start:end], _other_number(answer[start:end], rng)
    if kind == Corruption.final:
        return answer[:start] + new + answer[end:]
    worked_end = answer.rfind("\n#### ")
    later = answer[end:worked_end] if worked_end > end else ""
    carried = _operand_use(old).sub(lambda m: new, later)
    return answer[:start] + new + carried + answer[end + len(later):]


def final_number(answer: str) -> str:
    """The number of the last `#### N` line."""
    return [m.group(0) for m in _FINAL_ANSWER.finditer(answer)][-1].removeprefix("#### ")


def _operand_use(number: str) -> re.Pattern:
    """Whole-number occurrences of `number` that are not results (not right after `=`)."""
    return re.compile(r"(?<![=\d.,])(?<![=][ \t])(?<![=][ \t][$£€])(?<![=][$£€])" + re.escape(number)
                      + r"(?![\d]|[.,]\d)")


def _other_number(number: str, rng: random.Random) -> str:
    """Different digits in the same places (commas stay); a multi-digit number keeps a non-zero lead."""
    width = sum(c.isdigit() for c in number)
    while True:
        digits = [rng.choice("123456789" if i == 0 and width > 1 else "0123456789") for i in range(width)]
        new = "".join(digits.pop(0) if c.isdigit() else c for c in number)
        if new != number:
            return new


def load_pairs(path_or_name: str, count: int = 0, hf_split: str | None = None,
               subset: str | None = None) -> list[PreferencePair]:
    """At most `count` pairs (0 = all) from a local .jsonl or .parquet file, or, when hf_split is
    given, from that split of the HF dataset `path_or_name`. Rows need prompt, chosen and rejected
    strings (used verbatim, so write them in the policy's chat format) and may give a margin."""
    if hf_split is not None:
        rows = hf_rows(path_or_name, hf_split, subset)
    else:
        rows = file_rows(Path(path_or_name))
    return [_pair_from_row(row, where) for where, row in itertools.islice(rows, count or None)]


def file_rows(path: Path) -> Iterable[tuple[str, dict]]:
    if not path.exists():
        raise FileNotFoundError(f"pairs file {path} does not exist")
    if path.suffix == ".jsonl":
        for n, row in jsonl_rows(path, "rows"):
            yield f"{path}:{n}", row
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq
        table = pq.read_table(path)
        missing = [f for f in PAIR_FIELDS if f not in table.column_names]
        if missing:
            raise KeyError(f"{path} has no column {', '.join(missing)} (columns: {', '.join(table.column_names)})")
        for n, row in enumerate(table.to_pylist(), 1):
            yield f"{path} row {n}", row
    else:
        raise ValueError(f"pairs file {path}: unsupported suffix '{path.suffix}' (use .jsonl or .parquet)")


def hf_rows(name: str, split: str, subset: str | None = None) -> Iterable[tuple[str, dict]]:
    try:
        import datasets
    except ImportError:
        raise ImportError(f"pairs source '{name}' is an HF dataset: pip install datasets") from None
    for n, row in enumerate(datasets.load_dataset(name, subset, split=split, streaming=True), 1):
        yield f"{name} [{split}] row {n}", row


def _pair_from_row(row: dict, where: str) -> PreferencePair:
    missing = [f for f in PAIR_FIELDS if f not in row]
    if missing:
        raise KeyError(f"{where} has no field {', '.join(missing)} (fields: {', '.join(row) or 'none'})")
    texts = [row[f] for f in PAIR_FIELDS]
    if not all(isinstance(t, str) for t in texts):
        kinds = ", ".join(f"{f}: {type(t).__name__}" for f, t in zip(PAIR_FIELDS, texts))
        raise TypeError(f"{where}: prompt, chosen and rejected must be strings ({kinds})")
    margin = row.get("margin")
    return PreferencePair(*texts, Corruption.none, 0.0 if margin is None else float(margin))


def load_pair_sources(sources: Sequence[PairSource], seed: int) -> list[PreferencePair]:
    """Every source's pairs, in order (generated sources with the seed stride above)."""
    out: list[PreferencePair] = []
    for i, source in enumerate(sources):
        if source.kind == PairSourceKind.generated:
            out += generated_pairs(source.name, source.count, seed + (i + 1) * SOURCE_SEED_STRIDE,
                                   source.options, source.corruptions)
        elif source.kind == PairSourceKind.file:
            out += load_pairs(source.name, source.count)
        elif source.kind == PairSourceKind.hf:
            out += load_pairs(source.name, source.count, hf_split=source.split, subset=source.subset)
    return out


def split_pairs(pairs: Sequence[PreferencePair], held_out_fraction: float,
                seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held_out): a seeded draw of prompts whose pairs make up about held_out_fraction of all
    pairs (at least one pair when the fraction is positive). Pairs that share a prompt stay on one side,
    so a problem drawn twice cannot be trained on and scored as held out. Both keep the input order."""
    if not 0 <= held_out_fraction < 1:
        raise ValueError(f"split_pairs: held_out_fraction must be in [0, 1) (got {held_out_fraction})")
    by_prompt: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_prompt.setdefault(pair.prompt, []).append(i)
    groups = list(by_prompt.values())
    random.Random(seed).shuffle(groups)
    target = max(1, round(held_out_fraction * len(pairs))) if held_out_fraction > 0 else 0
    held: set[int] = set()
    for group in groups:
        if len(held) >= target:
            break
        held.update(group)
    if pairs and len(held) == len(pairs):
        raise ValueError(f"split_pairs: holding out {held_out_fraction} of {len(pairs)} pairs leaves none to train "
                         f"on (they have {len(groups)} distinct prompt(s))")
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]
