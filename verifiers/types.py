"""The records of the verifier contract: a verifier is a plain function

    def my_check(sample: Sample, response: str) -> Verdict      # or `async def`

where `sample` carries what the dataset row knows (reference answer, unit tests) and `response` is
the model's text. Verdicts cross role boundaries (verifier workers -> driver -> reward rubric)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional, Union


@dataclass
class Sample:
    """One dataset row as verifiers see it. Fields a dataset does not have stay None."""
    prompt: str
    """The question or task text the model was given (without chat markers)."""
    answer: Optional[str] = None
    """Reference final answer (math): '42', '3/4', '$1,200', '\\frac{1}{2}'."""
    tests: Optional[str] = None
    """Unit tests as Python code (code): HumanEval's `def check(candidate): ...` or plain asserts."""
    entry_point: Optional[str] = None
    """HumanEval: the function the tests call (`check(entry_point)`); None for plain asserts."""
    id: str = ""
    """Dataset row id, carried into logs."""
    meta: dict[str, str] = field(default_factory=dict)
    """Extra string fields of the row, for user verifiers (e.g. a required citation)."""

    @staticmethod
    def from_row(row: dict, where: str) -> "Sample":
        """A jsonl/parquet row: prompt (or question), answer (a GSM8K-style worked answer keeps only what
        follows '####'), tests (or test), entry_point, id (or task_id); other string fields go to meta."""
        prompt = row.get("prompt", row.get("question"))
        if not isinstance(prompt, str):
            raise ValueError(f"{where}: needs a 'prompt' or 'question' text field (fields: {', '.join(row)})")
        answer = row.get("answer")
        if answer is not None:
            answer = str(answer).rsplit("####", 1)[-1].strip()
        known = {"prompt", "question", "answer", "tests", "test", "entry_point", "id", "task_id"}
        return Sample(prompt=prompt, answer=answer, tests=row.get("tests", row.get("test")),
                      entry_point=row.get("entry_point"), id=str(row.get("id", row.get("task_id", ""))),
                      meta={k: v for k, v in row.items() if k not in known and isinstance(v, str)})


@dataclass
class Verdict:
    score: float
    """In [0, 1] for the built-in verifiers; a rubric weights it."""
    passed: bool
    """The verifier's yes/no (pass rates are reported per verifier)."""
    reason: str = ""
    """Why, in a few words: what was compared, or what failed (timeout, exception, sandbox limit)."""
    applicable: bool = True
    """False when the verifier has nothing to check on this sample (e.g. no reference answer):
    the rubric leaves it out of the reward and logs it as not applicable, never as a silent 0."""

    @staticmethod
    def fail(reason: str) -> "Verdict":
        return Verdict(0.0, False, reason)

    @staticmethod
    def not_applicable(reason: str) -> "Verdict":
        return Verdict(0.0, False, reason, applicable=False)


Verifier = Callable[[Sample, str], Union[Verdict, Awaitable[Verdict]]]
