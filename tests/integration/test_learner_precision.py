"""precision=bf16 computes in bf16 inside the DeepSpeed engine (an autocast opened outside the engine is
switched off there), while the weights and the optimizer state stay fp32. One learner rank in this process."""
import multiprocessing
import os
import socket

import numpy as np
import pytest
import torch

from data.shards import PackedWindows
from modeling.config import Precision
from trainers.config import LearnerConfig
from trainers.learners.batches import TokenBatch
from trainers.learners.learner import Learner

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_in_fresh_process(fn, *args):
    """DeepSpeed keeps its process groups in globals: each learner gets a process of its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def one_rank(model_dir: str, precision: Precision, zero_stage: int, gpus: float = 0.0, compile: bool = False) -> Learner:
    os.environ["DS_ACCELERATOR"] = "cuda" if gpus else "cpu"
    # DeepSpeed's engine asks torch.is_autocast_enabled() with no device, which means CUDA's autocast: on a GPU it
    # sees an autocast opened outside the engine and switches it off, on a CPU it never sees it. Asking about the
    # device the engine runs on makes the CPU behave as the GPU did (where precision=bf16 computed in fp32).
    if not gpus:
        import deepspeed.runtime.torch_autocast as ds_autocast
        ds_autocast.torch = _DeviceAwareTorch()
    cfg = LearnerConfig(precision=precision, zero_stage=zero_stage, micro_batch=4, threads_per_rank=1,
                        warmup_steps=0, lr=1e-3, timeout_s=120, gpus_per_rank=gpus, compile=compile)
    learner = Learner(0, 1, cfg, total_steps=10)
    learner.setup("127.0.0.1", free_port(), model_dir)
    return learner


def linear_output_dtypes(learner: Learner, call) -> set[torch.dtype]:
    """The dtypes that every nn.Linear inside the engine's module produced during `call()`."""
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for m in learner.engine.module.modules() if isinstance(m, torch.nn.Linear)]
    try:
        call()
    finally:
        for h in hooks:
            h.remove()
    return seen


class _DeviceAwareTorch:
    """torch, with is_autocast_enabled() answering for the CPU (DeepSpeed's accelerator here)."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def is_autocast_enabled(device_type: str = "cpu") -> bool:
        return torch.is_autocast_enabled(device_type)


def dtypes_seen(root: str, precision: Precision, zero_stage: int, gpus: float = 0.0) -> dict[str, set]:
    """Runs in a fresh process: the Linear output dtypes of a train step and of a log-prob pass, the weights'
    and the Adam moments' dtypes, the dtype of the log-probs returned, and the device the weights are on."""
    learner = one_rank(f"{root}/init", precision, zero_stage, gpus)
    tokens = PackedWindows(f"{root}/data", "train", 32).gather(range(4))
    batch = TokenBatch(tokens, None, tokens.shape[0] * (tokens.shape[1] - 1))
    optimizer = learner.engine.optimizer
    inner = getattr(optimizer, "optimizer", optimizer)          # ZeRO wraps the client optimizer
    seen = {"train": linear_output_dtypes(learner, lambda: learner.train_step(batch)),
            "logprobs": linear_output_dtypes(learner, lambda: learner.logprobs(batch)),
            "weights": {p.dtype for p in learner.engine.module.parameters()},
            "adam": {s["exp_avg"].dtype for s in inner.state.values() if "exp_avg" in s},
            "returned": {row.dtype.name for row in learner.logprobs(batch)},
            "device": {p.device.type for p in learner.engine.module.parameters()}}
    return {k: {str(v) for v in vs} for k, vs in seen.items()}


@pytest.mark.parametrize("zero_stage", [0, 2, 3])
def test_bf16_reaches_the_linears_inside_the_engine(tiny_corpus, zero_stage):
    seen = run_in_fresh_process(dtypes_seen, str(tiny_corpus), Precision.bf16, zero_stage)
    assert seen["train"] == seen["logprobs"] == {"torch.bfloat16"}
    # fp32 master weights and fp32 Adam moments, as under fp32 (the exact-resume tests rely on them)
    assert seen["weights"] == seen["adam"] == {"torch.float32"}
    assert seen["returned"] == {"float32"}


def test_fp32_stays_fp32(tiny_corpus):
    seen = run_in_fresh_process(dtypes_seen, str(tiny_corpus), Precision.fp32, 0)
    assert seen["train"] == seen["logprobs"] == seen["weights"] == seen["adam"] == {"torch.float32"}


def losses(root: str, compile: bool, gpus: float = 0.0) -> list[float]:
    """Runs in a fresh process: the token-mean loss of 4 AdamW steps of one rank, fp32, eager or compiled."""
    learner = one_rank(f"{root}/init", Precision.fp32, 0, gpus, compile)
    tokens = PackedWindows(f"{root}/data", "train", 32).gather(range(16))
    out = []
    for step in range(4):
        rows = tokens[step * 4:(step + 1) * 4]
        result = learner.train_step(TokenBatch(rows, None, rows.shape[0] * (rows.shape[1] - 1)))
        out.append(result.nll_sum / result.targets)
    return out


def test_compiled_blocks_train_as_the_eager_model(tiny_corpus):
    """learner.compile changes how the blocks run, not what they compute."""
    eager = run_in_fresh_process(losses, str(tiny_corpus), False)
    compiled = run_in_fresh_process(losses, str(tiny_corpus), True)
    assert eager[-1] < eager[0] and np.allclose(eager, compiled, rtol=1e-5, atol=1e-5)
