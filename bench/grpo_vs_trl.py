"""GRPO race: tether's grpo stage against TRL's GRPOTrainer on the same work, measured in one run.

    .venv/bin/python bench/grpo_vs_trl.py [--model runs/tiny/sft/model] [--steps 20] [--prompts-per-step 16] \
        [--group-size 8] [--trl-python .venv-trl/bin/python]

Same model (the demo's policy), same prompts in the same order per step, group size, sampling
temperature 1, learning rate and step count, at two response lengths: short answers (the model stops
itself, at most 32 new tokens) and completions of exactly 128 tokens (min = max new tokens). No KL term
on either side. TRL is on-policy with one optimizer step per batch, at its fastest of three settings (fp32 and
bf16 with transformers' sdpa attention, bf16 with eager attention; all measured), gradient checkpointing off. tether runs three times: synchronous and with async rollouts
(grpo.async_rollout.max_staleness 1, as configs/tiny.yaml sets grpo: the workers sample step s+1 while the
learners train on step s), on configs/tiny.yaml's two learner ranks, and async on one rank (the engine and the
learner then each have a core). Reported per run: the median wall seconds per step (step 1 left out: warm-up),
rollout tokens per wall second, the reward gained per wall minute, tether's per-phase split and how much of
the synchronous run's generation the async run hid; the reward curves against wall time (PNG). TRL runs in
its own venv, built from bench/trl-requirements.txt on first use, as a subprocess after tether's runs, so
that the two never share the CPU. Writes its table to docs/benchmarks.md."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.async_rl import overlapped_step, role_threads  # noqa: E402
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


TETHER_ARMS = [(0, 2), (1, 2), (1, 1)]   # (max_staleness, learner ranks of one thread): configs/tiny.yaml's ranks,
                                         # and one rank, so that the engine and the learner each have a core


def tether_arm_name(arm: tuple[int, int]) -> str:
    staleness, ranks = arm
    return "tether, synchronous" if staleness == 0 else \
        f"tether, async (max_staleness {staleness}), {ranks} learner rank{'s' if ranks > 1 else ''}"


def verdict(label: str, ours: dict, trl_step: float) -> str:
    """tether's fastest arm against the 0.5x target, and the floor any overlap of the synchronous run's generation
    and update could reach (on this machine's cores, and with generation on devices of its own)."""
    from cluster.config import load_job_config
    fastest = min(TETHER_ARMS, key=lambda arm: figures(ours[arm])[0])
    ratio = figures(ours[fastest])[0] / trl_step
    sync = ours[TETHER_ARMS[0]]
    step, g, u = figures(sync)[0], sync["phases"]["generate"], sync["phases"]["update"]
    engine, learner = role_threads(load_job_config(ROOT / "configs/tiny.yaml",
                                                   [f"learner.num_ranks={TETHER_ARMS[0][1]}"]))
    here = overlapped_step(step, g, u, engine, learner, os.cpu_count()) / trl_step
    apart = overlapped_step(step, g, u, engine, learner, None) / trl_step
    return (f"- {label}: tether's fastest ({tether_arm_name(fastest).removeprefix('tether, ')}) {ratio:.2f}x TRL: "
            f"{'met' if ratio <= 0.5 else 'MISSED'}. From the synchronous run's phases (generate {g:.2f} s on "
            f"{engine} engine thread{'s' if engine > 1 else ''}, update {u:.2f} s on {learner} learner "
            f"thread{'s' if learner > 1 else ''}), a perfect overlap on these {os.cpu_count()} cores takes at least "
            f"{here:.2f}x TRL's step, and {apart:.2f}x with generation on devices of its own "
            f"(bench/async_rl.py's overlapped_step).")


def run_tether(model: Path, args, max_new: int, min_new: int, runs: Path, arm: tuple[int, int]) -> dict:
    staleness, ranks = arm
    name = f"race_{max_new}_k{staleness}_r{ranks}"
    overrides = [f"name={name}", f"runs_dir={runs}", "stages=[grpo]", f"model.path={model}", f"tasks.train={TASKS}",
                 f"grpo.steps={args.steps}", f"grpo.prompts_per_step={args.prompts_per_step}",
                 f"grpo.group_size={args.group_size}",
                 f"grpo.update.minibatch_size={args.prompts_per_step * args.group_size}", f"grpo.update.lr={LR}",
                 "grpo.update.warmup_steps=0", f"grpo.eval_every={10 * args.steps}",
                 f"grpo.checkpoint_every={args.steps}",
                 f"grpo.async_rollout.max_staleness={staleness}", f"learner.num_ranks={ranks}",
                 f"tasks.max_new_tokens={max_new}",
                 f"tasks.min_new_tokens={min_new}", "tasks.held_out.count=8", "tasks.eval_samples=1", "tasks.eval_k=1",
                 "rewards.reward_model=null"]
    done = subprocess.run([sys.executable, "-m", "cluster.cli", "run", "configs/tiny.yaml", *overrides], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"tether run failed:\n{done.stderr[-3000:]}")
    steps = [r for r in map(json.loads, (runs / name / "grpo/metrics.jsonl").read_text().splitlines()) if r["step"] > 0]
    timed = steps[1:]
    skip = ("time/step", "time/evaluate", "time/checkpoint", "time/reference")   # reference: the last step's KL log
    phases = sorted({k for r in timed for k in r if k.startswith("time/") and k not in skip})
    return {"seconds": [r["time/step"] for r in steps], "rewards": [r["reward/mean"] for r in steps],
            "tokens": [r["rollout/response_tokens"] * r["rollout/responses"] for r in steps],
            "phases": {p.removeprefix("time/"): statistics.median(r.get(p, 0.0) for r in timed) for p in phases}}


def trl_venv(python: Path) -> Path:
    """TRL's interpreter; built from bench/trl-requirements.txt the first time (a venv apart from tether's)."""
    if not python.is_file():
        venv = python.parents[1]
        print(f"building TRL's venv at {venv} from bench/trl-requirements.txt", flush=True)
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "bench/trl-requirements.txt")],
                       check=True)
    return python


