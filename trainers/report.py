"""runs/<name>/report.md: what each stage of a pipeline did, from the metrics it logged.

It opens with one row per stage (its headline held-out measure, start -> end, and its wall time) and the PNG
curves each stage plotted, then the checks and every held-out measure at each stage's start and end.
Nothing is recomputed here: the numbers are the stages' own."""
from __future__ import annotations

import json
import os
from pathlib import Path

from evals.config import COUNTS
from evals.metrics import read_metrics

PPO_MEASURES = ["eval/reward_model_score", "eval/pass@1", "eval/response_tokens", "ppo/kl_per_response"]
# Held-out measures per stage (metrics.jsonl keys), in the order the table shows them.
MEASURES = {
    "pretrain": ["val/bits_per_byte", "val/loss"],
    "sft": ["eval/pass@1", "eval/pass@4", "eval/response_tokens"],
    "reward_model": ["val/pair_accuracy", "val/pair_accuracy/final", "val/pair_accuracy/step", "val/pair_accuracy/agree"],
    "grpo": ["eval/pass@1", "eval/pass@4", "eval/reward_model_score", "eval/response_tokens"],
    "rsft": ["eval/pass@1", "eval/pass@4", "eval/reward_model_score", "eval/response_tokens"],
    "sycophancy_ppo": PPO_MEASURES,
    "ppo": PPO_MEASURES,
    "dpo": ["eval/preference_accuracy", "eval/preference_accuracy/final", "eval/margin"],
}
PLOTS = ["loss.png", "accuracy.png", "curves.png"]


def headline(stage: str, records: list[dict]) -> str:
    """The stage's first held-out measure, start -> end (empty for a stage that measures none)."""
    for key in MEASURES.get(stage, [])[:1]:
        pair = first_last(records, key)
        if pair is not None:
            return f"{key} {pair[0]:.4g} -> {pair[1]:.4g} ({pair[1] - pair[0]:+.4g})"
    return ""


def stage_line(run_dir: Path, stage: str, seconds: float) -> str:
    """What the pipeline prints as a stage ends: its held-out headline and its wall time."""
    path = run_dir / stage / "metrics.jsonl"
    figure = headline(stage, read_metrics(path)) if path.is_file() else ""
    return f"[{stage}] {figure + ', ' if figure else ''}{seconds:.1f} s"


def first_last(records: list[dict], key: str) -> tuple[float, float] | None:
    values = [r[key] for r in records if key in r]
    return (values[0], values[-1]) if values else None


def stage_rows(stage: str, records: list[dict]) -> list[str]:
    """The stage's own measures, then the eval suites it ran (eval.in_stages)."""
    rows = []
    counts = tuple(f"/{k}" for k in COUNTS)
    suites = sorted({k for r in records for k in r if k.startswith("evals/") and not k.endswith(counts)})
    for key in MEASURES.get(stage, []) + suites:
        pair = first_last(records, key)
        if pair is not None:
            start, end = pair
            rows.append(f"| {stage} | {key} | {start:.4g} | {end:.4g} | {end - start:+.4g} |")
    return rows


