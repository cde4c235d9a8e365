"""Knobs owned by model loading: the architecture of a fresh model, and the compute precision."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional


@dataclass
class ModelConfig:
    path: Optional[str] = None
    """An HF causal-LM directory to start from; None builds a fresh Llama from the fields below."""
    hidden_size: int = 256
    """Width d of the residual stream (eq. 13)."""
    num_layers: int = 6
    """Transformer layers L."""
    num_heads: int = 8
    """Attention heads per layer (eq. 16)."""
    num_kv_heads: int = 8
    """Key/value heads (grouped-query attention when below num_heads)."""
    intermediate_size: int = 688
    """SwiGLU hidden width."""
    max_seq_len: int = 512
    """Context window Δ: the longest sequence the model (and its RoPE table) supports."""
    rope_theta: float = 10000.0
    """RoPE base frequency (eq. 16, the rotations R_t)."""
    tie_embeddings: bool = True
    """Share W_emb and W_out (as nanoGPT does); halves the embedding parameters of a small model."""


class Precision(Enum):
    auto = "auto"
    """bf16 where the device computes it natively (a GPU; a CPU with AVX-512 BF16 or AMX), else fp32: a CPU
    without those emulates bf16 matmuls, about 25x slower than fp32 (AVX2 only, measured)."""
    fp32 = "fp32"
    """fp32 weights and compute."""
    bf16 = "bf16"
    """fp32 master weights, bf16 autocast compute (the fast path on AVX-512 bf16 CPUs and on GPUs)."""
