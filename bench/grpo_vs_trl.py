"""GRPO race: tether's grpo stage against TRL's GRPOTrainer on the same work, measured in one run.

    .venv/bin/python bench/grpo_vs_trl.py [--model runs/tiny/sft/model] [--steps 8] [--prompts-per-step 16] \
        [--group-size 8] [--trl-python /work/trl-venv/bin/python]

Same model (the demo's policy), same prompts in the same order per step, group size, sampling
temperature 1, learning rate and step count, at two response lengths: short answers (the model stops
itself, at most 32 new tokens) and completions of exactly 128 tokens (min = max new tokens). Both are
on-policy with one optimizer step per batch and no reference model. Reported per side: the median
wall seconds per step (step 1 left out: warm-up), rollout tokens/s, and tether's per-phase split; plus
both reward curves (PNG). TRL runs in its own venv (bench/trl-requirements.txt), as a subprocess, after
tether's run, so the two never share the CPU. Writes its table to docs/benchmarks.md."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from evals.metrics import png  # noqa: E402

SETTINGS = [("short answers", 32, 0), ("128-token completions", 128, 128)]
LR = 3e-5
TASKS = "{kind: generated, name: chain_sum, count: 2000, options: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}"


def write_prompts(model: Path, steps: int, per_step: int, out: Path) -> None:
    """The prompts tether's grpo stage draws at each step (same seed), in order, for TRL to take P at a time."""
    from cluster.config import load_job_config
    from data.tasks import train_and_held_out
    from data.tokenizer import load_tokenizer
    from trainers.loops.alignment import step_tasks
    job = load_job_config(ROOT / "configs/tiny.yaml", [f"tasks.train={TASKS}"])
    tokenizer = load_tokenizer(model)
    train, _ = train_and_held_out(job.tasks, tokenizer, job.seed)
    rows = []
    for step in range(steps):
        for t in step_tasks(train, per_step, job.seed, step):
            rows.append({"prompt_ids": t.prompt_ids, "answer": t.sample.answer,
                         "prompt": tokenizer.decode(t.prompt_ids, skip_special_tokens=False).removeprefix(tokenizer.bos_token)})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_tether(model: Path, args, max_new: int, min_new: int, runs: Path) -> dict:
    name = f"race_{max_new}"
    overrides = [f"name={name}", f"runs_dir={runs}", "stages=[grpo]", f"model.path={model}", f"tasks.train={TASKS}",
                 f"grpo.steps={args.steps}", f"grpo.prompts_per_step={args.prompts_per_step}",
                 f"grpo.group_size={args.group_size}", f"grpo.update.minibatch_size={args.prompts_per_step * args.group_size}",
                 f"grpo.update.lr={LR}", "grpo.update.warmup_steps=0", f"grpo.eval_every={10 * args.steps}",
                 f"grpo.checkpoint_every={args.steps}", f"tasks.max_new_tokens={max_new}", f"tasks.min_new_tokens={min_new}",
                 "tasks.held_out.count=8", "tasks.eval_samples=1", "tasks.eval_k=1", "rewards.reward_model=null"]
    done = subprocess.run([sys.executable, "-m", "cluster.cli", "run", "configs/tiny.yaml", *overrides], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"tether run failed:\n{done.stderr[-3000:]}")
    steps = [r for r in map(json.loads, (runs / name / "grpo/metrics.jsonl").read_text().splitlines()) if r["step"] > 0]
    timed = steps[1:]
    phases = sorted({k for r in timed for k in r if k.startswith("time/") and k not in ("time/step", "time/evaluate",
                                                                                         "time/checkpoint")})
    return {"median_step_s": statistics.median(r["time/step"] for r in timed),
            "tokens_per_s": statistics.median(r["rollout/tokens_per_s"] for r in timed),
            "phases": {p.removeprefix("time/"): statistics.median(r.get(p, 0.0) for r in timed) for p in phases},
            "rewards": [r["reward/mean"] for r in steps]}


