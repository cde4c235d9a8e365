"""Continual learning, eq. (12): full fine-tuning against LoRA + Omega on a new corpus, in one run.

Both start from the demo's pretrained model (runs/tiny, from `make demo`) and train on the fictional knowledge
base (configs/continual.yaml); pretrain.retained logs the held-out loss on the old corpus as they go.
Forgetting is compared at the same new-corpus loss, at several budgets down to the lowest loss both reach: each
method's old-corpus loss is read off its curve by linear interpolation between evaluations.

    python bench/continual_learning.py            # writes docs/benchmarks.md (continual) and docs/continual_learning.png
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import write_section  # noqa: E402
from evals.metrics import png, read_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def curve(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, new-corpus held-out loss, old-corpus held-out loss) at each evaluation."""
    rows = [r for r in read_metrics(run / "pretrain" / "metrics.jsonl") if "retained/loss" in r]
    return (np.array([r["step"] for r in rows]), np.array([r["val/loss"] for r in rows]),
            np.array([r["retained/loss"] for r in rows]))


def retained_at(new: np.ndarray, old: np.ndarray, target: float) -> float:
    """Old-corpus loss where the new-corpus loss first reaches target (linear between evaluations)."""
    for i in range(1, len(new)):
        if new[i] <= target:
            t = 1.0 if new[i - 1] == new[i] else (new[i - 1] - target) / (new[i - 1] - new[i])
            return float(old[i - 1] + t * (old[i] - old[i - 1]))
    raise ValueError(f"the new-corpus loss never reached {target:.3f}")


def budgets(curves: dict, step: float) -> list[float]:
    """New-corpus losses both methods reach: every `step` nats below the start, and the last one both reach."""
    start = max(float(new[0]) for _, new, _ in curves.values())
    floor = max(float(new.min()) for _, new, _ in curves.values())
    levels = list(np.arange(start - step, floor, -step))
    return [float(x) for x in levels] + [floor]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--full-lr", type=float, default=3e-4)
    parser.add_argument("--lora-lr", type=float, default=3e-3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                        help="comma-separated layers that get adapters")
    parser.add_argument("--omega", type=float, default=1.0, help="lambda of eq. (12)")
    parser.add_argument("--regulariser", choices=["ewc", "l2"], default="ewc", help="Omega: EWC or L2 to the adapter")
    parser.add_argument("--fisher-batches", type=int, default=16, help="EWC: old-corpus batches for the Fisher")
    parser.add_argument("--eval-every", type=int, default=2, help="steps between held-out evaluations")
    parser.add_argument("--budget-step", type=float, default=0.25, help="nats between compared new-corpus losses")
    parser.add_argument("--runs-dir", default="runs/bench_continual")
    args = parser.parse_args()
    if not (ROOT / "runs/tiny/pretrain/model/config.json").is_file():
        raise SystemExit("needs the demo's pretrained model in runs/tiny/pretrain/model: run `make demo` first")
    lora = (f"learner.lora={{rank: {args.rank}, alpha: {2 * args.rank}, targets: [{args.targets}], "
            f"omega: {args.omega}, regulariser: {args.regulariser}, fisher_batches: {args.fisher_batches}}}")
    lora_label = f"LoRA r={args.rank} + Omega ({args.regulariser.upper()}, lambda {args.omega:g})"
    variants = {"full fine-tuning": [f"learner.lr={args.full_lr}"], lora_label: [f"learner.lr={args.lora_lr}", lora]}
    curves = {}
    shutil.rmtree(ROOT / args.runs_dir, ignore_errors=True)     # scratch runs of this benchmark only
    for i, (label, overrides) in enumerate(variants.items()):
        name = f"v{i}"
        subprocess.run([sys.executable, "-m", "cluster.cli", "run", "configs/continual.yaml", f"name={name}",
                        f"runs_dir={args.runs_dir}", f"pretrain.steps={args.steps}", f"pretrain.eval_every={args.eval_every}",
                        *overrides], cwd=ROOT, check=True)
        curves[label] = curve(ROOT / args.runs_dir / name)
    full, adapted = curves["full fine-tuning"], curves[lora_label]
    levels = budgets(curves, args.budget_step)
    lines = [f"Old corpus: the demo's (Shakespeare and arithmetic); new corpus: the fictional knowledge base; "
             f"{args.steps} steps each, 2 ranks x 8 x 256 tokens. Full fine-tuning: lr {args.full_lr:g}, new-corpus "
             f"held-out loss {full[1][0]:.3f} -> {full[1][-1]:.3f}. {lora_label} on "
             f"{args.targets.replace(',', ', ')}: lr {args.lora_lr:g}, {adapted[1][0]:.3f} -> {adapted[1][-1]:.3f}"
             + (f"; Fisher from {args.fisher_batches} old-corpus batches" if args.regulariser == "ewc" else "")
             + f". Old-corpus held-out loss at the start: {full[2][0]:.3f}.", "",
             "Rise of the old-corpus loss when each method's new-corpus loss first reaches the budget "
             f"(evaluations every {args.eval_every} steps, linear between them):", "",
             "| new-corpus loss budget | full fine-tuning | LoRA + Omega | LoRA + Omega / full |", "|---|---|---|---|"]
    for level in levels:
        rise_full = retained_at(full[1], full[2], level) - full[2][0]
        rise_lora = retained_at(adapted[1], adapted[2], level) - adapted[2][0]
        lines.append(f"| {level:.3f} | {rise_full:+.3f} | {rise_lora:+.3f} | {rise_lora / rise_full:.2f} |")
    plot(curves, levels[-1], ROOT / "docs" / "continual_learning.png")
    lines += ["", "![old-corpus loss against new-corpus loss](continual_learning.png)"]
    write_section("continual", "## Continual learning (bench/continual_learning.py)\n\n" + "\n".join(lines))
    print("\n".join(lines))
    return 0


def plot(curves, target: float, path: Path) -> None:
    with png(path, (6, 4)) as [ax]:
        for label, (_, new, old) in curves.items():
            ax.plot(new, old, marker="o", markersize=3, label=label)
        ax.axvline(target, color="grey", linestyle=":", label="same new-corpus loss")
        ax.set(xlabel="new-corpus held-out loss (training goes right to left)", ylabel="old-corpus held-out loss",
               title="Forgetting while learning a new corpus")
        ax.invert_xaxis()
        ax.legend(fontsize=8)


if __name__ == "__main__":
    sys.exit(main())
