"""The search tool: retrieval the model asks for (the RAG of eq. (11), as a call): the top_k passages of a
configured corpus for the model's query, by data.rag's retriever, numbered as the augmented prompt numbers them."""
from __future__ import annotations

import functools
from pathlib import Path

from data.rag import RagConfig, Retriever, RetrieverKind, build_retriever
from tools.types import ToolCall, ToolContext, ToolResult


@functools.lru_cache(maxsize=4)
def _retriever(corpus: str, retriever: str, chunk_words: int) -> Retriever:
    return build_retriever(RagConfig(corpus=corpus, retriever=RetrieverKind(retriever), chunk_words=chunk_words))


def search(call: ToolCall, ctx: ToolContext, corpus: str = "", top_k: int = 2, retriever: str = "bm25",
           chunk_words: int = 120) -> ToolResult:
    """`<tool>search: capital of Vellmar</tool>` -> `<result>[1] ... [2] ...</result>`. corpus: a folder of
    .txt/.md files (or one file); retriever: bm25, dense or hybrid."""
    if not corpus or not Path(corpus).exists():
        return ToolResult(f"error: search has no corpus at '{corpus}' (options.corpus)", error=True)
    if not call.args.strip():
        return ToolResult("error: empty query", error=True)
    chunks = _retriever(corpus, retriever, chunk_words).search(call.args, top_k)
    return ToolResult("\n".join(f"[{i + 1}] {c.text.strip()}" for i, c in enumerate(chunks)))
