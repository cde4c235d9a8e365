"""The tokenizer stage: gather the corpus, train (or load) the tokenizer, pack token shards."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from data.config import CorpusConfig, TokenizerConfig
from data.corpus import iter_documents
from data.shards import ShardMeta, pack_corpus
from data.tokenizer import load_tokenizer, train_tokenizer


def corpus_documents(corpus: CorpusConfig, seed: int) -> list[str]:
    docs: list[str] = []
    for i, source in enumerate(corpus.sources):
        docs.extend(iter_documents(source, seed + i))
    if not any(d.strip() for d in docs):
        raise ValueError("the corpus is empty: its sources gave no text")
    return docs


def _truncated(docs: list[str], max_chars: int):
    total = 0
    for doc in docs:
        if total >= max_chars:
            return
        total += len(doc)
        yield doc


def prepare_corpus(tok_cfg: TokenizerConfig, corpus: CorpusConfig, seed: int, max_seq_len: int,
                   tokenizer_dir: Path, data_dir: Path) -> ShardMeta:
    """Writes an HF tokenizer to tokenizer_dir and packed shards (+ bytes per token) to data_dir."""
    t0 = time.perf_counter()
    docs = corpus_documents(corpus, seed)
    chars = sum(len(d) for d in docs)
    print(f"[tokenizer] {len(docs)} documents, {chars / 1e6:.1f}M characters ({time.perf_counter() - t0:.1f}s)")
    if tok_cfg.path:
        tokenizer = load_tokenizer(tok_cfg.path)
        tmp = tokenizer_dir.with_name(tokenizer_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer.save_pretrained(str(tmp))
    else:
        # Shuffle before truncating so that every source is represented among the training characters.
        order = np.random.default_rng(seed).permutation(len(docs))
        sample = _truncated([docs[i] for i in order], tok_cfg.train_chars)
        tmp = tokenizer_dir.with_name(tokenizer_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer = train_tokenizer(sample, tok_cfg.vocab_size, tmp, max_seq_len)
    shutil.rmtree(tokenizer_dir, ignore_errors=True)
    tmp.rename(tokenizer_dir)
    print(f"[tokenizer] vocabulary {len(tokenizer)} ({time.perf_counter() - t0:.1f}s)")
    meta = pack_corpus(tokenizer, iter(docs), data_dir, corpus.held_out_fraction, seed, corpus.shard_tokens)
    print(f"[tokenizer] packed {meta.train_tokens:,} train / {meta.val_tokens:,} held-out tokens "
          f"({chars / max(1, meta.train_tokens + meta.val_tokens):.2f} chars/token, {time.perf_counter() - t0:.1f}s)")
    return meta
