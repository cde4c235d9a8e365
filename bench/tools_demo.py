"""A policy that learns to use a calculator (issue 25), per seed: configs/tools.yaml's tool arm (pretrain, SFT on
calculator demonstrations, GRPO in episodes with the calculator) against a no-tool arm from the same pretrained
policy (SFT on the worked sums, then GRPO, both without tools), on the same held-out sums of 3-4 numbers of 3-4
digits.

    .venv/bin/python bench/tools_demo.py [--seeds 0,1,2] [--resume]
    .venv/bin/python bench/tools_demo.py --search [--seeds 0] [--resume]

Reports held-out pass@1 without the tool (the no-tool arm after SFT and after GRPO, and the tool arm's policy
when no tool answers), with the tool after SFT and after GRPO, the share of attempted calls that were well
formed and ran, and the tool arm's gain over the best no-tool policy (target: +15 points).

--search: configs/tools_search.yaml (SFT on search demonstrations over the fictional knowledge base) against
configs/facts.yaml's reading SFT from the same pretrained policy; Hall(theta) = 1 - the facts verifier's mean
score on the facts suite's 180 closed-book questions, without the tool and with it. Each writes its table into
docs/benchmarks.md."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.report import write_section  # noqa: E402
from evals.metrics import read_metrics  # noqa: E402


def run(config: str, name: str, overrides: list[str], resume: bool, last_stage: str = "grpo") -> Path:
    out = ROOT / "runs" / name
    if resume and (out / last_stage / "model" / "config.json").is_file():
        return out
    subprocess.run([sys.executable, "-m", "cluster.cli", "run", config, f"name={name}", *overrides],
                   cwd=ROOT, check=True)
    return out


def last(run_dir: Path, stage: str, key: str) -> float:
    values = [r[key] for r in read_metrics(run_dir / stage / "metrics.jsonl") if key in r]
    if not values:
        raise RuntimeError(f"{run_dir / stage}: no {key} logged")
    return float(values[-1])


def calculator(seeds: list[int], resume: bool) -> None:
    rows, gains = [], []
    tool_runs = {seed: run("configs/tools.yaml", f"tools-s{seed}", [f"seed={seed}"], resume) for seed in seeds}
    for seed, tools in tool_runs.items():       # the tool arms first: each no-tool arm starts from one's pretraining
        plain = run("configs/tools.yaml", f"tools-notool-s{seed}",
                    [f"seed={seed}", "stages=[sft,grpo]", "checks=[]", f"model.path={tools / 'pretrain' / 'model'}",
                     "sft.demonstrate=null", "sft.episode=null", "grpo.episode=null"], resume)
        best_plain = max(last(plain, "sft", "eval/pass@1"), last(plain, "grpo", "eval/pass@1"))
        gain = last(tools, "grpo", "eval/tools/pass@1") - best_plain
        gains.append(gain)
        cells = [last(plain, "sft", "eval/pass@1"), last(plain, "grpo", "eval/pass@1"),
                 last(tools, "grpo", "eval/pass@1"), last(tools, "sft", "eval/tools/pass@1"),
                 last(tools, "grpo", "eval/tools/pass@1")]
        formed = [last(tools, s, "eval/tools/well_formed_share") for s in ("sft", "grpo")]
        rows.append(f"| {seed} | " + " | ".join(f"{c:.3f}" for c in cells)
                    + f" | {formed[0]:.3f} / {formed[1]:.3f} | **{100 * gain:+.1f}** |")
        print(rows[-1], flush=True)
    table = "\n".join([
        f"`.venv/bin/python bench/tools_demo.py --seeds {','.join(map(str, seeds))}`: held-out pass@1 on 128 sums "
        "of 3-4 numbers of 3-4 digits (4 samples each, temperature 1). No-tool arm: SFT on worked sums, then GRPO, "
        "from the tool arm's pretrained policy of the same seed. Tool arm: configs/tools.yaml. *Tool policy, no "
        "tool*: the tool arm's GRPO policy answering in one turn, so that no calculator answers its call. Gain: the "
        "tool arm after GRPO, with the calculator, over the best no-tool policy, in points (target: +15).", "",
        "| seed | no tool: SFT | no tool: GRPO | tool policy, no tool | with tool: SFT | with tool: GRPO | "
        "well-formed calls (SFT / GRPO) | gain (points) |", "|---|---|---|---|---|---|---|---|", *rows,
        f"| mean | | | | | | | **{100 * np.mean(gains):+.1f}** |"])
    print(table)
    write_section("tools_demo", "## The calculator demonstration (`bench/tools_demo.py`)\n\n" + table)


def search(seeds: list[int], resume: bool) -> None:
    score = "verifier/facts/mean_score"
    rows = []
    for seed in seeds:
        tools = run("configs/tools_search.yaml", f"tools-search-s{seed}", [f"seed={seed}"], resume, "sft")
        reading = run("configs/facts.yaml", f"tools-search-reading-s{seed}",
                      [f"seed={seed}", "stages=[sft]", f"model.path={tools / 'pretrain' / 'model'}",
                       "tasks.held_out.split=test_closed_book", "tasks.held_out.count=180", "tasks.max_new_tokens=40"],
                      resume, "sft")
        cells = [1 - last(reading, "sft", f"eval/{score}"), 1 - last(tools, "sft", f"eval/{score}"),
                 1 - last(tools, "sft", f"eval/tools/{score}"), last(reading, "sft", "eval/pass@1"),
                 last(tools, "sft", "eval/tools/pass@1"), last(tools, "sft", "eval/tools/well_formed_share")]
        rows.append(f"| {seed} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        print(rows[-1], flush=True)
    table = "\n".join([
        f"`.venv/bin/python bench/tools_demo.py --search --seeds {','.join(map(str, seeds))}`: the facts suite's "
        "180 closed-book questions about configs/facts.yaml's knowledge base (half of the facts stated in "
        "pretraining), 4 samples each at temperature 1. Hall(theta) = 1 - the facts verifier's mean score (a "
        "response's share of false claims; one with no claim asserts nothing false). *Reading SFT*: "
        "configs/facts.yaml's SFT (open-book reading practice) from the same pretrained policy, asked "
        "closed-book. *Search SFT*: configs/tools_search.yaml, one turn (no tool answers its call) and in "
        "episodes with the search tool.", "",
        "| seed | Hall, reading SFT, no tool | Hall, search SFT, no tool | Hall, search SFT, with search | "
        "pass@1 reading SFT | pass@1 with search | well-formed calls |", "|---|---|---|---|---|---|---|", *rows])
    print(table)
    write_section("tools_search", "## Search against hallucination (`bench/tools_demo.py --search`)\n\n" + table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--search", action="store_true", help="the search run over the knowledge base")
    parser.add_argument("--resume", action="store_true", help="keep the runs that finished")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    (search if args.search else calculator)(seeds, args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
