"""Attention on the CPU: one training step (forward and backward under bf16 autocast, as a learner rank
computes it) of the demo's Llama with transformers' sdpa path (torch's fused CPU kernel) against
modeling/attention.py's `cpu_attention` (explicit scores up to EXPLICIT_MAX_KEYS keys), at several row
lengths, right-padded rows as the RL learners see them, and threads per process.

    .venv/bin/python bench/cpu_attention.py [--repeats 7]

Both models hold the same weights and see the same tokens, interleaved step by step so that the machine's
noise falls on both. Writes its table to docs/benchmarks.md. Run it with nothing else on the machine."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import write_section  # noqa: E402
from cluster.config import load_job_config  # noqa: E402
from modeling.attention import EXPLICIT_MAX_KEYS, attention_for  # noqa: E402
from modeling.model import build_llama  # noqa: E402

SHAPES = [(16, 48), (16, 96), (16, 160), (8, 256), (8, 384), (4, 512)]    # rows x tokens: ~800-4096 tokens


class Vocab:
    """The demo's special ids over a 4096-token vocabulary (what build_llama reads of a tokenizer)."""
    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __len__(self) -> int:
        return 4096


def step_seconds(model, ids: torch.Tensor, mask: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids, attention_mask=mask).logits
    logp = logits.float().log_softmax(-1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    (-(logp * mask[:, 1:]).sum() / mask[:, 1:].sum()).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    cfg = load_job_config(ROOT / "configs/tiny.yaml", []).model
    fused = build_llama(cfg, Vocab(), seed=0).train()
    explicit = attention_for(build_llama(cfg, Vocab(), seed=0).train(), torch.device("cpu"))
    rows = []
    for threads in map(int, args.threads.split(",")):
        torch.set_num_threads(threads)
        for batch, width in SHAPES:
            gen = torch.Generator().manual_seed(width)
            ids = torch.randint(3, 4096, (batch, width), generator=gen)
            mask = torch.ones(batch, width, dtype=torch.long)
            mask[::2, width - width // 5:] = 0                                  # every other row 20% padding
            times = {"sdpa": [], "tether": []}
            for r in range(args.repeats + 1):                                  # the first is warm-up
                for name, model in (("sdpa", fused), ("tether", explicit)):
                    t = step_seconds(model, ids, mask)
                    if r:
                        times[name].append(t)
            a, b = statistics.median(times["sdpa"]), statistics.median(times["tether"])
            path = "explicit" if width <= EXPLICIT_MAX_KEYS else "sdpa"
            rows.append(f"| {threads} | {batch} x {width} | {a:.3f} | {b:.3f} ({path}) | {a / b:.2f}x |")
            print(rows[-1], flush=True)
    body = "\n".join([
        "## Attention on the CPU (`bench/cpu_attention.py`)",
        "",
        f"`.venv/bin/python bench/cpu_attention.py --repeats {args.repeats} --threads {args.threads}`: one training "
        "step (forward and backward, bf16 autocast, a token-mean log-likelihood) of the demo's Llama (configs/tiny.yaml's "
        "model, 4096-token vocabulary), every other row 20% right padding; medians of the repeats, the two "
        "attentions interleaved. tether's policy learners and reference policy on the CPU compute "
        f"attention explicitly (modeling/attention.py) on rows of at most {EXPLICIT_MAX_KEYS} keys and with "
        "transformers' sdpa beyond.",
        "",
        "| threads | rows x tokens | sdpa s/step | tether s/step (path) | speed-up |",
        "|---|---|---|---|---|",
        *rows,
    ])
    write_section("cpu_attention", body)


if __name__ == "__main__":
    main()
