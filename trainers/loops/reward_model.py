"""Reward-model training: the policy's backbone with a scalar head, fitted to preference pairs with
the Bradley-Terry loss (Part 2, RLHF A), across the learner group.

    for each step:  sample (the step's pairs) -> update (every rank, its shard) -> log
                    [every eval_every] held-out pair accuracy, overall and per corruption kind
                    [every checkpoint_every] checkpoint (DeepSpeed state + HF weights + driver state)

Pairs are tokenised once, up front; batches are a pure function of (seed, step), so a resumed run
replays the same pairs."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.config import Corruption
from data.pairs import PreferencePair, pair_texts
from data.shards import pad_rows, train_batch_indices
from evals.metrics import MetricsLog, PhaseTimer, plot_curves, read_metrics
from trainers.config import LearnerConfig, RewardModelConfig
from trainers.learners.batches import PairBatch, whole_calls
from trainers.loops.checkpoints import Checkpoints, DriverState, publish_dir, resume_stage
from trainers.loops.pretrain import save_checkpoint

log = logging.getLogger(__name__)


@dataclass
class EncodedPairs:
    chosen: list[list[int]]      # prompt + chosen token ids, per pair
    rejected: list[list[int]]    # prompt + rejected token ids, per pair
    margin: np.ndarray           # [N] float32
    corruption: list[Corruption]

    def __len__(self) -> int:
        return len(self.chosen)


def encode_pairs(pairs: list[PreferencePair], tokenizer, max_len: int, use_margins: bool) -> EncodedPairs:
    """Token ids of each side; a pair whose longer side exceeds max_len is dropped, and the count logged."""
    kept = []
    for p in pairs:
        prompt, chosen, rejected = pair_texts(p, tokenizer)
        chosen, rejected = tokenizer(prompt + chosen)["input_ids"], tokenizer(prompt + rejected)["input_ids"]
        if max(len(chosen), len(rejected)) <= max_len:
            kept.append((chosen, rejected, p.margin if use_margins else 0.0, p.corruption))
    if len(kept) < len(pairs):
        log.warning("reward_model: dropped %d of %d pairs longer than max_len=%d tokens",
                    len(pairs) - len(kept), len(pairs), max_len)
    if not kept:
        raise ValueError(f"reward_model: no pair fits in max_len={max_len} tokens")
    chosen, rejected, margins, corruption = zip(*kept)
    return EncodedPairs(list(chosen), list(rejected), np.array(margins, np.float32), list(corruption))


def pair_batch(pairs: EncodedPairs, indices: np.ndarray, pad_id: int) -> PairBatch:
    chosen = [pairs.chosen[i] for i in indices]
    rejected = [pairs.rejected[i] for i in indices]
    width = max(len(r) for r in chosen + rejected)
    return PairBatch(pad_rows(chosen, pad_id, width), pad_rows(rejected, pad_id, width), pairs.margin[indices],
                     len(indices))


def held_out_accuracy(learners, pairs: EncodedPairs, pad_id: int, ranks: int, micro: int) -> dict[str, float]:
    """Share of held-out pairs with R+ > R-, overall and per corruption kind, and how many pairs each."""
    per_call = ranks * micro
    count = len(pairs)
    gaps = np.zeros(0, np.float32)                                           # R+ - R- per pair
    for chunk in whole_calls(count, per_call):
        batch = pair_batch(pairs, chunk, pad_id)
        both = np.concatenate([batch.chosen, batch.rejected])                # [2 per_call, T]
        scores = np.concatenate(learners.sharded(np.split(both, ranks), lambda a, t: a.reward_scores.remote(t),
                                                 "score held-out pairs"))
        gaps = np.concatenate([gaps, scores[:per_call] - scores[per_call:]])
    correct = gaps[:count] > 0
    kinds = np.array([c.value for c in pairs.corruption])
    out = {"val/pair_accuracy": float(correct.mean()), "val/pairs": count}
    for kind in sorted(set(kinds)):
        out[f"val/pair_accuracy/{kind}"] = float(correct[kinds == kind].mean())
        out[f"val/pairs/{kind}"] = int((kinds == kind).sum())
    return out


def run_reward_model(learners, cfg: RewardModelConfig, learner_cfg: LearnerConfig, train: EncodedPairs,
                     val: EncodedPairs, tokenizer, stage_dir: Path, seed: int, resume: bool) -> Path:
    """Trains to cfg.steps; returns the published HF reward-model dir."""
    ranks, micro, accum = learner_cfg.num_ranks, learner_cfg.micro_batch, learner_cfg.grad_accum
    pad_id = tokenizer.pad_token_id
    checkpoints = Checkpoints(stage_dir / "checkpoints")
    metrics = MetricsLog(stage_dir)
    state = resume_stage(learners, checkpoints, metrics, "reward_model", resume)
    if state is None:
        state = DriverState(step=0, tokens_seen=0, policy_version=0)
        metrics.write(0, held_out_accuracy(learners, val, pad_id, ranks, micro))

    rows = ranks * micro * accum
    timer = PhaseTimer()
    bar = tqdm(total=cfg.steps, initial=state.step, desc="reward_model", unit="step", dynamic_ncols=True)
    while state.step < cfg.steps:
        with timer("sample"):
            batch = pair_batch(train, train_batch_indices(len(train), rows, state.step, seed), pad_id)
        with timer("update"):
            parts = learners.sharded(batch.split(ranks), lambda a, b: a.train_pairs.remote(b), "train step")
        state = DriverState(state.step + 1, state.tokens_seen + batch.chosen.size + batch.rejected.size,
                            state.policy_version + 1)
        pairs = sum(p.pairs for p in parts)
        record = {"train/loss": sum(p.loss_sum for p in parts) / pairs,
                  "train/pair_accuracy": sum(p.correct for p in parts) / pairs,
                  "train/lr": parts[0].lr, "train/grad_norm": parts[0].grad_norm}
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            with timer("evaluate"):
                record.update(held_out_accuracy(learners, val, pad_id, ranks, micro))
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
            with timer("checkpoint"):
                save_checkpoint(learners, checkpoints, state, tokenizer)
        metrics.write(state.step, {**record, **timer.pop()})
        bar.update(1)
        bar.set_postfix(loss=f"{record['train/loss']:.3f}", acc=f"{record['train/pair_accuracy']:.2f}")
    bar.close()
    metrics.close()
    keys = ["train/loss", "train/pair_accuracy", "val/pair_accuracy"] + \
           [f"val/pair_accuracy/{c.value}" for c in Corruption]
    plot_curves(read_metrics(metrics.path), keys, stage_dir / "accuracy.png", "reward model")
    model_dir = stage_dir / "model"
    publish_dir(checkpoints.latest() / "hf", model_dir)
    return model_dir
