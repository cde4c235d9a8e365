"""The sycophancy experiment of Part 4, in one run: two optimisers on a sycophantic reward, one on a verifier.

From one SFT policy, on prompts that all carry a wrong assertion ("I think the answer is W."), three arms:
GRPO and PPO with a reward model trained on `agree` pairs (the answer that says W is preferred: RLHF on
sycophantic preferences), and GRPO with the math verifier (RLVR). Each run measures the sycophancy rate on
the held-out sums (eval.in_stages: greedy, eval.prompts of them) at its start and end; the table gives
both, per seed. PPO samples 4 responses per prompt (ppo.samples_per_prompt) and its critic starts as the
reward model (ppo.critic_init).

    .venv/bin/python bench/sycophancy.py [--start runs/<run>/sft/model] [--seeds 0,1,2] [--resume]

Every run uses configs/sycophancy.yaml (the experiment's recipe: in-stage sycophancy evaluation). Without
--start it first trains the policy: its tokenizer, pretrain and sft stages with a wrong
assertion in half of the SFT prompts (`sft.assert_wrong`, so that the policy sometimes says W). --resume keeps the runs that
finished (a long benchmark can be continued). Writes its table to docs/benchmarks.md and
docs/sycophancy.png."""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.report import write_section  # noqa: E402
from evals.metrics import png, read_metrics  # noqa: E402

RATE = "evals/sycophancy/greedy/sycophancy"
ARMS = {"rlhf": ("grpo", "GRPO, reward model on agree pairs (RLHF)"),    # run-name prefix -> (stage, label)
        "ppo": ("ppo", "PPO, reward model on agree pairs (RLHF)"),
        "rlvr": ("grpo", "GRPO, math verifier (RLVR)")}
# The budgets docs/evals.md's table was measured with, pinned so that they stay whatever the recipe's become (its
# reward model now trains 320 steps at lr 2e-4; the ppo settings are those of the demo's ppo section then). That
# table predates 80456de, which moved the assertion before the question.
ARM_BUDGETS = {"grpo": ["grpo.steps=25", "grpo.eval_every=25", "grpo.checkpoint_every=25"],
               "ppo": ["ppo.steps=15", "ppo.eval_every=15", "ppo.checkpoint_every=15", "ppo.prompts_per_step=32",
                       "ppo.update.lr=3.0e-5", "ppo.update.kl_coef=0.2", "ppo.kl_target=2.0", "ppo.kl_bound=6.0"]}
REWARD_MODEL_BUDGET = ["reward_model.steps=200", "reward_model.lr=5.0e-4", "reward_model.eval_every=50",
                       "reward_model.checkpoint_every=100"]
AGREE_PAIRS = ("reward_model.pairs=[{kind: generated, name: chain_sum, count: 2000, options: {min_terms: 2, "
               "max_terms: 2, min_digits: 1, max_digits: 1}, corruptions: [agree]}]")


def tether(runs_dir: str, name: str, *overrides: str, done: str | None = None) -> Path:
    """Runs configs/sycophancy.yaml with the overrides, unless the stage `done` of that run already wrote its model."""
    if done is not None and (ROOT / runs_dir / name / done / "model" / "config.json").is_file():
        return ROOT / runs_dir / name
    subprocess.run([sys.executable, "-m", "cluster.cli", "run", "configs/sycophancy.yaml", f"name={name}",
                    f"runs_dir={runs_dir}", *overrides], cwd=ROOT, check=True)
    return ROOT / runs_dir / name


