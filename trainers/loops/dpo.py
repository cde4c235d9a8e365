"""DPO: direct preference optimisation on offline pairs (Rafailov et al. 2023; Part 2 of the reference),
the closed-form solution of max E[R] - beta KL(pi || pi_ref) under the Bradley-Terry model, trained
without a reward model or sampling.

    once:           pairs -> token rows; log pi_ref of each side from the starting policy (cached on disk)
    for each step:  sample (the step's pairs) -> update (DPO loss, every rank, its shard) -> log
                    [every eval_every] held-out preference accuracy: sign of the implicit reward margin
                    [every checkpoint_every] checkpoint"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.config import Corruption
from data.pairs import PreferencePair, pair_texts
from data.shards import train_batch_indices
from evals.metrics import MetricsLog, PhaseTimer
from trainers.align_config import DpoConfig
from trainers.learners.batches import whole_calls
from trainers.learners.rl_batches import DpoBatch, token_rows
from trainers.loops.alignment import finish_stage, policy_logprobs
from trainers.loops.checkpoints import Checkpoints, DriverState, resume_stage
from trainers.loops.pretrain import save_checkpoint

log = logging.getLogger(__name__)


@dataclass
class DpoPairs:
    prompts: list[list[int]]      # [P] per pair
    chosen: list[list[int]]       # [R+] per pair
    rejected: list[list[int]]     # [R-] per pair
    corruption: list[Corruption]

    def __len__(self) -> int:
        return len(self.prompts)


def encode_dpo_pairs(pairs: list[PreferencePair], tokenizer, max_len: int) -> DpoPairs:
    """Prompt and each answer as token ids; pairs whose longer side exceeds max_len are dropped (and logged)."""
    kept = []
    for p in pairs:
        texts = pair_texts(p, tokenizer)
        prompt = tokenizer(texts[0])["input_ids"]
        chosen, rejected = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[1:])
        if len(prompt) + max(len(chosen), len(rejected)) <= max_len and chosen and rejected:
            kept.append((prompt, chosen, rejected, p.corruption))
    if len(kept) < len(pairs):
        log.warning("dpo: dropped %d of %d pairs longer than max_len=%d tokens", len(pairs) - len(kept), len(pairs), max_len)
    if not kept:
        raise ValueError(f"dpo: no pair fits in max_len={max_len} tokens")
    return DpoPairs(*(list(x) for x in zip(*kept)))


def pair_rows(pairs: DpoPairs, indices: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(chosen tokens, chosen mask, rejected tokens, rejected mask) of these pairs, padded to one width."""
    prompts = [pairs.prompts[i] for i in indices]
    chosen, rejected = [pairs.chosen[i] for i in indices], [pairs.rejected[i] for i in indices]
    width = max(len(p) + max(len(c), len(r)) for p, c, r in zip(prompts, chosen, rejected))
    return (*token_rows(prompts, chosen, pad_id, width=width), *token_rows(prompts, rejected, pad_id, width=width))


def summed_logprobs(policy, pairs: DpoPairs, pad_id: int, ranks: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Collective: sum of log pi over each side's answer tokens, [N] chosen and [N] rejected."""
    sums = []
    for part in whole_calls(len(pairs), chunk):
        c, cm, r, rm = pair_rows(pairs, part, pad_id)
        both = policy_logprobs(policy, np.concatenate([c, r]), ranks) * np.concatenate([cm, rm])
        sums.append(both.sum(1).reshape(2, -1))
    out = np.concatenate(sums, axis=1)[:, :len(pairs)]
    return out[0], out[1]


def reference_logprobs(policy, train: DpoPairs, val: DpoPairs, pad_id: int, ranks: int, chunk: int,
                       cache: Path) -> dict[str, np.ndarray]:
    """log pi_ref of both sides of every pair, computed once with the starting policy and kept in `cache`."""
    if cache.is_file():
        return dict(np.load(cache))
    ref = {}
    for name, pairs in (("train", train), ("val", val)):
        ref[f"{name}_chosen"], ref[f"{name}_rejected"] = summed_logprobs(policy, pairs, pad_id, ranks, chunk)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez(tmp, **ref)
    os.replace(tmp, cache)
    return ref


def held_out_accuracy(policy, val: DpoPairs, ref: dict[str, np.ndarray], beta: float, pad_id: int, ranks: int,
                      chunk: int) -> dict[str, float]:
    """Share of held-out pairs whose implicit reward margin beta*((log pi - log pi_ref)(y+) - (...)(y-)) is > 0."""
    chosen, rejected = summed_logprobs(policy, val, pad_id, ranks, chunk)
    margin = beta * ((chosen - ref["val_chosen"]) - (rejected - ref["val_rejected"]))
    kinds = np.array([c.value for c in val.corruption])
    out = {"eval/preference_accuracy": float((margin > 0).mean()), "eval/margin": float(margin.mean())}
    for kind in sorted(set(kinds)):
        out[f"eval/preference_accuracy/{kind}"] = float((margin[kinds == kind] > 0).mean())
    return out


def run_dpo(policy, cfg: DpoConfig, train: DpoPairs, val: DpoPairs, rows: int, ranks: int, tokenizer,
            stage_dir: Path, seed: int, resume: bool) -> Path:
    pad_id = tokenizer.pad_token_id
    checkpoints, metrics = Checkpoints(stage_dir / "checkpoints"), MetricsLog(stage_dir)
    # before any checkpoint is loaded, so the learners still hold pi_ref if the cache has to be (re)built
    ref = reference_logprobs(policy, train, val, pad_id, ranks, rows, stage_dir / "reference_logprobs.npz")
    state = resume_stage(policy, checkpoints, metrics, "dpo", resume)
    if state is None:
        state = DriverState(step=0, tokens_seen=0, policy_version=0)
        metrics.write(0, held_out_accuracy(policy, val, ref, cfg.beta, pad_id, ranks, rows))
    timer = PhaseTimer()
    bar = tqdm(total=cfg.steps, initial=state.step, desc="dpo", unit="step", dynamic_ncols=True)
    while state.step < cfg.steps:
        with timer("sample"):
            indices = train_batch_indices(len(train), rows, state.step, seed)
            batch = DpoBatch(*pair_rows(train, indices, pad_id), ref["train_chosen"][indices],
                             ref["train_rejected"][indices], rows)
        with timer("update"):
            parts = policy.sharded(batch.split(ranks), lambda a, b: a.train_dpo.remote(b, cfg.beta), "dpo step")
        state = DriverState(state.step + 1, state.tokens_seen + int(batch.chosen_mask.sum() + batch.rejected_mask.sum()),
                            state.policy_version + 1)
        record = {"train/loss": sum(p.loss_sum for p in parts) / rows,
                  "train/preference_accuracy": sum(p.correct for p in parts) / rows,
                  "train/margin": sum(p.margin_sum for p in parts) / rows, "train/lr": parts[0].lr}
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            with timer("evaluate"):
                record.update(held_out_accuracy(policy, val, ref, cfg.beta, pad_id, ranks, rows))
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
            with timer("checkpoint"):
                save_checkpoint(policy, checkpoints, state, tokenizer)
        metrics.write(state.step, {**record, **timer.pop()})
        bar.update(1)
        bar.set_postfix(loss=f"{record['train/loss']:.3f}", acc=f"{record['train/preference_accuracy']:.2f}")
    bar.close()
    return finish_stage(checkpoints, metrics, stage_dir, "dpo", ["train/loss", "train/margin", "eval/preference_accuracy"])
