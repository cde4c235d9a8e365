"""Adapter-only weight sync against a full sync of the same LoRA learner, in the same run.

A learner with LoRA adapters (rank 16 on q_proj and v_proj) pushes to one vLLM rollout worker either the
adapter alone (rollout.lora_rank: written as a peft adapter and loaded with vLLM's add_lora) or the merged
weights (the bucketed broadcast and reload_weights of bench/weight_sync.py). Models: the demo's policy
(runs/tiny/sft/model) and a 100M-parameter Llama of bench/weight_sync.py's shapes.

    .venv/bin/python bench/lora_sync.py [--repeats 5]

Writes its table to docs/benchmarks.md. Run it with nothing else on the machine."""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from bench.weight_sync import save_model  # noqa: E402
from cluster.groups import start_learners  # noqa: E402
from cluster.rollout_pool import RolloutPool  # noqa: E402
from rollout.config import RolloutConfig  # noqa: E402
from trainers.config import LearnerConfig, LoraConfig, Optimizer, Precision  # noqa: E402
from trainers.model import config_from_dir  # noqa: E402

LORA = LoraConfig(rank=16, alpha=32, targets=["q_proj", "v_proj"])


def sync_times(model_dir: str, adapter_only: bool, repeats: int) -> tuple[list[float], int]:
    learner = LearnerConfig(num_ranks=1, zero_stage=0, precision=Precision.fp32, optimizer=Optimizer.sgd,
                            cpus_per_rank=0.5, threads_per_rank=1, warmup_steps=0, timeout_s=900, lora=LORA)
    rollout = RolloutConfig(num_workers=1, cpus_per_worker=0.5, kv_cache_gib=0.25, timeout_s=900,
                            lora_rank=LORA.rank if adapter_only else 0)
    learners = start_learners(learner, model_dir, total_steps=1)
    pool = RolloutPool(rollout, model_dir, context_len=config_from_dir(model_dir).max_position_embeddings)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    models = {}
    if (ROOT / "runs/tiny/sft/model/config.json").is_file():
        models["demo policy (6M)"] = str(ROOT / "runs/tiny/sft/model")
    folder = Path(tempfile.mkdtemp(prefix="lora-sync-100M-"))
    save_model("100M", folder)
    models["Llama 100M"] = str(folder)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    rows = ["| model | full sync MB | adapter MB | bytes ratio | full sync s | adapter sync s | time ratio |",
            "|---|---|---|---|---|---|---|"]
    for name, path in models.items():
        full, full_bytes = sync_times(path, False, args.repeats)
        adapter, adapter_bytes = sync_times(path, True, args.repeats)
        f, a = statistics.median(full), statistics.median(adapter)
        rows.append(f"| {name} | {full_bytes / 1e6:,.1f} | {adapter_bytes / 1e6:.2f} | {adapter_bytes / full_bytes:.1%} "
                    f"| {f:.3f} | {a:.3f} | {a / f:.2f}x |")
        print(rows[-1], flush=True)
    ray.shutdown()
    body = ("## LoRA adapter-only sync (`bench/lora_sync.py`)\n\nOne LoRA learner (rank 16 on q_proj and v_proj, fp32) "
            f"to one vLLM rollout worker on CPU, median of {args.repeats} syncs. Full: the merged weights in 256 MB "
            "buckets over gloo and vLLM's `reload_weights`. Adapter: the adapter tensors through Ray's object store, "
            "written as a peft adapter and loaded with vLLM's `add_lora` (the worker serves base + adapter).\n\n"
            + "\n".join(rows))
    write_section("lora_sync", body)


if __name__ == "__main__":
    main()
