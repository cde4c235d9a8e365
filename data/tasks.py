"""Verifiable tasks for the stages that sample: a prompt as token ids (in the policy's own chat format),
the Sample its verifiers see, and a worked answer for SFT.

Generated problems come from reasoning_gym with seeds of their own: the pretraining corpus uses
seed + 0..count and pair sources seed + k * SOURCE_SEED_STRIDE (k >= 1); training tasks use k = 100 and
held-out tasks k = 200, so no seed is shared (small problem spaces can still repeat a question)."""
from __future__ import annotations

import itertools
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

from data.config import TaskKind, TasksConfig, TaskSource
from data.corpus import problems, with_assertion, wrong_answer
from data.pairs import SOURCE_SEED_STRIDE, file_rows, hf_rows
from data.rag import RagConfig, Retriever, build_retriever, retrieved_prompt
from verifiers.types import Sample

log = logging.getLogger(__name__)
TRAIN_SEED_OFFSET = 100 * SOURCE_SEED_STRIDE
HELD_OUT_SEED_OFFSET = 200 * SOURCE_SEED_STRIDE


@dataclass
class Task:
    sample: Sample            # what the verifiers see: the question and its reference answer
    prompt_ids: list[int]     # [P] the question (after its retrieved chunks, with RAG) as a user turn, then the assistant marker
    solution: str             # worked answer ending in "#### <answer>" ('' when the source has none)
    provenance: tuple[str, ...] = ()   # ids of the chunks retrieval put in the prompt


def load_samples(source: TaskSource, seed: int) -> list[tuple[Sample, str]]:
    """(Sample, worked solution) per problem or row."""
    if source.kind == TaskKind.knowledge:
        from data.knowledge import KnowledgeConfig, reading_tasks
        return reading_tasks(KnowledgeConfig(**source.options), source.split, source.count)
    if source.kind == TaskKind.generated:
        rng = random.Random(seed)
        out = []
        for i, p in enumerate(problems(source.name, source.count, seed, source.options)):
            question = p.question
            if rng.random() < source.assert_wrong and re.fullmatch(r"-?\d+", p.answer):
                question = with_assertion(question, str(wrong_answer(int(p.answer), rng)))
            out.append((Sample(prompt=question, answer=p.answer, id=f"{source.name}-{i}"),
                        "\n".join([p.solution.strip() if source.worked else "", f"#### {p.answer}"]).strip()))
        return out
    rows = file_rows(Path(source.name)) if source.kind == TaskKind.file else hf_rows(source.name, source.split, source.subset)
    out = []
    for where, row in itertools.islice(rows, source.count or None):
        sample = Sample.from_row(row, where)
        worked = str(row.get("answer", ""))   # GSM8K-style: the worked answer, ending in '#### N'
        out.append((sample, worked if "####" in worked else ""))
    if not out:
        raise ValueError(f"task source {source.name} holds no rows")
    return out


def load_tasks(source: TaskSource, tokenizer, seed: int, max_prompt_tokens: int, rag: RagConfig | None = None,
               retriever: Retriever | None = None) -> list[Task]:
    """Tasks with prompts tokenised by the policy's chat template (with a retriever, the question's top
    rag.top_k chunks first, eq. 11); longer prompts are dropped (and logged)."""
    tasks = []
    for sample, solution in load_samples(source, seed):
        content, provenance = sample.prompt, ()
        if retriever is not None:
            content, provenance = retrieved_prompt(retriever, sample.prompt, rag.top_k)
        text = tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                             add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text)["input_ids"]
        if len(ids) <= max_prompt_tokens:
            tasks.append(Task(sample, ids, solution, provenance))
    if len(tasks) < source.count:
        log.warning("tasks %s: kept %d of %d (prompts over %d tokens dropped)", source.name, len(tasks),
                    source.count, max_prompt_tokens)
    if not tasks:
        raise ValueError(f"tasks {source.name}: no prompt fits in tasks.max_prompt_tokens={max_prompt_tokens}")
    return tasks


def train_and_held_out(cfg: TasksConfig, tokenizer, seed: int) -> tuple[list[Task], list[Task]]:
    retriever = build_retriever(cfg.rag) if cfg.rag.corpus else None
    return (load_tasks(cfg.train, tokenizer, seed + TRAIN_SEED_OFFSET, cfg.max_prompt_tokens, cfg.rag, retriever),
            load_tasks(cfg.held_out, tokenizer, seed + HELD_OUT_SEED_OFFSET, cfg.max_prompt_tokens, cfg.rag, retriever))


def answer_ids(task: Task, tokenizer) -> list[int]:
    """The SFT target: the worked solution's token ids, then end-of-sequence."""
    if not task.solution:
        raise ValueError(f"task {task.sample.id or task.sample.prompt[:40]!r} has no worked solution to train on")
    return tokenizer(task.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