TRL_ARMS = [(0, "sdpa"), (1, "sdpa"), (1, "eager")]   # (bf16, attention): TRL's default, and its faster settings here


def trl_arm_name(arm: tuple[int, str]) -> str:
    return f"{'bf16' if arm[0] else 'fp32'}, {arm[1]}"


def run_trl(python: Path, model: Path, prompts: Path, args, max_new: int, min_new: int, arm: tuple[int, str],
            out: Path) -> dict:
    command = [str(python), str(ROOT / "bench/trl_grpo.py"), "--model", str(model), "--prompts", str(prompts),
               "--steps", str(args.steps), "--prompts-per-step", str(args.prompts_per_step), "--group-size",
               str(args.group_size), "--max-new-tokens", str(max_new), "--min-new-tokens", str(min_new),
               "--temperature", "1.0", "--lr", str(LR), "--bf16", str(arm[0]), "--attn-implementation", arm[1],
               "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"TRL run failed:\n{done.stderr[-3000:]}")
    steps = json.loads(out.read_text())["steps"]
    return {"seconds": [s["seconds"] for s in steps], "rewards": [s["reward_mean"] for s in steps],
            "tokens": [s["completion_tokens"] for s in steps],
            "generate": statistics.median(s["generate_s"] for s in steps[1:])}


def figures(run: dict) -> tuple[float, float, float]:
    """(median seconds per step, rollout tokens per wall second, reward gained per wall minute), step 1 left out;
    the gain is the mean reward of the last 5 steps minus that of the first 5."""
    seconds, tokens, rewards = run["seconds"][1:], run["tokens"][1:], run["rewards"]
    gain = statistics.mean(rewards[-5:]) - statistics.mean(rewards[:5])
    return statistics.median(seconds), sum(tokens) / sum(seconds), gain / (sum(run["seconds"]) / 60)


def plot(curves: dict[str, dict[str, dict]], out: Path) -> None:
    with png(out, (11, 3.8), panels=len(curves), dpi=100) as axes:
        for ax, (label, runs) in zip(axes, curves.items()):
            for arm, run in runs.items():
                ax.plot(list(itertools.accumulate(run["seconds"])), run["rewards"], marker=".", label=arm)
            ax.set(xlabel="wall seconds", ylabel="mean reward", title=label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "runs/tiny/sft/model")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompts-per-step", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--trl-python", type=Path, default=ROOT / ".venv-trl/bin/python")
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        raise SystemExit(f"{args.model} is not a model directory: run `make demo` first, or pass --model")
    if args.steps < 10:
        raise SystemExit("--steps: at least 10 (the reward gain compares the first 5 steps with the last 5)")
    python = trl_venv(args.trl_python)
    rows, verdicts, curves = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.jsonl"
        write_prompts(args.model, args.steps, args.prompts_per_step, prompts)
        for label, max_new, min_new in SETTINGS:
            ours = {arm: run_tether(args.model, args, max_new, min_new, Path(tmp) / "runs", arm) for arm in TETHER_ARMS}
            theirs = {arm: run_trl(python, args.model, prompts, args, max_new, min_new, arm,
                                   Path(tmp) / f"trl_{max_new}_{arm[0]}_{arm[1]}.json") for arm in TRL_ARMS}
            best = min(theirs, key=lambda b: figures(theirs[b])[0])
            trl_step, trl_tokens, trl_gain = figures(theirs[best])
            sync_generate = ours[TETHER_ARMS[0]]["phases"]["generate"]
            for arm in TETHER_ARMS:
                step, tokens, gain = figures(ours[arm])
                split = ", ".join(f"{p} {v:.2f}" for p, v in ours[arm]["phases"].items())
                hidden = 1 - ours[arm]["phases"]["generate"] / sync_generate
                overlap = f"{hidden:.0%} of generation hidden" if arm[0] else "none"
                rows.append(f"| {label} | {tether_arm_name(arm)} | {step:.2f} | {step / trl_step:.2f}x | {tokens:.0f} | {gain:+.3f} | "
                            f"{split} | {overlap} |")
                print(rows[-1], flush=True)
            others = "; ".join(f"{trl_arm_name(a)} {figures(theirs[a])[0]:.2f}" for a in TRL_ARMS if a != best)
            rows.append(f"| {label} | TRL {trl_arm_name(best)} (other settings, s/step: {others}) | {trl_step:.2f} "
                        f"| 1.00x | {trl_tokens:.0f} | "
                        f"{trl_gain:+.3f} | "
                        f"generate {theirs[best]['generate']:.2f} | none |")
            print(rows[-1], flush=True)
            verdicts.append(verdict(label, ours, trl_step))
            print(verdicts[-1], flush=True)
            curves[label] = {**{tether_arm_name(arm).removeprefix("tether, "): ours[arm] for arm in TETHER_ARMS},
                             f"TRL ({trl_arm_name(best)})": theirs[best]}
    plot(curves, ROOT / "docs/grpo_vs_trl.png")
    from bench.report import write_section
    model = args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model
    write_section("grpo_vs_trl", f"""## GRPO step: tether vs TRL GRPOTrainer (`bench/grpo_vs_trl.py`)

`.venv/bin/python bench/grpo_vs_trl.py --model {model} --steps {args.steps}`: {args.steps} steps of
{args.prompts_per_step} prompts x {args.group_size} responses on the demo's policy, temperature 1, lr {LR}, no KL
term; medians over steps 2..{args.steps}. TRL at its fastest of fp32 and bf16 with transformers' sdpa attention and
bf16 with eager attention (the others in brackets), gradient checkpointing off, its own `generate` (two threads);
tether with one vLLM worker thread, a verifier worker and DeepSpeed ranks of one thread each (attention as
modeling/attention.py computes it on the CPU): two ranks as configs/tiny.yaml sets them, synchronous and with async
rollouts, and async with one rank, so that the engine and the learner each have a core of their own. Tokens/s are
rollout tokens per wall second of the whole step; reward/min is the mean reward of the last 5 steps minus
that of the first 5, per wall minute of the run. Target (issue 24): tether at most 0.5x TRL's time per step.
The reward columns compare only on short answers: TRL's script scores the number after the last `####`, tether's
math verifier the whole line after it, so at 128 forced tokens, where the model writes on past its answer on the
same line, tether's reward is the stricter.

| completions | run | s/step | / TRL | tokens/s | reward/min | phases (s, medians) | overlap |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{chr(10).join(verdicts)}

![reward against wall time](grpo_vs_trl.png)""")


if __name__ == "__main__":
    main()
