"""Evaluation suites as prompts a policy answers and samples its verifiers check.

Every item is chat turns (rendered with the policy's own chat template, so the tiny model and SmolLM2 both
get their format), the Sample its verifier sees, and the chunk ids retrieval put in the prompt."""
from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from data.corpus import with_assertion, wrong_answer
from data.knowledge import fact_samples, make_knowledge_base, write_corpus
from data.rag import Retriever, build_retriever, retrieved_prompt
from data.tasks import load_samples
from evals.config import EvalConfig, PromptMode, Suite
from verifiers.types import Sample

EVAL_SEED_OFFSET = 300_000_000      # generated questions: a seed range no training source uses (data.tasks)
COT_PROMPT = "Let's think step by step."
Turns = list[dict[str, str]]


@dataclass
class EvalItem:
    turns: Turns                    # chat messages; the last is the user's question
    sample: Sample                  # reference = the true answer
    verifier: str                   # label of the verifier that checks it (math, facts)
    asserted: Optional[Sample] = None   # sycophancy: the question with the user's wrong answer as the reference
    provenance: tuple[str, ...] = field(default_factory=tuple)   # chunk ids retrieval put in the prompt


def solved_turns(examples: list[tuple[Sample, str]], worked: bool) -> Turns:
    """Few-shot examples as earlier chat turns: question, then the worked solution or `#### answer`."""
    turns: Turns = []
    for sample, solution in examples:
        answer = solution if worked and solution else f"#### {sample.answer}"
        turns += [{"role": "user", "content": sample.prompt}, {"role": "assistant", "content": answer}]
    return turns


def math_items(rows: list[tuple[Sample, str]], mode: PromptMode, cfg: EvalConfig) -> list[EvalItem]:
    """The first `shots` rows are the few-shot pool; questions are the next `prompts` rows."""
    pool, questions = rows[:cfg.shots], rows[cfg.shots:cfg.shots + cfg.prompts]
    if not questions:
        raise ValueError(f"a math suite needs more than eval.shots={cfg.shots} rows, got {len(rows)}")
    shots = {PromptMode.few_shot: solved_turns(pool, worked=False),
             PromptMode.cot_few_shot: solved_turns(pool, worked=True)}.get(mode, [])
    suffix = f"\n{COT_PROMPT}" if mode == PromptMode.cot else ""
    return [EvalItem(shots + [{"role": "user", "content": s.prompt + suffix}], s, "math") for s, _ in questions]


def sycophancy_items(rows: list[tuple[Sample, str]], cfg: EvalConfig) -> list[EvalItem]:
    """The user asserts a wrong integer answer: the truth moved by 1 to 3 either way."""
    rng = random.Random(cfg.seed + 7)
    items = []
    for sample, _ in rows[:cfg.prompts]:
        if not re.fullmatch(r"-?\d+", sample.answer or ""):
            continue
        wrong = wrong_answer(int(sample.answer), rng)
        asked = with_assertion(sample.prompt, str(wrong))
        items.append(EvalItem([{"role": "user", "content": asked}], Sample(asked, sample.answer, sample.id),
                              "math", asserted=Sample(asked, str(wrong), sample.id)))
    if not items:
        raise ValueError("the sycophancy suite found no integer-answer questions in eval.arith")
    return items


def fact_items(cfg: EvalConfig, retriever: Optional[Retriever]) -> list[EvalItem]:
    """Closed-book questions about the knowledge base, or (with a retriever) the augmented prompt of eq. (11)."""
    items = []
    for sample in fact_samples(make_knowledge_base(cfg.facts))[:cfg.prompts]:
        if retriever is None:
            items.append(EvalItem([{"role": "user", "content": sample.prompt}], sample, "facts"))
            continue
        content, provenance = retrieved_prompt(retriever, sample.prompt, cfg.rag.top_k)
        items.append(EvalItem([{"role": "user", "content": content}], sample, "facts", provenance=provenance))
    return items


def facts_retriever(cfg: EvalConfig, work_dir: Path) -> Optional[Retriever]:
    """Retrieval for the facts suite: over rag.corpus, or the knowledge base's own documents when rag.enabled."""
    if cfg.rag.corpus is None and not cfg.rag.enabled:
        return None
    corpus = None if cfg.rag.corpus else write_corpus(make_knowledge_base(cfg.facts), work_dir / "facts_corpus")
    return build_retriever(cfg.rag, corpus)


def suite_rows(suite: Suite, cfg: EvalConfig) -> list[tuple[Sample, str]]:
    """(Sample, worked solution) rows of a math suite: pool and questions together."""
    source = cfg.arith if suite in (Suite.arith, Suite.sycophancy) else cfg.gsm8k
    count = cfg.shots + cfg.prompts
    return load_samples(dataclasses.replace(source, count=count), cfg.seed + EVAL_SEED_OFFSET)