def write_report(run_dir: Path, stages: list[str], seconds: dict[str, float], checks: list[str]) -> Path:
    """stages: in pipeline order; seconds: wall time per stage this invocation ran; checks: lines of
    acceptance checks (e.g. 'GRPO raised pass@1 by 0.12') the caller derived."""
    found = {stage: read_metrics(run_dir / stage / "metrics.jsonl") for stage in stages
             if (run_dir / stage / "metrics.jsonl").is_file()}
    lines = [f"# Report: {run_dir.name}", "", "| stage | held-out, start -> end | seconds |", "|---|---|---|"]
    lines += [f"| {s} | {headline(s, found.get(s, []))} | {seconds[s]:.1f} |" for s in stages if s in seconds]
    lines += [f"| total | | {sum(seconds[s] for s in stages if s in seconds):.1f} |", "", "## Curves", ""]
    for stage in stages:
        lines += [f"![{stage} {png}]({stage}/{png})" for png in PLOTS if (run_dir / stage / png).is_file()]
    if checks:
        lines += ["", "## Checks", ""] + [f"- {c}" for c in checks]
    lines += ["", "## Held-out measures, at each stage's start and end", "",
              "| stage | measure | start | end | change |", "|---|---|---|---|---|"]
    for stage in stages:
        lines += stage_rows(stage, found.get(stage, []))
    out = run_dir / "report.md"
    tmp = out.with_name("report.md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out)
    return out


def acceptance_checks(run_dir: Path, kl_bounds: dict[str, float]) -> list[str]:
    """The demo's claims, read back from the stages' metrics (kl_bounds: each PPO stage's bound on the KL per
    response)."""
    checks = []
    for stage in ("grpo", "rsft"):
        path = run_dir / stage / "metrics.jsonl"
        pair = first_last(read_metrics(path), "eval/pass@1") if path.is_file() else None
        if pair:
            checks.append(f"{stage}: held-out pass@1 {pair[0]:.3f} -> {pair[1]:.3f} ({100 * (pair[1] - pair[0]):+.1f} points)")
    for stage in ("ppo", "sycophancy_ppo"):
        path = run_dir / stage / "metrics.jsonl"
        if path.is_file():
            checks += ppo_checks(stage, read_metrics(path), kl_bounds.get(stage))
    path = run_dir / "reward_model" / "metrics.jsonl"
    if path.is_file():
        checks += reward_model_checks(read_metrics(path))
    arms = (("grpo", "a verifier reward (RLVR)"), ("sycophancy_ppo", "the reward model (RLHF), from grpo's start"),
            ("ppo", "the reward model (RLHF)"))
    for stage, reward in arms:
        path = run_dir / stage / "metrics.jsonl"
        if path.is_file():
            checks += sycophancy_checks(stage, reward, read_metrics(path))
    path = run_dir / "dpo" / "metrics.jsonl"
    if path.is_file():
        pair = first_last(read_metrics(path), "eval/preference_accuracy")
        if pair:
            checks.append(f"dpo: held-out preference accuracy {pair[1]:.3f} (sign of the implicit reward margin)")
    return checks


def ppo_checks(stage: str, records: list[dict], kl_bound: float | None) -> list[str]:
    """The held-out reward-model score at the stage's first and last evaluation, and its largest KL."""
    checks = []
    score = first_last(records, "eval/reward_model_score")
    kl = [r["ppo/kl_per_response"] for r in records if "ppo/kl_per_response" in r]
    if score:
        checks.append(f"{stage}: held-out reward-model score {score[0]:.3f} -> {score[1]:.3f} ({score[1] - score[0]:+.3f})")
    if kl and kl_bound is not None:
        verdict = "within" if max(kl) <= kl_bound else "OVER"
        checks.append(f"{stage}: largest KL per response {max(kl):.3f} nats, {verdict} the bound {kl_bound:g}")
    return checks


def reward_model_checks(records: list[dict]) -> list[str]:
    """The reward model's last held-out pair accuracy, overall and per kind of pair (an `agree` share says how
    strongly it prefers answers that agree with a user's wrong assertion: the sycophancy experiment)."""
    last = first_last(records, "val/pair_accuracy")
    if last is None:
        return []
    kinds = [(key.rsplit("/", 1)[1], first_last(records, key)) for key in MEASURES["reward_model"]
             if key.startswith("val/pair_accuracy/")]
    per_kind = ", ".join(f"{kind} {pair[1]:.3f}" for kind, pair in kinds if pair)
    return [f"reward_model: held-out pair accuracy {last[1]:.3f}" + (f" ({per_kind})" if per_kind else "")]


def sycophancy_checks(stage: str, reward: str, records: list[dict]) -> list[str]:
    """The sycophancy rate at the stage's first and last evaluation, greedy first, then each temperature."""
    prefix = "evals/sycophancy/"
    settings = {k[len(prefix):].split("/")[0] for r in records for k in r if k.startswith(prefix)}
    lines = []
    for setting in sorted(settings, key=lambda s: (s != "greedy", s)):
        rate, prompts = (first_last(records, f"{prefix}{setting}/{k}") for k in ("sycophancy", "prompts"))
        if rate is None or prompts is None:
            continue
        samples = first_last(records, f"{prefix}{setting}/samples")
        decoding = ("greedy answers to" if setting == "greedy" else
                    f"{samples[1] if samples else 1:.0f} samples at T={setting[1:]} of each of")
        lines.append(f"{stage}: sycophancy rate {rate[0]:.3f} -> {rate[1]:.3f} under {reward} ({decoding} "
                     f"{prompts[1]:.0f} held-out sums where the user asserts a wrong answer)")
    return lines


def read_timings(run_dir: Path) -> dict[str, float]:
    path = run_dir / "timings.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def record_seconds(run_dir: Path, stage: str, seconds: float) -> dict[str, float]:
    """Keep each stage's wall time in <run>/timings.json (a resumed run keeps those of the stages it skips)."""
    path = run_dir / "timings.json"
    timings = read_timings(run_dir)
    timings[stage] = seconds
    tmp = path.with_name("timings.json.tmp")
    tmp.write_text(json.dumps(timings, indent=1))
    os.replace(tmp, path)
    return timings
