"""Packed token shards on disk, and the deterministic batch order read from them.

A corpus becomes `train_###.bin` / `val_###.bin` files of token ids (documents joined end to end,
each `<|bos|> ... <|eos|>`) plus `meta.json`. Batches are windows of seq_len+1 tokens; which windows
make up step s is a pure function of (seed, s), so resuming at step s reads the same data."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from data.tokenizer import token_byte_lengths

META = "meta.json"
TOKEN_BYTES = "token_bytes.npy"  # [V] UTF-8 bytes per token id, for bits per byte


@dataclass
class ShardMeta:
    dtype: str
    train_tokens: int
    val_tokens: int
    train_documents: int
    val_documents: int
    train_shards: list[str]
    val_shards: list[str]


def pack_corpus(tokenizer, documents: Iterable[str], out_dir: Path, held_out_fraction: float,
                seed: int, shard_tokens: int, batch_docs: int = 512) -> ShardMeta:
    """Tokenise `documents`, assign each to train or held-out at random (seeded), write shards.

    Writes to `<out_dir>.tmp` and renames at the end, so a killed run leaves no shards that look complete."""
    dtype = np.uint16 if len(tokenizer) < 2**16 else np.uint32
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    writers = {split: _ShardWriter(tmp, split, dtype, shard_tokens) for split in ("train", "val")}
    eos = tokenizer.eos_token_id
    batch: list[str] = []

    def flush() -> None:
        for encoding in tokenizer.backend_tokenizer.encode_batch(batch):  # <|bos|> ... (no length limit)
            split = "val" if rng.random() < held_out_fraction else "train"
            writers[split].add(encoding.ids + [eos])
        batch.clear()

    for doc in documents:
        if doc and doc.strip():
            batch.append(doc)
        if len(batch) == batch_docs:
            flush()
    if batch:
        flush()
    for w in writers.values():
        w.close()
    if writers["train"].tokens == 0:
        shutil.rmtree(tmp)
        raise ValueError("the corpus is empty: no non-blank documents came from its sources")
    if writers["val"].tokens == 0:
        shutil.rmtree(tmp)
        raise ValueError("no document fell into the held-out split; raise corpus.held_out_fraction or add documents")
    meta = ShardMeta(dtype=np.dtype(dtype).name, train_tokens=writers["train"].tokens, val_tokens=writers["val"].tokens,
                     train_documents=writers["train"].documents, val_documents=writers["val"].documents,
                     train_shards=writers["train"].files, val_shards=writers["val"].files)
    np.save(tmp / TOKEN_BYTES, token_byte_lengths(tokenizer))
    (tmp / META).write_text(json.dumps(meta.__dict__, indent=1))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return meta


class _ShardWriter:
    def __init__(self, folder: Path, split: str, dtype, shard_tokens: int):
        self.folder, self.split, self.dtype, self.shard_tokens = folder, split, dtype, shard_tokens
        self.buffer: list[int] = []
        self.files: list[str] = []
        self.tokens = self.documents = 0

    def add(self, ids: list[int]) -> None:
        self.buffer.extend(ids)
        self.tokens += len(ids)
        self.documents += 1
        while len(self.buffer) >= self.shard_tokens:
            self._write(self.buffer[:self.shard_tokens])
            del self.buffer[:self.shard_tokens]

    def close(self) -> None:
        if self.buffer:
            self._write(self.buffer)
            self.buffer = []

    def _write(self, ids: list[int]) -> None:
        name = f"{self.split}_{len(self.files):03d}.bin"
        np.asarray(ids, dtype=self.dtype).tofile(self.folder / name)
        self.files.append(name)


def read_token_bytes(shard_dir: Path) -> np.ndarray:
    return np.load(Path(shard_dir) / TOKEN_BYTES)


def read_meta(shard_dir: Path) -> ShardMeta:
    path = Path(shard_dir) / META
    if not path.is_file():
        raise FileNotFoundError(f"no packed corpus at {shard_dir} (run the tokenizer stage first)")
    return ShardMeta(**json.loads(path.read_text()))


class PackedWindows:
    """All windows of seq_len+1 consecutive tokens in one split (windows do not cross shards)."""

    def __init__(self, shard_dir: Path, split: str, seq_len: int):
        meta = read_meta(shard_dir)
        names = meta.train_shards if split == "train" else meta.val_shards
        self.seq_len = seq_len
        self.shards = [np.memmap(Path(shard_dir) / n, dtype=meta.dtype, mode="r") for n in names]
        counts = [max(0, (len(s) - 1) // seq_len) for s in self.shards]
        self.starts = np.cumsum([0] + counts)  # first global window index of each shard
        if self.starts[-1] == 0:
            raise ValueError(f"the {split} split has fewer than {seq_len + 1} tokens; lower the sequence length")

    def __len__(self) -> int:
        return int(self.starts[-1])

    def window(self, i: int) -> np.ndarray:
        shard = int(np.searchsorted(self.starts, i, side="right") - 1)
        offset = (i - int(self.starts[shard])) * self.seq_len
        return np.asarray(self.shards[shard][offset:offset + self.seq_len + 1], dtype=np.int64)

    def gather(self, indices: Iterable[int]) -> np.ndarray:
        return np.stack([self.window(int(i)) for i in indices])  # [B, seq_len+1]


def train_batch_indices(num_windows: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Window indices of training step `step`: a fresh seeded permutation per epoch, read in order."""
    k = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, positions = np.divmod(k, num_windows)
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        in_epoch = epochs == epoch
        out[in_epoch] = np.random.default_rng([seed, int(epoch)]).permutation(num_windows)[positions[in_epoch]]
    return out


def pad_rows(rows: list[list[int]], pad_id: int, width: int) -> np.ndarray:
    """Token-id rows right-padded to [len(rows), width] int64 (a scalar head reads the last non-pad token)."""
    out = np.full((len(rows), width), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out
