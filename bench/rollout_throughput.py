"""Rollout throughput on one model, prompts and response length (fixed by min = max new tokens):
raw vLLM in one process, tether's rollout workers through Ray (1 and 2 workers), the reference
KV-cache engine (through one worker), and plain transformers `model.generate` (batched).

    .venv/bin/python bench/rollout_throughput.py [--prompts 64] [--new-tokens 128] [--rounds 3]

vLLM rates are the median of --rounds timed calls after a warm-up (single runs on a shared 2-core
machine vary by +-15%), with their range. Writes its table to docs/benchmarks.md."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_model(folder: Path) -> None:
    """The embedded default's architecture (configs/tiny.yaml), randomly initialised, with a small tokenizer."""
    from cluster.config import load_job_config
    from data.config import SourceConfig
    from data.corpus import iter_documents
    from data.tokenizer import train_tokenizer
    from modeling.model import build_llama
    job = load_job_config(ROOT / "configs/tiny.yaml")
    tok = train_tokenizer(iter_documents(SourceConfig(), 0), job.tokenizer.vocab_size, folder, job.model.max_seq_len)
    build_llama(job.model, tok, 0).save_pretrained(str(folder))


def prompt_ids(count: int, length: int) -> list[list[int]]:
    import numpy as np
    rng = np.random.default_rng(0)
    return [[0] + rng.integers(300, 4096, length - 1).tolist() for _ in range(count)]


def raw_vllm(model: str, prompts: list[list[int]], new: int, rounds: int) -> list[float]:
    """Runs in its own process (vLLM takes over torch threads): generated tokens per second, per round."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM, SamplingParams
    llm = LLM(model=model, dtype="float32", enforce_eager=True, seed=0, kv_cache_memory_bytes=1 << 30)
    params = SamplingParams(temperature=1.0, max_tokens=new, min_tokens=new, logprobs=0)
    llm.generate([{"prompt_token_ids": p} for p in prompts[:4]], params, use_tqdm=False)  # warm-up
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        rates.append(sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - start))
    return rates


def hf_generate(model_dir: str, prompts: list[list[int]], new: int, batch: int = 16) -> float:
    import torch

    from modeling.model import load_causal_lm
    torch.set_num_threads(os.cpu_count())
    model = load_causal_lm(model_dir).eval()
    tokens, start = 0, time.perf_counter()
    for i in range(0, len(prompts), batch):
        ids = torch.tensor(prompts[i:i + batch])  # equal lengths: no padding needed
        with torch.no_grad():
            out = model.generate(ids, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=new,
                                 min_new_tokens=new, pad_token_id=2)
        tokens += (out.shape[1] - ids.shape[1]) * ids.shape[0]
    return tokens / (time.perf_counter() - start)


def tether_workers(model_dir: str, prompts: list[list[int]], new: int, workers: int, engine, rounds: int) -> list[float]:
    import ray

    from cluster.rollout_pool import RolloutPool
    from rollout.config import RolloutConfig
    from rollout.types import Sampling
    cores = os.cpu_count()
    pool = RolloutPool(RolloutConfig(engine=engine, num_workers=workers, cpus_per_worker=cores / workers,
                                     kv_cache_gib=1.0), model_dir, context_len=512)
    try:
        sampling = Sampling(temperature=1.0, max_new_tokens=new, min_new_tokens=new)
        pool.generate(prompts[:4 * workers], sampling)  # warm-up
        rates = []
        for _ in range(rounds):
            start = time.perf_counter()
            out = pool.generate(prompts, sampling)
            rates.append(sum(len(r.response_ids) for g in out for r in g) / (time.perf_counter() - start))
        return rates
    finally:
        pool.shutdown()
        del ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per vLLM configuration")
    parser.add_argument("--raw", nargs=4, help=argparse.SUPPRESS)  # internal: model, prompts file, new tokens, rounds
    args = parser.parse_args()
    if args.raw:
        print(json.dumps(raw_vllm(args.raw[0], json.loads(Path(args.raw[1]).read_text()), int(args.raw[2]),
                                  int(args.raw[3]))))
        return
    import ray

    from bench.report import write_section
    from rollout.config import EngineKind
    work = Path(tempfile.mkdtemp(prefix="rollout-bench-"))
    make_model(work)
    prompts = prompt_ids(args.prompts, args.prompt_len)
    (work / "prompts.json").write_text(json.dumps(prompts))
    raw = subprocess.run([sys.executable, __file__, "--raw", str(work), str(work / "prompts.json"), str(args.new_tokens),
                          str(args.rounds)],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())})
    results = [("raw vLLM, one process", json.loads(raw.stdout.strip().splitlines()[-1]))]
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    for workers in (1, 2):
        results.append((f"tether, {workers} rollout worker(s) (vLLM) via Ray",
                        tether_workers(str(work), prompts, args.new_tokens, workers, EngineKind.vllm, args.rounds)))
    few = prompts[:max(4, args.prompts // 8)]  # the reference engine is slow; its rate does not depend on the count
    results.append(("tether, 1 reference-engine worker via Ray",
                    tether_workers(str(work), few, args.new_tokens, 1, EngineKind.reference, 1)))
    ray.shutdown()
    results.append(("transformers model.generate, batch 16", [hf_generate(str(work), prompts, args.new_tokens)]))
    raw_rate = statistics.median(results[0][1])
    lines = [f"Model: configs/tiny.yaml's Llama (6 x 256, vocab 4096), random weights, fp32; {args.prompts} prompts of "
             f"{args.prompt_len} tokens, exactly {args.new_tokens} new tokens each, temperature 1; "
             f"{os.cpu_count()} cores. vLLM rows: median of {args.rounds} timed calls (range in brackets).", "",
             "| engine | generated tokens/s | vs raw vLLM |", "|---|---|---|"]
    for name, rates in results:
        spread = f" ({min(rates):,.0f}-{max(rates):,.0f})" if len(rates) > 1 else ""
        lines.append(f"| {name} | {statistics.median(rates):,.0f}{spread} | {statistics.median(rates) / raw_rate:.2f}x |")
    table = "\n".join(lines)
    print(table)
    write_section("rollout_throughput", "## Rollout throughput (`bench/rollout_throughput.py`)\n\n" + table)


if __name__ == "__main__":
    main()
