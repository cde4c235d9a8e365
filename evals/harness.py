"""The evaluation harness: every configured suite x prompting mode x retrieval x decoding setting, generated
by the rollout workers and judged by the verifier workers, as rows of measures.

    rows = run_suites(pool, verifiers, tokenizer, cfg, work_dir)     # pool.generate, verifiers.verify
    write_results(rows, out_dir)                                     # eval.json, eval.md, eval.png

The measures are pure functions of verdict arrays (below), so tests check them against hand values."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from tqdm import tqdm

from evals.config import COUNTS, EvalConfig, PromptMode, Suite
from evals.metrics import png
from evals.suites import EvalItem, fact_items, facts_retriever, math_items, suite_rows, sycophancy_items
from rollout.types import Sampling
from verifiers.config import VerifierSpec

VERIFIERS = [VerifierSpec("math"), VerifierSpec("facts")]   # the specs the harness's verifier pool runs, in order


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def math_measures(passed: np.ndarray, ks: list[int]) -> dict[str, float]:
    """passed [Q, n] bool -> pass@k for each k <= n (greedy decoding: n = 1, pass@1 = accuracy)."""
    n = passed.shape[1]
    return {f"pass@{k}": float(np.mean([pass_at_k(n, int(c), k) for c in passed.sum(1)])) for k in ks if k <= n}


def fact_measures(scores: np.ndarray, passed: np.ndarray, claimed: np.ndarray, stated: np.ndarray) -> dict[str, float]:
    """[Q, n] verifier scores V(c(y)), passed, whether any claim was made, and [Q] stated-in-training flags.
    Hall = E_x E_y [1 - V(c(y))] (Part 4), overall and over stated / unstated facts."""
    hall = 1.0 - scores
    out = {"hallucination": float(hall.mean()), "accuracy": float(passed.mean()), "no_claim": float(1 - claimed.mean())}
    for name, rows in (("stated", stated), ("unstated", ~stated)):
        if rows.any():
            out[f"hallucination_{name}"] = float(hall[rows].mean())
    return out


def sycophancy_measures(agreed: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """[Q, n]: the response gave the user's wrong answer / the true one."""
    return {"sycophancy": float(agreed.mean()), "accuracy": float(correct.mean())}


@dataclass
class EvalRow:
    suite: str
    mode: str
    rag: bool
    temperature: float           # 0: greedy
    prompts: int
    samples: int                 # per prompt
    measures: dict[str, float]


def settings(cfg: EvalConfig, work_dir: Path) -> Iterator[tuple[Suite, PromptMode, bool, list[EvalItem]]]:
    """(suite, mode, retrieval on, items) for every configured combination."""
    retriever = facts_retriever(cfg, work_dir) if Suite.facts in cfg.suites else None
    for suite in cfg.suites:
        if suite == Suite.facts:
            yield suite, PromptMode.zero_shot, False, fact_items(cfg, None)
            if retriever is not None:
                yield suite, PromptMode.zero_shot, True, fact_items(cfg, retriever)
        elif suite == Suite.sycophancy:
            yield suite, PromptMode.zero_shot, False, sycophancy_items(suite_rows(suite, cfg), cfg)
        else:
            rows = suite_rows(suite, cfg)
            for mode in cfg.modes:
                yield suite, mode, False, math_items(rows, mode, cfg)


def verdict_array(verdicts: list[list], index: int, field: str, shape: tuple[int, int]) -> np.ndarray:
    return np.array([getattr(v[index], field) for v in verdicts]).reshape(shape)


def measure(suite: Suite, items: list[EvalItem], texts: list[str], verifiers, n: int, ks: list[int]) -> dict[str, float]:
    """texts: n responses per item, item-major; verifiers: a VerifierPool whose specs include the suite's."""
    labels = [v.label for v in verifiers.specs]
    if items[0].verifier not in labels:
        raise ValueError(f"the {suite.value} suite needs the '{items[0].verifier}' verifier; this pool runs "
                         f"{', '.join(labels)} (add it to rewards.verifiers, with weight 0 to keep it out of the reward)")
    label = labels.index(items[0].verifier)
    shape = (len(items), n)
    verdicts = verifiers.verify([it.sample for it in items for _ in range(n)], texts)
    if suite == Suite.facts:
        stated = np.array([it.sample.meta["stated"] == "yes" for it in items])
        claimed = np.array([v[label].reason != "no claim" for v in verdicts]).reshape(shape)
        return fact_measures(verdict_array(verdicts, label, "score", shape), verdict_array(verdicts, label, "passed", shape),
                             claimed, stated)
    correct = verdict_array(verdicts, label, "passed", shape)
    if suite == Suite.sycophancy:
        agreed = verifiers.verify([it.asserted for it in items for _ in range(n)], texts)
        return sycophancy_measures(verdict_array(agreed, label, "passed", shape), correct)
    return math_measures(correct, ks)


def render(tokenizer, turns: list[dict[str, str]]) -> list[int]:
    text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    return tokenizer(text)["input_ids"]       # as data.tasks.load_tasks renders a prompt


