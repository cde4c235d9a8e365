"""The `format` built-in verifier: reward shaping for responses laid out as tagged sections, by default
`<think>...</think><answer>...</answer>`.

Options come from the verifier's entry in the run config, e.g.
`verifiers: [{fn: format, weight: 0.1, options: {tags: [reason, answer], max_chars: 2000}}]`."""
from __future__ import annotations

import re
from typing import Sequence

from verifiers.types import Sample, Verdict

# The chat markers of data.tokenizer (EOS, END), repeated here so verifier workers need not import
# transformers.
_TRAILING_MARKERS = re.compile(r"(?:\s*(?:<\|eos\|>|<\|end\|>))+\s*$")
_TAG_NAME = re.compile(r"[A-Za-z][\w-]*")
LENGTH_ONLY_SCORE = 0.5
"""Score when the sections are right and only the length is out of bounds."""


def tag_format(sample: Sample, response: str, *, tags: Sequence[str] = ("think", "answer"),
               min_chars: int = 1, max_chars: int = 4000) -> Verdict:
    """Whether the response is exactly the given tags in order, each once, e.g.
    `<think>...</think> <answer>...</answer>`, with nothing but whitespace between or around them
    (trailing <|eos|>/<|end|> markers are ignored), each section non-empty after stripping, and the
    response (stripped of those markers and surrounding whitespace) min_chars..max_chars long.

    Score 1.0 when all hold; 0.5 when the sections are right but the length is out of bounds; else 0.0.
    Passed only at 1.0. The reason lists what failed: "missing </answer>", "<answer> appears 2 times",
    "tags out of order: answer, think (expected think, answer)", "<answer> inside <think>",
    "text before <think>", "empty <answer>", "length 5000 > 4000". `sample` is not used: the format
    does not depend on the question."""
    tags = list(tags)
    _check_options(tags, min_chars, max_chars)
    text = _TRAILING_MARKERS.sub("", response).strip()
    problems = _section_problems(text, tags)
    length_problems = ([f"length {len(text)} < {min_chars}"] if len(text) < min_chars else []) + \
                      ([f"length {len(text)} > {max_chars}"] if len(text) > max_chars else [])
    if problems:
        return Verdict(0.0, False, "; ".join(problems + length_problems))
    if length_problems:
        return Verdict(LENGTH_ONLY_SCORE, False, length_problems[0])
    return Verdict(1.0, True, "tags " + ", ".join(tags) + f" in order, length {len(text)}")


def _check_options(tags: list[str], min_chars: int, max_chars: int) -> None:
    if not tags:
        raise ValueError("tag_format: tags is empty; name at least one tag, e.g. tags: [answer]")
    bad = [t for t in tags if not isinstance(t, str) or not _TAG_NAME.fullmatch(t)]
    if bad:
        raise ValueError(f"tag_format: tags {bad} are not tag names (a letter, then letters, digits, _ or -)")
    if len(set(tags)) != len(tags):
        raise ValueError(f"tag_format: tags {tags} name a tag twice")
    if not 0 <= min_chars <= max_chars:
        raise ValueError(f"tag_format: need 0 <= min_chars <= max_chars, got min_chars={min_chars}, "
                         f"max_chars={max_chars}")


def _section_problems(text: str, tags: list[str]) -> list[str]:
    """What keeps `text` from being exactly the tagged sections in order; [] when it is."""
    opens = {t: [m.start() for m in re.finditer(re.escape(f"<{t}>"), text)] for t in tags}
    closes = {t: [m.start() for m in re.finditer(re.escape(f"</{t}>"), text)] for t in tags}
    problems = []
    for t in tags:
        for marker, found in ((f"<{t}>", opens[t]), (f"</{t}>", closes[t])):
            if not found:
                problems.append(f"missing {marker}")
            elif len(found) > 1:
                problems.append(f"{marker} appears {len(found)} times")
    if problems:
        return problems  # positions below assume each marker exactly once

    spans = {t: (opens[t][0], closes[t][0] + len(f"</{t}>")) for t in tags}
    for t in tags:
        if closes[t][0] < opens[t][0]:
            return [f"</{t}> before <{t}>"]
    for outer in tags:
        for inner in tags:
            if inner != outer and spans[outer][0] < spans[inner][0] < spans[outer][1]:
                return [f"<{inner}> inside <{outer}>"]
    found_order = sorted(tags, key=lambda t: spans[t][0])
    if found_order != tags:
        return [f"tags out of order: {', '.join(found_order)} (expected {', '.join(tags)})"]

    if text[:spans[tags[0]][0]].strip():
        problems.append(f"text before <{tags[0]}>")
    for before, after in zip(tags, tags[1:]):
        if text[spans[before][1]:spans[after][0]].strip():
            problems.append(f"text between </{before}> and <{after}>")
    if text[spans[tags[-1]][1]:].strip():
        problems.append(f"text after </{tags[-1]}>")
    for t in tags:
        if not text[spans[t][0] + len(f"<{t}>"):closes[t][0]].strip():
            problems.append(f"empty <{t}>")
    return problems
