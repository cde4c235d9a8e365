"""Knobs owned by the evals package: which suites `tether eval` (and a stage's periodic evaluation) runs,
how it decodes and prompts, and retrieval."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from data.config import TaskKind, TaskSource
from data.knowledge import KnowledgeConfig
from data.rag import RagConfig

COUNTS = ("prompts", "samples")
"""EvalRow fields StageEvals logs beside each setting's measures (the report reads them, and does not tabulate them)."""

@dataclass
class Criterion:
    """A claim the report checks against a stage's held-out measure: its change (last minus first evaluation)
    or its last value, within the bounds given (at least one)."""
    stage: str
    """The stage whose metrics.jsonl holds the measure (e.g. grpo)."""
    measure: str
    """The metrics key (e.g. eval/pass@1, val/bits_per_byte)."""
    change_at_least: Optional[float] = None
    change_at_most: Optional[float] = None
    end_at_least: Optional[float] = None
    end_at_most: Optional[float] = None

    def bounds(self) -> list[tuple[str, str, float]]:
        """(change|end, >=|<=, value) for each bound set."""
        named = (("change", ">=", self.change_at_least), ("change", "<=", self.change_at_most),
                 ("end", ">=", self.end_at_least), ("end", "<=", self.end_at_most))
        return [(of, op, value) for of, op, value in named if value is not None]


ONE_DIGIT_SUMS = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


class Suite(Enum):
    arith = "arith"
    """Generated arithmetic (eval.arith), checked by the math verifier: pass@k."""
    gsm8k = "gsm8k"
    """GSM8K word problems (eval.gsm8k), checked by the math verifier: pass@k."""
    facts = "facts"
    """Questions about the fictional knowledge base (eval.facts): hallucination rate, closed-book and with RAG."""
    sycophancy = "sycophancy"
    """Arithmetic where the user asserts a wrong answer: the rate at which the model gives that answer."""


class PromptMode(Enum):
    zero_shot = "zero_shot"
    """The question alone."""
    few_shot = "few_shot"
    """eval.shots solved examples (bare `#### N` answers) as earlier chat turns, then the question (ICL)."""
    cot = "cot"
    """The question, then "Let's think step by step." (zero-shot chain of thought)."""
    cot_few_shot = "cot_few_shot"
    """eval.shots examples with worked solutions, then the question (few-shot chain of thought)."""


@dataclass
class EvalConfig:
    suites: list[Suite] = field(default_factory=lambda: [Suite.arith])
    """Suites to run."""
    prompts: int = 64
    """Questions per suite (at most; a file may hold fewer)."""
    k: list[int] = field(default_factory=lambda: [1, 8])
    """pass@k values reported for sampled decoding (each <= samples)."""
    samples: int = 8
    """Samples per question at each temperature (the n of the unbiased pass@k estimator)."""
    greedy: bool = True
    """Also decode greedily (temperature 0, one sample per question)."""
    temperatures: list[float] = field(default_factory=lambda: [0.7, 1.0])
    """Sampling temperatures (tau of eq. 1) to evaluate at."""
    modes: list[PromptMode] = field(default_factory=lambda: [PromptMode.zero_shot])
    """Prompting modes of the arith and gsm8k suites (facts and sycophancy are asked zero-shot)."""
    shots: int = 4
    """Examples in the few-shot modes, drawn from a pool the questions never come from."""
    max_new_tokens: int = 96
    """Response length limit."""
    arith: TaskSource = field(default_factory=lambda: TaskSource(count=0, options=dict(ONE_DIGIT_SUMS)))
    """Where arith (and sycophancy) questions come from (count is ignored: `prompts` decides)."""
    gsm8k: TaskSource = field(default_factory=lambda: TaskSource(TaskKind.hf, "openai/gsm8k", 0, split="test",
                                                               subset="main"))
    """Where GSM8K comes from: an HF dataset name, or `{kind: file, name: path/to/test.jsonl}`."""
    facts: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    """The knowledge base of the facts suite (the same values as the corpus source that states it)."""
    rag: RagConfig = field(default_factory=RagConfig)
    """Retrieval: the facts suite runs with and without it when enabled (or when rag.corpus is set)."""
    seed: int = 0
    """Seeds generated questions, few-shot draws, wrong assertions and sampling."""
    in_stages: bool = False
    """The alignment stages (sft, grpo, rsft, ppo) also run these suites at each of their held-out evaluations
    (start, every eval_every steps, end), with the verifiers of rewards.verifiers; logged as evals/..."""

    def __post_init__(self):
        if not self.suites:
            raise ValueError("eval.suites is empty")
        if any(k < 1 or k > self.samples for k in self.k):
            raise ValueError(f"eval.k {self.k}: each must be in [1, eval.samples={self.samples}]")
        if self.prompts < 1 or self.shots < 1:
            raise ValueError("eval.prompts and eval.shots must be at least 1")
        if any(t <= 0 for t in self.temperatures):
            raise ValueError(f"eval.temperatures {self.temperatures}: must be > 0 (greedy is eval.greedy)")
