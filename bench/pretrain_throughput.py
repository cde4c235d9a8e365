"""Pretraining throughput: tether's learner group (Ray + DeepSpeed, 2 ranks) against a plain
single-process PyTorch loop using all cores, on the same model, tokens and batch, each at its best
precision, and both as model-FLOPs utilisation against a bf16 matmul measured in the same run.

    .venv/bin/python bench/pretrain_throughput.py [--steps 12] [--warmup 3]

Writes its table to docs/benchmarks.md. Run it with nothing else on the machine."""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from cluster.config import load_job_config  # noqa: E402
from data.config import CorpusConfig, SourceConfig, SourceKind  # noqa: E402
from modeling.config import Precision  # noqa: E402
from modeling.model import build_llama, train_flops_per_token  # noqa: E402
from trainers.losses.lm import token_nll  # noqa: E402


def matmul_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def plain_loop(model_dir: str, batches: list[torch.Tensor], precision: Precision, lr: float, device: str = "cpu",
               compiled: bool = False) -> list[float]:
    """Seconds per optimizer step of the textbook loop: forward, backward, clip, AdamW (fused on a GPU); the
    batch's copy to the device is timed, as the learner's is. compiled: each decoder layer torch.compile'd."""
    from modeling.model import compile_blocks, load_causal_lm
    model = load_causal_lm(model_dir).to(device)
    if compiled:
        compile_blocks(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1, fused=device == "cuda")
    times = []
    for tokens in batches:
        start = time.perf_counter()
        tokens = tokens.to(device)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == Precision.bf16):
            logits = model(input_ids=tokens[:, :-1]).logits
        nll, n = token_nll(logits, tokens[:, 1:])
        (nll / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def learner_group(model_dir: str, batches: list[torch.Tensor], learner) -> tuple[list[float], list]:
    """Seconds per optimizer step as the driver sees them (Ray round trip included), and the ranks' splits."""
    import ray

    from cluster.groups import start_learners
    from trainers.learners.batches import TokenBatch
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    group = start_learners(learner, model_dir, total_steps=len(batches))
    times, parts = [], []
    try:
        for tokens in batches:
            batch = TokenBatch(tokens.numpy(), None, tokens.shape[0] * (tokens.shape[1] - 1))
            start = time.perf_counter()
            parts.append(group.sharded(batch.split(learner.num_ranks), lambda a, b: a.train_step.remote(b), "step"))
            times.append(time.perf_counter() - start)
    finally:
        group.shutdown()
        ray.shutdown()
    return times, parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    threads = os.cpu_count()
    torch.set_num_threads(threads)
    job = load_job_config(ROOT / "configs/tiny.yaml")
    seq, rows = job.pretrain.seq_len, job.learner.micro_batch * job.learner.grad_accum * job.learner.num_ranks

    from data.prepare import prepare_corpus
    from data.shards import PackedWindows
    from data.tokenizer import load_tokenizer
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    corpus = CorpusConfig(sources=[SourceConfig(SourceKind.shakespeare)])
    prepare_corpus(job.tokenizer, corpus, 0, job.model.max_seq_len, work / "tok", work / "data")
    tokenizer = load_tokenizer(work / "tok")
    build_llama(job.model, tokenizer, 0).save_pretrained(str(work / "init"))
    windows = PackedWindows(work / "data", "train", seq)
    batches = [torch.from_numpy(windows.gather(range(i * rows, (i + 1) * rows))) for i in range(args.steps)]
    flops_per_step = train_flops_per_token(build_llama(job.model, tokenizer, 0).config, seq) * rows * seq

    peak = {"bf16": matmul_flops(torch.bfloat16), "fp32": matmul_flops(torch.float32)}
    results = []
    for precision in (Precision.fp32, Precision.bf16):
        t = plain_loop(str(work / "init"), batches, precision, job.learner.lr)[args.warmup:]
        results.append((f"plain PyTorch loop, 1 process x {threads} threads", precision, t, None))
    for ranks, zero in ((2, 0), (2, 1), (1, 0)):
        learner = dataclasses.replace(job.learner, num_ranks=ranks, zero_stage=zero, micro_batch=rows // ranks,
                                      grad_accum=1, precision=Precision.bf16, threads_per_rank=threads // ranks,
                                      cpus_per_rank=1)
        t, parts = learner_group(str(work / "init"), batches, learner)
        results.append((f"tether learner group, {ranks} rank(s) x {threads // ranks} thread(s), ZeRO {zero}",
                        Precision.bf16, t[args.warmup:], parts[args.warmup:]))

    plain_best = min(statistics.median(r[2]) for r in results if r[3] is None)
    lines = [f"Model: {job.model.num_layers} layers x {job.model.hidden_size} wide, vocab {len(tokenizer)}; "
             f"batch {rows} x {seq} tokens; {args.steps - args.warmup} timed steps (median) after {args.warmup} warm-up.",
             f"Measured peak on {threads} threads: bf16 matmul {peak['bf16'] / 1e9:.0f} GFLOP/s, fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s. "
             f"MFU = model FLOPs (6N + 12LdT per token) / bf16 matmul peak.", "",
             "| setup | precision | s/step | tokens/s | GFLOP/s | MFU | vs best plain loop | forward+backward s | optimizer step s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, precision, t, parts in results:
        s = statistics.median(t)
        fb = f"{statistics.median(max(p.forward_backward_s for p in step) for step in parts):.3f}" if parts else "-"
        op = f"{statistics.median(max(p.optimizer_s for p in step) for step in parts):.3f}" if parts else "-"
        lines.append(f"| {name} | {precision.value} | {s:.3f} | {rows * seq / s:,.0f} | {flops_per_step / s / 1e9:.0f} | "
                     f"{flops_per_step / s / peak['bf16']:.1%} | {plain_best / s:.2f}x | {fb} | {op} |")
    table = "\n".join(lines)
    print(table)
    write_section("pretrain_throughput", "## Pretraining throughput (`bench/pretrain_throughput.py`)\n\n" + table)


if __name__ == "__main__":
    main()
