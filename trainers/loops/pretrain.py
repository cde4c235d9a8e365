"""Pretraining: next-token NLL, eq. (9), on packed shards, across the learner group.

    [LoRA + EWC, once] Fisher information of the starting model on the old corpus (every rank, its shard)
    for each step:  sample (the step's windows) -> update (every rank, its shard) -> log
                    [every eval_every] held-out loss and bits per byte
                    [every checkpoint_every] checkpoint (DeepSpeed state + HF weights + driver state)

Batches are a pure function of (seed, step), so resuming at a checkpoint replays the same data."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.shards import PackedWindows, read_token_bytes, train_batch_indices
from data.tokenizer import load_tokenizer
from evals.metrics import MetricsLog, PhaseTimer, plot_curves, read_metrics
from trainers.config import LearnerConfig, PretrainConfig, Regulariser
from trainers.learners.batches import TokenBatch
from trainers.loops.checkpoints import Checkpoints, DriverState, publish_dir, resume_stage


@dataclass
class HeldOut:
    loss: float            # nats per counted token
    bits_per_byte: float   # sum of -log2 pi over the bytes those tokens spell
    tokens: int


def evaluate(learners, val: PackedWindows, token_bytes: np.ndarray, ranks: int, micro: int, batches: int) -> HeldOut:
    """Held-out NLL over `batches` batches of windows spread evenly over the split. Targets that
    spell no bytes (special tokens) are left out of both sums, so bits per byte is exact."""
    per_batch = ranks * micro
    count = min(len(val), batches * per_batch) // per_batch * per_batch
    if count == 0:
        raise ValueError(f"the held-out split has {len(val)} windows, fewer than one batch of {per_batch}")
    indices = np.linspace(0, len(val) - 1, count).astype(np.int64)
    nll = nbytes = targets = 0
    for chunk in np.split(indices, count // per_batch):
        tokens = val.gather(chunk)                                            # [ranks*micro, T+1]
        byte_counts = token_bytes[tokens[:, 1:]]                              # [ranks*micro, T]
        batch = TokenBatch(tokens, (byte_counts > 0).astype(np.float32), int((byte_counts > 0).sum()))
        for part in learners.sharded(batch.split(ranks), lambda a, b: a.evaluate.remote(b), "evaluate"):
            nll += part.nll_sum
            targets += part.targets
        nbytes += int(byte_counts.sum())
    return HeldOut(nll / targets, nll / (math.log(2) * nbytes), targets)


def run_pretrain(learners, cfg: PretrainConfig, learner_cfg: LearnerConfig, data_dir: Path, tokenizer_dir: Path,
                 stage_dir: Path, seed: int, resume: bool) -> Path | None:
    """Trains to cfg.steps; returns the published HF model dir, or None if stopped early (stop_after_steps)."""
    ranks, micro, accum = learner_cfg.num_ranks, learner_cfg.micro_batch, learner_cfg.grad_accum
    train = PackedWindows(data_dir, "train", cfg.seq_len)
    val = PackedWindows(data_dir, "val", cfg.seq_len)
    token_bytes = read_token_bytes(data_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    retained = PackedWindows(Path(cfg.retained), "val", cfg.seq_len) if cfg.retained else None

    def held_out() -> dict[str, float]:
        held = evaluate(learners, val, token_bytes, ranks, micro, cfg.eval_batches)
        out = {"val/loss": held.loss, "val/bits_per_byte": held.bits_per_byte}
        if retained is not None:
            old = evaluate(learners, retained, read_token_bytes(Path(cfg.retained)), ranks, micro, cfg.eval_batches)
            out.update({"retained/loss": old.loss, "retained/bits_per_byte": old.bits_per_byte})
        return out

    checkpoints = Checkpoints(stage_dir / "checkpoints")
    log = MetricsLog(stage_dir)
    state = resume_stage(learners, checkpoints, log, "pretrain", resume)
    lora = learner_cfg.lora
    if lora is not None and lora.regulariser == Regulariser.ewc and lora.omega > 0:
        # from the adapter-free starting model, so a resumed stage gets the same Fisher
        fisher_rows = PackedWindows(Path(cfg.retained), "train", cfg.seq_len)
        rows_total = ranks * micro * lora.fisher_batches
        batch = TokenBatch(fisher_rows.gather(train_batch_indices(len(fisher_rows), rows_total, 0, seed)), None,
                           rows_total * cfg.seq_len)
        learners.sharded(batch.split(ranks), lambda a, b: a.estimate_fisher.remote(b), "estimate Fisher (EWC)")
    if state is None:
        state = DriverState(step=0, tokens_seen=0, policy_version=0)
        log.write(0, held_out())

    rows = ranks * micro * accum
    stop_at = cfg.steps if cfg.stop_after_steps is None else min(cfg.steps, state.step + cfg.stop_after_steps)
    timer = PhaseTimer()
    bar = tqdm(total=cfg.steps, initial=state.step, desc="pretrain", unit="step", dynamic_ncols=True)
    while state.step < stop_at:
        start = time.perf_counter()
        with timer("sample"):
            tokens = train.gather(train_batch_indices(len(train), rows, state.step, seed))   # [rows, T+1]
            batch = TokenBatch(tokens, None, rows * cfg.seq_len)
        with timer("update"):
            parts = learners.sharded(batch.split(ranks), lambda a, b: a.train_step.remote(b), "train step")
        state = DriverState(state.step + 1, state.tokens_seen + rows * cfg.seq_len, state.policy_version + 1)
        loss = sum(p.nll_sum for p in parts) / sum(p.targets for p in parts)
        record = {"train/loss": loss, "train/lr": parts[0].lr, "train/grad_norm": parts[0].grad_norm,
                  "train/tokens_per_s": rows * cfg.seq_len / (time.perf_counter() - start),
                  "train/tokens_seen": state.tokens_seen}
        last = state.step == stop_at
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            with timer("evaluate"):
                record.update(held_out())
        if state.step % cfg.checkpoint_every == 0 or last:
            with timer("checkpoint"):
                save_checkpoint(learners, checkpoints, state, tokenizer)
        log.write(state.step, {**record, **timer.pop()})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", **({"bpb": f"{record['val/bits_per_byte']:.3f}"} if "val/loss" in record else {}))
    bar.close()
    log.close()
    plot_curves(read_metrics(log.path), ["train/loss", "val/loss", "val/bits_per_byte", "train/lr"]
                + (["retained/loss"] if retained is not None else []),
                stage_dir / "loss.png", "pretrain")
    if state.step < cfg.steps:
        return None
    model_dir = stage_dir / "model"
    publish_dir(checkpoints.latest() / "hf", model_dir)
    return model_dir


def save_checkpoint(learners, checkpoints: Checkpoints, state: DriverState, tokenizer, critic=None,
                    driver_files: dict[str, str] | None = None) -> Path:
    """Collective on the learners (and a ppo critic, saved under critic/): DeepSpeed states, RNG, HF weights,
    the driver's own files (name -> text), then the driver state, committed only once all of it is written."""
    staging = checkpoints.staging(state.step)
    for name, text in (driver_files or {}).items():
        (staging / name).write_text(text)
    hf_dir = staging / "hf"
    learners.every_rank(lambda a: a.save.remote(str(staging), str(hf_dir)), "save checkpoint")
    tokenizer.save_pretrained(str(hf_dir))  # the HF folder loads on its own in transformers and vLLM
    if critic is not None:
        folder = staging / "critic"
        critic.every_rank(lambda a: a.save.remote(str(folder), str(folder / "hf")), "save critic checkpoint")
    return checkpoints.commit(staging, state)
