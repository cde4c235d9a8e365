"""runs/<name>/report.md: what each stage of a pipeline did, from the metrics it logged.

It opens with one row per stage (its headline held-out measure, start -> end, and its wall time) and the PNG
curves each stage plotted, then the checks (the run's criteria, each met or MISSED), the tool use of stages
evaluated in episodes with tools, and every held-out measure at each stage's start and end.
Nothing is recomputed here: the numbers are the stages' own."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from evals.config import COUNTS, Criterion
from evals.metrics import read_metrics

PPO_MEASURES = ["eval/reward_model_score", "eval/pass@1", "eval/response_tokens", "ppo/kl_per_response"]
# Held-out measures per stage (metrics.jsonl keys), in the order the table shows them.
MEASURES = {
    "pretrain": ["val/bits_per_byte", "val/loss"],
    "sft": ["eval/pass@1", "eval/pass@4", "eval/response_tokens"],
    "reward_model": ["val/pair_accuracy", "val/pair_accuracy/final", "val/pair_accuracy/step", "val/pair_accuracy/wrong",
                     "val/pair_accuracy/agree"],
    "grpo": ["eval/pass@1", "eval/pass@4", "eval/reward_model_score", "eval/response_tokens"],
    "rsft": ["eval/pass@1", "eval/pass@4", "eval/reward_model_score", "eval/response_tokens"],
    "sycophancy_ppo": PPO_MEASURES,
    "ppo": PPO_MEASURES,
    "dpo": ["eval/preference_accuracy", "eval/preference_accuracy/final", "eval/margin"],
}
PLOTS = ["loss.png", "accuracy.png", "curves.png"]
# Stages evaluated in episodes with tools (eval/tools/...): the same held-out tasks answered in one turn and with
# the tools, and how the calls went (trainers/loops/alignment.py:evaluate).
TOOL_COLUMNS = {"pass@1, one turn (no tool answers)": "eval/pass@1", "pass@1 with the tools": "eval/tools/pass@1",
                "well-formed calls": "eval/tools/well_formed_share", "tool calls per episode": "eval/tools/tool_calls",
                "tool errors per episode": "eval/tools/tool_errors", "model turns per episode": "eval/tools/turns"}


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
    """The stage's own measures, each verifier's mean score, then the eval suites it ran (eval.in_stages)."""
    rows = []
    counts = tuple(f"/{k}" for k in COUNTS)
    suites = sorted({k for r in records for k in r if k.startswith("evals/") and not k.endswith(counts)})
    verifiers = sorted({k for r in records for k in r if k.startswith(("eval/verifier/", "eval/tools/verifier/"))})
    for key in MEASURES.get(stage, []) + verifiers + suites:
        pair = first_last(records, key)
        if pair is not None:
            start, end = pair
            rows.append(f"| {stage} | {key} | {start:.4g} | {end:.4g} | {end - start:+.4g} |")
    return rows


def tool_table(found: dict[str, list[dict]]) -> list[str]:
    """One row per stage that evaluated with tools: each TOOL_COLUMNS measure at its start -> end."""
    stages = [s for s in found if first_last(found[s], TOOL_COLUMNS["pass@1 with the tools"]) is not None]
    if not stages:
        return []
    lines = ["", "## Tool use, held out", "", "| stage | " + " | ".join(TOOL_COLUMNS) + " |",
             "|---" * (len(TOOL_COLUMNS) + 1) + "|"]
    for stage in stages:
        pairs = [first_last(found[stage], key) for key in TOOL_COLUMNS.values()]
        cells = ["" if p is None else f"{p[0]:.3g} -> {p[1]:.3g}" for p in pairs]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return lines


@dataclass(frozen=True)
class CheckResult:
    met: bool
    measured: str
    """What was measured (or that nothing was)."""
    criterion: str
    """The bound it was held to."""

    def line(self) -> str:
        return f"{'met' if self.met else 'MISSED'}: {self.measured}; criterion: {self.criterion}"


def stage_metrics(run_dir: Path, stages: list[str]) -> dict[str, list[dict]]:
    """Each stage's metrics.jsonl records, in pipeline order ([] for a stage that logged none)."""
    return {stage: read_metrics(run_dir / stage / "metrics.jsonl") if (run_dir / stage / "metrics.jsonl").is_file()
            else [] for stage in stages}


def write_report(run_dir: Path, found: dict[str, list[dict]], seconds: dict[str, float],
                 checks: list[CheckResult]) -> Path:
    """found: stage_metrics (pipeline order); seconds: wall time per stage this invocation ran; checks: the run's
    criteria, each met or missed (run_checks)."""
    stages = list(found)
    lines = [f"# Report: {run_dir.name}", "", "| stage | held-out, start -> end | seconds |", "|---|---|---|"]
    lines += [f"| {s} | {headline(s, found[s])} | {seconds[s]:.1f} |" for s in stages if s in seconds]
    lines += [f"| total | | {sum(seconds[s] for s in stages if s in seconds):.1f} |", "", "## Curves", ""]
    for stage in stages:
        lines += [f"![{stage} {png}]({stage}/{png})" for png in PLOTS if (run_dir / stage / png).is_file()]
    if checks:
        lines += ["", "## Checks", ""] + [f"- {c.line()}" for c in checks] + ["", checks_line(checks)]
    lines += tool_table(found)
    lines += ["", "## Held-out measures, at each stage's start and end", "",
              "| stage | measure | start | end | change |", "|---|---|---|---|---|"]
    for stage in stages:
        lines += stage_rows(stage, found[stage])
    out = run_dir / "report.md"
    tmp = out.with_name("report.md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out)
    return out


def run_checks(records: dict[str, list[dict]], criteria: list[Criterion],
               kl_bounds: dict[str, float]) -> list[CheckResult]:
    """Each criterion of a stage in `records` (stage_metrics; a stage that logged nothing misses its criteria),
    then each PPO stage's bound on the KL per response (kl_bounds)."""
    results = [check_criterion(c, records[c.stage]) for c in criteria if c.stage in records]
    for stage, bound in kl_bounds.items():
        if stage in records:
            results.append(check_kl(stage, records[stage], bound))
    return results


def check_criterion(criterion: Criterion, records: list[dict]) -> CheckResult:
    wanted = " and ".join(f"{of} {op} {value:{'+' if of == 'change' else ''}.4g}" for of, op, value in criterion.bounds())
    pair = first_last(records, criterion.measure)
    if pair is None:
        return CheckResult(False, f"{criterion.stage} {criterion.measure} was not measured", wanted)
    start, end = pair
    value = {"change": end - start, "end": end}
    met = all(value[of] >= bound if op == ">=" else value[of] <= bound for of, op, bound in criterion.bounds())
    return CheckResult(met, f"{criterion.stage} {criterion.measure} {start:.4g} -> {end:.4g} ({end - start:+.4g})", wanted)


def check_kl(stage: str, records: list[dict], bound: float) -> CheckResult:
    kl = [r["ppo/kl_per_response"] for r in records if "ppo/kl_per_response" in r]
    wanted = f"at most {bound:g} nats"
    if not kl:
        return CheckResult(False, f"{stage} ppo/kl_per_response was not measured", wanted)
    return CheckResult(max(kl) <= bound, f"{stage} largest KL per response {max(kl):.3f} nats", wanted)


def checks_line(checks: list[CheckResult]) -> str:
    """The summary a run ends with: how many checks were met and which were missed."""
    missed = [c.measured for c in checks if not c.met]
    return (f"checks: {len(checks) - len(missed)} met, {len(missed)} MISSED"
            + (f" ({'; '.join(missed)})" if missed else ""))


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