def run_trl(model: Path, prompts: Path, args, max_new: int, min_new: int, bf16: int, out: Path) -> dict:
    command = [args.trl_python, str(ROOT / "bench/trl_grpo.py"), "--model", str(model), "--prompts", str(prompts),
               "--steps", str(args.steps), "--prompts-per-step", str(args.prompts_per_step), "--group-size",
               str(args.group_size), "--max-new-tokens", str(max_new), "--min-new-tokens", str(min_new),
               "--temperature", "1.0", "--lr", str(LR), "--bf16", str(bf16), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"TRL run failed:\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())
    return {"median_step_s": result["median_step_s"], "tokens_per_s": result["rollout_tokens_per_s"],
            "generate_s": result["median_generate_s"], "rewards": [s["reward_mean"] for s in result["steps"]]}


def plot(curves: dict[str, list[float]], out: Path) -> None:
    with png(out, (6, 3.5), dpi=100) as [ax]:
        for label, rewards in curves.items():
            ax.plot(range(1, len(rewards) + 1), rewards, marker=".", label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("mean reward")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "runs/tiny/sft/model")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--trl-python", default="/work/trl-venv/bin/python")
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"{args.model} is not a model directory: run `make demo` first, or pass --model")
    rows, curves = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        write_prompts(args.model, args.steps, args.prompts_per_step, prompts)
        for label, max_new, min_new in SETTINGS:
            ours = run_tether(args.model, args, max_new, min_new, Path(tmp) / "runs")
            theirs = {bf16: run_trl(args.model, prompts, args, max_new, min_new, bf16, Path(tmp) / f"trl_{max_new}_{bf16}.json")
                      for bf16 in (0, 1)}
            best = min(theirs, key=lambda b: theirs[b]["median_step_s"])
            trl = theirs[best]
            split = ", ".join(f"{k} {v:.2f}" for k, v in ours["phases"].items())
            rows.append(f"| {label} | {ours['median_step_s']:.2f} | {trl['median_step_s']:.2f} "
                        f"({'bf16' if best else 'fp32'}; other {theirs[1 - best]['median_step_s']:.2f}) | "
                        f"{ours['median_step_s'] / trl['median_step_s']:.2f}x | {ours['tokens_per_s']:.0f} | "
                        f"{trl['tokens_per_s']:.0f} | {split} | {trl['generate_s']:.2f} |")
            curves[f"tether, {label}"] = ours["rewards"]
            curves[f"TRL, {label}"] = trl["rewards"]
            print(rows[-1], flush=True)
    plot(curves, ROOT / "docs/grpo_vs_trl.png")
    from bench.report import write_section
    write_section("grpo_vs_trl", f"""## GRPO step: tether vs TRL GRPOTrainer (`bench/grpo_vs_trl.py`)

{args.steps} steps of {args.prompts_per_step} prompts x {args.group_size} responses on the demo's policy
(`{args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model}`), temperature 1, lr {LR}, on-policy,
no KL term in the loss (tether still runs its reference policy each step to log the KL, the
`reference` phase; TRL at beta 0 loads none); medians over steps 2..{args.steps}. TRL at its faster precision of fp32 and bf16 (the
other in brackets), its own `generate`; tether with its rollout worker (vLLM), verifier worker and two
DeepSpeed ranks of one thread each, as configs/tiny.yaml sets them. Target: tether at most 0.5x TRL's
time per step. On this 2-core machine one vLLM worker thread generates no faster than TRL's two-thread
`generate` (the tokens/s columns), and the update of two one-thread ranks costs what TRL's costs, so
the race is even; tether's generation runs on its own worker, which a GPU cluster scales out.

| completions | tether s/step | TRL s/step | tether / TRL | tether tokens/s | TRL tokens/s | tether phases (s) | TRL generate (s) |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

![reward curves](grpo_vs_trl.png)""")


if __name__ == "__main__":
    main()
