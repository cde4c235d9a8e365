"""Pretraining throughput on one GPU: tether's learner (Ray actor + DeepSpeed, precision=bf16) against a plain
PyTorch loop on the same model code (modeling.model, trainers.losses.lm), the same batches and the same bf16
autocast, fused AdamW and sdpa attention, measured in the same run. MFU is model FLOPs (6N + 12LdT per token)
over 790 TFLOP/s, the H200's measured dense bf16 matmul rate (and over the rate measured here, beside it).

    python bench/gpu_pretrain_throughput.py [--steps 30] [--warmup 5] [--compile] [--quick]

The model is a 210.8M-parameter Llama (hidden 1024, 16 layers, ff 2752, vocab 4096); a step is 16 x 1024
tokens of random ids (throughput does not depend on the ids). --compile adds the learner with learner.compile
and a plain loop whose decoder layers are torch.compile'd the same way. Writes docs/benchmarks.md."""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench.pretrain_throughput as cpu_bench  # noqa: E402
from bench.report import write_section  # noqa: E402
from modeling.config import ModelConfig, Precision  # noqa: E402
from modeling.model import build_llama, train_flops_per_token  # noqa: E402
from trainers.config import LearnerConfig  # noqa: E402

H200_BF16_FLOPS = 790e12
MODEL = ModelConfig(hidden_size=1024, num_layers=16, num_heads=16, num_kv_heads=16, intermediate_size=2752,
                    max_seq_len=1024)
VOCAB, ROWS, SEQ = 4096, 16, 1024


class FixedVocab:
    """What build_llama reads of a tokenizer: its size and special ids (the ids here are random anyway)."""
    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __len__(self) -> int:
        return VOCAB


def matmul_flops(n: int = 8192, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda"), torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def plain_loop(model_dir: str, batches: list[torch.Tensor], bf16: bool, compiled: bool) -> list[float]:
    times = cpu_bench.plain_loop(model_dir, batches, Precision.bf16 if bf16 else Precision.fp32, 3e-4, "cuda", compiled)
    torch.cuda.empty_cache()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="leave out the fp32 loop and the ZeRO 1 learner")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    model = build_llama(MODEL, FixedVocab(), 0)
    model.save_pretrained(str(work / "init"))
    params = sum(p.numel() for p in model.parameters())
    flops_per_step = train_flops_per_token(model.config, SEQ) * ROWS * SEQ
    del model
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, VOCAB, (ROWS, SEQ + 1), generator=g) for _ in range(args.steps)]
    peak = matmul_flops()
    gpu = torch.cuda.get_device_name()

    results = []   # (setup, precision, seconds per step after warm-up)

    def add(name: str, precision: str, times: list[float]) -> None:
        results.append((name, precision, times[args.warmup:]))
        s = statistics.median(times[args.warmup:])
        print(f"{name} [{precision}]: {s:.4f} s/step, {ROWS * SEQ / s:,.0f} tokens/s, "
              f"MFU {flops_per_step / s / H200_BF16_FLOPS:.1%}", flush=True)

    add("plain PyTorch loop (fused AdamW, sdpa)", "bf16", plain_loop(str(work / "init"), batches, True, False))
    if not args.quick:
        add("plain PyTorch loop (fused AdamW, sdpa)", "fp32", plain_loop(str(work / "init"), batches[:args.warmup + 10],
                                                                         False, False))
    for zero, compiled in [(0, False)] + ([] if args.quick else [(1, False)]) + ([(0, True)] if args.compile else []):
        learner = dataclasses.replace(LearnerConfig(), num_ranks=1, zero_stage=zero, micro_batch=ROWS, grad_accum=1,
                                      precision=Precision.bf16, gpus_per_rank=1, cpus_per_rank=2, threads_per_rank=2,
                                      warmup_steps=0, lr=3e-4, timeout_s=600, compile=compiled)
        times, _ = cpu_bench.learner_group(str(work / "init"), batches, learner)
        add(f"tether learner (Ray actor, DeepSpeed ZeRO {zero}, 1 rank{', learner.compile' if compiled else ''})",
            "bf16", times)
    if args.compile:
        add("plain PyTorch loop, decoder layers torch.compile'd", "bf16",
            plain_loop(str(work / "init"), batches, True, True))

    plain = statistics.median(results[0][2])
    lines = [f"GPU: {gpu}. Model: {params / 1e6:.1f}M parameters (hidden 1024, 16 layers, ff 2752, vocab 4096); "
             f"batch {ROWS} x {SEQ} tokens of random ids; median of {args.steps - args.warmup} timed steps after "
             f"{args.warmup} warm-up. MFU = model FLOPs (6N + 12LdT per token) / 790 TFLOP/s; the bf16 matmul "
             f"rate measured in this run was {peak / 1e12:.0f} TFLOP/s.", "",
             "| setup | precision | s/step | tokens/s | TFLOP/s | MFU (790) | vs plain bf16 loop |", "|---|---|---|---|---|---|---|"]
    for name, precision, times in results:
        s = statistics.median(times)
        lines.append(f"| {name} | {precision} | {s:.4f} | {ROWS * SEQ / s:,.0f} | {flops_per_step / s / 1e12:.0f} | "
                     f"{flops_per_step / s / H200_BF16_FLOPS:.1%} | {plain / s:.2f}x |")
    table = "\n".join(lines)
    print(table)
    write_section("gpu_pretrain_throughput", "## Pretraining throughput on one GPU (`bench/gpu_pretrain_throughput.py`)\n\n"
                  + table)


if __name__ == "__main__":
    main()
