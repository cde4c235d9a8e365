"""Weight sync: seconds to push a model from learner rank 0 to 1 and 2 vLLM rollout workers (tether's
bucketed path: gather, then shared memory on one node or a broadcast across nodes, reload_weights in the
engine), against one broadcast of a single flat buffer of the same bytes over a gloo group of the same
members, in the same run.

    .venv/bin/python bench/weight_sync.py [--sizes 10M,100M,500M] [--repeats 3]

Writes its table to docs/benchmarks.md. Run it with nothing else on the machine."""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from cluster.groups import start_learners  # noqa: E402
from cluster.rollout_pool import RolloutPool  # noqa: E402
from data.tokenizer import train_tokenizer  # noqa: E402
from modeling.config import Precision  # noqa: E402
from rollout.config import RolloutConfig  # noqa: E402
from rollout.weight_sync import Member, Route, open_receiver, open_sender  # noqa: E402
from trainers.config import LearnerConfig, Optimizer  # noqa: E402

SIZES = {  # name: (hidden, layers, intermediate, vocab); head_dim 64 everywhere
    "10M": (384, 6, 1024, 4096),
    "100M": (768, 12, 2048, 8192),
    "500M": (1280, 24, 3456, 16384),
}


class FlatPeer:
    """A member of a plain gloo group that broadcasts (rank 0) or receives one flat fp32 buffer."""

    def join(self, host: str, port: int, rank: int, world: int) -> None:
        import torch
        cpu = torch.device("cpu")
        self.rank = rank
        self.sync = (open_sender(host, port, world, 0, 600, cpu) if rank == 0 else
                     open_receiver(host, port, Member(Route.wire, rank), world, 600, cpu))

    def broadcast(self, numel: int) -> float:
        import torch
        buf = torch.ones(numel) if self.rank == 0 else torch.empty(numel)
        start = time.perf_counter()
        self.sync.wire.broadcast(buf, 0).wait()
        return time.perf_counter() - start


def save_model(size: str, folder: Path) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    d, layers, inter, vocab = SIZES[size]
    config = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=d // 64, num_key_value_heads=d // 64, max_position_embeddings=256,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(folder))
    train_tokenizer(["weights travel in buckets"] * 20, 300, folder, 256)  # vLLM wants a tokenizer beside the weights
    return sum(p.numel() for p in model.parameters())


LEARNER = LearnerConfig(num_ranks=1, zero_stage=0, precision=Precision.fp32, optimizer=Optimizer.sgd,
                        cpus_per_rank=0.5, threads_per_rank=1, warmup_steps=0, timeout_s=900)
ROLLOUT = RolloutConfig(num_workers=1, cpus_per_worker=0.5, kv_cache_gib=0.25, timeout_s=900)


def timed_syncs(learner: LearnerConfig, rollout: RolloutConfig, model_dir: str, context_len: int,
                repeats: int) -> tuple[list[float], int]:
    """Seconds of each of `repeats` syncs from one learner group to a rollout pool, and the bytes one worker got."""
    learners = start_learners(learner, model_dir, total_steps=1)
    pool = RolloutPool(rollout, model_dir, context_len=context_len)
    try:
        pool.connect_learners(learners)
        times = []
        for version in range(1, repeats + 1):
            start = time.perf_counter()
            pool.sync_weights(version)
            times.append(time.perf_counter() - start)
        return times, pool.sync_bytes
    finally:
        pool.shutdown()
        learners.shutdown()


def tether_sync(model_dir: str, workers: int, repeats: int) -> list[float]:
    return timed_syncs(LEARNER, dataclasses.replace(ROLLOUT, num_workers=workers), model_dir, 256, repeats)[0]


def flat_broadcast(numel: int, workers: int, repeats: int) -> list[float]:
    peers = [ray.remote(FlatPeer).options(num_cpus=0.5).remote() for _ in range(workers + 1)]
    try:
        port = 29000 + int(time.time()) % 1000
        ray.get([p.join.remote("127.0.0.1", port, rank, workers + 1) for rank, p in enumerate(peers)], timeout=300)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            ray.get([p.broadcast.remote(numel) for p in peers], timeout=900)
            times.append(time.perf_counter() - start)
        return times
    finally:
        for p in peers:
            ray.kill(p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10M,100M,500M")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    rows = ["| model | parameters | MB sent | workers | tether sync s | flat broadcast s | ratio |", "|---|---|---|---|---|---|---|"]
    for size in args.sizes.split(","):
        folder = Path(tempfile.mkdtemp(prefix=f"sync-{size}-"))
        params = save_model(size, folder)
        # a tied embedding travels twice (vLLM keeps its own lm_head copy), so the baseline sends the same bytes
        d, _, _, vocab = SIZES[size]
        numel = params + d * vocab
        for workers in (1, 2):
            t = statistics.median(tether_sync(str(folder), workers, args.repeats))
            f = statistics.median(flat_broadcast(numel, workers, args.repeats))
            rows.append(f"| {size} | {params / 1e6:.0f}M | {numel * 4 / 1e6:,.0f} | {workers} | {t:.3f} | {f:.3f} | {t / f:.2f}x |")
            print(rows[-1], flush=True)
    ray.shutdown()
    body = ("## Weight sync (`bench/weight_sync.py`)\n\nLearner rank 0 (DeepSpeed, fp32) to vLLM rollout workers on CPU "
            "over gloo, 256 MB buckets, median of "
            f"{args.repeats} syncs; the baseline broadcasts one flat buffer of the same bytes over a gloo group of "
            "the same number of members (its own actors). A tether sync includes gathering the tensors, the "
            "broadcasts, and vLLM's `reload_weights` with its CPU weight repacking.\n\n" + "\n".join(rows))
    write_section("weight_sync", body)


if __name__ == "__main__":
    main()