def run_suites(pool, verifiers, tokenizer, cfg: EvalConfig, work_dir: Path,
               samples_out: Optional[Path] = None) -> list[EvalRow]:
    """pool: generate(prompt ids, Sampling) -> rollouts per prompt; verifiers: a VerifierPool (verify, specs).
    samples_out: a jsonl of every prompt, response and the chunk ids it was given."""
    temperatures = ([0.0] if cfg.greedy else []) + list(cfg.temperatures)
    combos = list(settings(cfg, work_dir))
    bar = tqdm(total=len(combos) * len(temperatures), desc="eval", unit="setting", dynamic_ncols=True)
    rows = []
    log = samples_out.open("w", encoding="utf-8") if samples_out else None
    try:
        for suite, mode, rag, items in combos:
            prompts = [render(tokenizer, it.turns) for it in items]
            for temperature in temperatures:
                n = 1 if temperature == 0 else cfg.samples
                sampling = Sampling(temperature=temperature, n=n, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
                groups = pool.generate(prompts, sampling)
                texts = [tokenizer.decode(r.response_ids, skip_special_tokens=True) for g in groups for r in g]
                rows.append(EvalRow(suite.value, mode.value, rag, temperature, len(items), n,
                                    measure(suite, items, texts, verifiers, n, cfg.k)))
                if log:
                    for i, item in enumerate(items):
                        log.write(json.dumps({"suite": suite.value, "mode": mode.value, "rag": rag, "temperature": temperature,
                                              "id": item.sample.id, "prompt": item.turns[-1]["content"],
                                              "answer": item.sample.answer,
                                              "asserted": item.asserted.answer if item.asserted else None,
                                              "responses": texts[i * n:(i + 1) * n], "chunks": list(item.provenance)}) + "\n")
                bar.update(1)
    finally:
        bar.close()
        if log:
            log.close()
    return rows


def setting_name(row: EvalRow) -> str:
    """e.g. 'facts/rag/T0.7', 'arith/cot_few_shot/greedy'."""
    parts = [row.suite] + ([row.mode] if row.mode != PromptMode.zero_shot.value else []) + (["rag"] if row.rag else [])
    return "/".join(parts + ["greedy" if row.temperature == 0 else f"T{row.temperature:g}"])


@dataclass
class StageEvals:
    """The suites a training stage runs on its own rollout and verifier workers at each held-out evaluation."""
    cfg: EvalConfig
    tokenizer: object
    work_dir: Path

    def measures(self, pool, verifiers) -> dict[str, float]:
        """{'evals/<setting>/<measure>': value} for every row, and the number of prompts it asked and of samples
        per prompt ('evals/<setting>/prompts', 'evals/<setting>/samples')."""
        rows = run_suites(pool, verifiers, self.tokenizer, self.cfg, self.work_dir)
        out = {f"evals/{setting_name(r)}/{k}": v for r in rows for k, v in r.measures.items()}
        return out | {f"evals/{setting_name(r)}/{k}": float(getattr(r, k)) for r in rows for k in COUNTS}


def table(rows: list[EvalRow]) -> str:
    """A markdown table: one line per setting, one column per measure any row has."""
    keys = list(dict.fromkeys(k for r in rows for k in r.measures))
    head = ["suite", "mode", "rag", "decoding", "prompts x samples"] + keys
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        decoding = "greedy" if r.temperature == 0 else f"T={r.temperature:g}"
        cells = [r.suite, r.mode, "yes" if r.rag else "no", decoding, f"{r.prompts} x {r.samples}"]
        cells += [f"{r.measures[k]:.3f}" if k in r.measures else "" for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(rows: list[EvalRow], out_dir: Path, title: str) -> None:
    """eval.json (the rows), eval.md (the table) and eval.png (one panel per suite's headline measure)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "eval.json.tmp"
    tmp.write_text(json.dumps({"title": title, "rows": [asdict(r) for r in rows]}, indent=1))
    tmp.replace(out_dir / "eval.json")
    (out_dir / "eval.md").write_text(f"# {title}\n\n{table(rows)}\n")
    plot(rows, out_dir / "eval.png", title)


HEADLINE = {"arith": "pass@1", "gsm8k": "pass@1", "facts": "hallucination", "sycophancy": "sycophancy"}


def plot(rows: list[EvalRow], path: Path, title: str) -> None:
    """Per suite, its headline measure against temperature (0 = greedy), one line per mode / retrieval."""
    suites = list(dict.fromkeys(r.suite for r in rows))
    with png(path, (4.5 * len(suites), 3.5), len(suites)) as axes:
        for ax, suite in zip(axes, suites):
            key = HEADLINE[suite]
            for (mode, rag) in dict.fromkeys((r.mode, r.rag) for r in rows if r.suite == suite):
                line = [r for r in rows if r.suite == suite and r.mode == mode and r.rag == rag]
                ax.plot([r.temperature for r in line], [r.measures[key] for r in line], marker="o",
                        label=mode + (" + RAG" if rag else ""))
            ax.set(title=suite, xlabel="temperature (0 = greedy)", ylabel=key, ylim=(0, 1))
            ax.legend(fontsize=7)
        axes[0].figure.suptitle(title)
