"""The search tool: retrieval the model asks for (the RAG of eq. (11), as a call): the top_k passages of a
configured corpus for the model's query, by data.rag's retriever, numbered as the augmented prompt numbers them.
The corpus is a folder of files, or the fictional knowledge base of the facts suite (its documents, one per
person: what `eval.rag.enabled` retrieves from)."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from data.knowledge import KnowledgeConfig, make_knowledge_base, write_corpus
from data.rag import RagConfig, Retriever, RetrieverKind, build_retriever
from tools.types import ToolCall, ToolContext, ToolResult


@functools.lru_cache(maxsize=4)
def _retriever(corpus: str, retriever: str, chunk_words: int) -> Retriever:
    return build_retriever(RagConfig(corpus=corpus, retriever=RetrieverKind(retriever), chunk_words=chunk_words))


@functools.lru_cache(maxsize=4)
def knowledge_corpus(options: str) -> str:
    """The knowledge base's documents (KnowledgeConfig fields, as JSON) written once per machine to a folder
    named by their hash; written aside and renamed, so processes that race see it whole."""
    cfg = KnowledgeConfig(**json.loads(options))
    folder = Path(tempfile.gettempdir()) / f"tether_knowledge_{hashlib.sha256(options.encode()).hexdigest()[:16]}"
    if not folder.is_dir():
        partial = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        write_corpus(make_knowledge_base(cfg), partial)
        try:
            os.rename(partial, folder)
        except OSError:                  # another process renamed its copy first
            shutil.rmtree(partial, ignore_errors=True)
    return str(folder)


def search(call: ToolCall, ctx: ToolContext, corpus: str = "", top_k: int = 2, retriever: str = "bm25",
           chunk_words: int = 120, knowledge: Optional[dict[str, Any]] = None) -> ToolResult:
    """`<tool>search: capital of Vellmar</tool>` -> `<result>[1] ... [2] ...</result>`. corpus: a folder of
    .txt/.md files (or one file); knowledge: instead of corpus, the knowledge base with these settings
    (data.knowledge.KnowledgeConfig's fields: give the facts suite's); retriever: bm25, dense or hybrid."""
    if knowledge is not None:
        corpus = knowledge_corpus(json.dumps(dict(knowledge), sort_keys=True))
    if not corpus or not Path(corpus).exists():
        return ToolResult(f"error: search has no corpus at '{corpus}' (set options.corpus or options.knowledge)",
                          error=True)
    if not call.args.strip():
        return ToolResult("error: empty query", error=True)
    chunks = _retriever(corpus, retriever, chunk_words).search(call.args, top_k)
    return ToolResult("\n".join(f"[{i + 1}] {c.text.strip()}" for i, c in enumerate(chunks)))
