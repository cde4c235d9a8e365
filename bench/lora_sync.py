"""Adapter-only weight sync against a full sync of the same LoRA learner, in the same run.

A learner with LoRA adapters (rank 16 on q_proj and v_proj) pushes to one vLLM rollout worker either the
adapter alone (rollout.lora_rank: written as a peft adapter and loaded with vLLM's add_lora) or the merged
weights (the bucketed broadcast and reload_weights of bench/weight_sync.py). Models: the demo's policy
(runs/tiny/sft/model) and a 100M-parameter Llama of bench/weight_sync.py's shapes.

    .venv/bin/python bench/lora_sync.py [--repeats 5]

Writes its table to docs/benchmarks.md. Run it with nothing else on the machine."""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

import ray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from bench.weight_sync import LEARNER, ROLLOUT, save_model, timed_syncs  # noqa: E402
from modeling.model import config_from_dir  # noqa: E402
from trainers.config import LoraConfig  # noqa: E402

LORA = LoraConfig(rank=16, alpha=32, targets=["q_proj", "v_proj"])


def sync_times(model_dir: str, adapter_only: bool, repeats: int) -> tuple[list[float], int]:
    return timed_syncs(dataclasses.replace(LEARNER, lora=LORA),
                       dataclasses.replace(ROLLOUT, lora_rank=LORA.rank if adapter_only else 0), model_dir,
                       config_from_dir(model_dir).max_position_embeddings, repeats)


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