def rates(stage_dir: Path) -> tuple[float, float]:
    """The sycophancy rate at the stage's first and last evaluation."""
    measured = [r[RATE] for r in read_metrics(stage_dir / "metrics.jsonl") if RATE in r]
    if len(measured) < 2:
        raise ValueError(f"{stage_dir}: fewer than two sycophancy evaluations in metrics.jsonl")
    return measured[0], measured[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", help="the SFT policy both arms start from (default: train one)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs-dir", default="runs/bench_sycophancy")
    parser.add_argument("--resume", action="store_true", help="keep the runs that finished")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if not args.resume:
        shutil.rmtree(ROOT / args.runs_dir, ignore_errors=True)     # scratch runs of this benchmark only
    start = args.start or str(tether(args.runs_dir, "base", "stages=[tokenizer,pretrain,sft]",
                                     "sft.assert_wrong=0.5", "pretrain.steps=150", "sft.steps=150",
                                     done="sft") / "sft" / "model")
    # every arm's own share
    asserting = [f"model.path={start}", "grpo.assert_wrong=1.0", "ppo.assert_wrong=1.0"]
    reward_model = tether(args.runs_dir, "reward_model", "stages=[reward_model]", AGREE_PAIRS, *asserting,
                          *REWARD_MODEL_BUDGET, done="reward_model")
    served = ["rewards.reward_model.from_stage=false",
              f"rewards.reward_model.path={reward_model / 'reward_model' / 'model'}"]
    arm_overrides = {"rlhf": ["grpo.reward=reward_model", *served],
                     "ppo": [*served, "ppo.samples_per_prompt=4", "ppo.update.minibatch_size=64",
                             "ppo.critic_init=reward_model"],
                     "rlvr": ["rewards.reward_model=null"]}
    for seed in seeds:
        for key, overrides in arm_overrides.items():
            stage = ARMS[key][0]
            tether(args.runs_dir, f"{key}_s{seed}", f"seed={seed}", f"stages=[{stage}]", *asserting, *overrides,
                   *ARM_BUDGETS[stage], done=stage)
    print(report(ROOT / args.runs_dir, seeds))
    return 0


def report(runs: Path, seeds: list[int]) -> str:
    """The table and plot of finished runs, written into docs/benchmarks.md; returns the table."""
    results = {label: [rates(runs / f"{key}_s{seed}" / stage) for seed in seeds] for key, (stage, label) in ARMS.items()}
    accuracy = [r["val/pair_accuracy"] for r in read_metrics(runs / "reward_model" / "reward_model" / "metrics.jsonl")
                if "val/pair_accuracy" in r][-1]
    prompts = yaml.safe_load((runs / f"rlvr_s{seeds[0]}" / "config.yaml").read_text())["eval"]["prompts"]
    lines = [f"From one SFT policy, GRPO (25 steps, otherwise the demo's settings) and PPO (15 steps, otherwise the "
             f"demo's, with 4 responses per prompt and the critic started as the reward model) on prompts that all "
             f"assert a wrong answer; sycophancy rate on the held-out sums at the stage's start and end (greedy, "
             f"{prompts} prompts). The reward model reached pair accuracy {accuracy:.3f} on its agree pairs.", "",
             "| optimiser, reward | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for arm, per_seed in results.items():
        cells = [f"{a:.3f} -> {b:.3f}" for a, b in per_seed]
        mean_start = sum(a for a, _ in per_seed) / len(per_seed)
        mean_end = sum(b for _, b in per_seed) / len(per_seed)
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {mean_start:.3f} -> {mean_end:.3f} |")
    plot(results, seeds, ROOT / "docs" / "sycophancy.png")
    lines += ["", "![sycophancy rate before and after training, per arm](sycophancy.png)"]
    write_section("sycophancy", "## Sycophancy: RLHF on agreeing preferences vs RLVR (bench/sycophancy.py)\n\n"
                  + "\n".join(lines))
    return "\n".join(lines)


def plot(results: dict, seeds: list[int], path: Path) -> None:
    with png(path, (6, 4)) as [ax]:
        for colour, (arm, per_seed) in zip(["tab:red", "tab:orange", "tab:blue"], results.items()):
            for i, (seed, (a, b)) in enumerate(zip(seeds, per_seed)):
                ax.plot([0, 1], [a, b], marker="o", label=f"{arm}, seed {seed}", color=colour, alpha=0.4 + 0.2 * i)
        ax.set(xticks=[0, 1], xticklabels=["start", "end"], ylabel="sycophancy rate (greedy)",
               title="A reward model that prefers agreeing vs a verifier")
        ax.legend(fontsize=7)


if __name__ == "__main__":
    sys.exit(main())
