"""Data-parallel invariance and exact resume of the DeepSpeed learner group on Ray."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from cluster.groups import start_learners
from data.shards import PackedWindows
from modeling.config import Precision
from trainers.config import LearnerConfig, Optimizer, PretrainConfig
from trainers.learners.batches import TokenBatch
from trainers.loops.pretrain import run_pretrain

pytestmark = pytest.mark.integration

BASE = LearnerConfig(precision=Precision.fp32, cpus_per_rank=0.5, threads_per_rank=1, warmup_steps=0,
                     timeout_s=300, lr=0.5, grad_clip=0.0)


def one_step(cfg: LearnerConfig, model_dir: str, tokens: np.ndarray):
    group = start_learners(cfg, model_dir, total_steps=10)
    try:
        batch = TokenBatch(tokens, None, tokens.shape[0] * (tokens.shape[1] - 1))
        parts = group.sharded(batch.split(cfg.num_ranks), lambda a, b: a.train_step.remote(b), "train step")
        weights = group.every_rank(lambda a: a.full_state_dict.remote(), "gather weights")[0]
    finally:
        group.shutdown()
    return sum(p.nll_sum for p in parts) / sum(p.targets for p in parts), parts[0].lr, weights


def sgd_step_by_hand(model_dir: str, tokens: np.ndarray, lr: float):
    """Brute force: the plain transformers model, the token-mean NLL of all rows as one batch (eq. 9), and
    theta - lr * grad."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = torch.tensor(tokens)
    loss = torch.nn.functional.cross_entropy(model(rows[:, :-1]).logits.flatten(0, 1), rows[:, 1:].flatten())
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    return loss.item(), model.state_dict()


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_two_ranks_equal_one_step_by_hand(ray_cluster, tiny_corpus, stage):
    """One SGD step on 2 ranks x micro-batch 4 equals one plain-PyTorch step on all 8 rows (loss and weights)."""
    tokens = PackedWindows(tiny_corpus / "data", "train", 32).gather(range(8))
    cfg = dataclasses.replace(BASE, zero_stage=stage, optimizer=Optimizer.sgd, num_ranks=2, micro_batch=4)
    loss2, lr, w2 = one_step(cfg, str(tiny_corpus / "init"), tokens)
    assert lr == BASE.lr                                  # no warm-up: the first step takes the full LR
    loss1, w1 = sgd_step_by_hand(str(tiny_corpus / "init"), tokens, lr)
    init = load_file(str(tiny_corpus / "init" / "model.safetensors"))
    assert set(init) <= set(w1) and set(init) <= set(w2)
    moved = max((w1[k] - init[k]).abs().max().item() for k in init)
    gap = max((w1[k] - w2[k]).abs().max().item() for k in init)
    print(f"ZeRO {stage}: |loss 2x4 - loss by hand| = {abs(loss2 - loss1):.1e}, max |weight gap| = {gap:.1e}, "
          f"max step = {moved:.1e}")
    assert abs(loss2 - loss1) < 1e-6
    assert moved > 1e-3  # the step did change the weights
    assert gap < 1e-6     # the steps move weights by up to 7e-2; ZeRO 1-3 land within 2e-8 of the hand step


@pytest.mark.parametrize("stage", [3])   # ZeRO-2: the e2e GRPO kill-and-resume test resumes its learners
def test_resume_equals_uninterrupted(ray_cluster, tiny_corpus, tmp_path, stage):
    """N steps straight == N/2 steps, the learners killed, and N/2 more resumed from the checkpoint."""
    learner = dataclasses.replace(BASE, zero_stage=stage, num_ranks=2, micro_batch=2, grad_accum=2, lr=3e-3,
                                  warmup_steps=2, grad_clip=1.0)
    pre = PretrainConfig(steps=6, seq_len=32, eval_every=3, eval_batches=1, checkpoint_every=6)

    def run(out, cfg, resume):
        group = start_learners(learner, str(tiny_corpus / "init"), pre.steps)
        try:
            return run_pretrain(group, cfg, learner, tiny_corpus / "data", tiny_corpus / "tokenizer", out, 0, resume)
        finally:
            group.shutdown()  # kills the actors: nothing survives but the checkpoint

    straight = run(tmp_path / "a", pre, False)
    assert run(tmp_path / "b", dataclasses.replace(pre, stop_after_steps=3), False) is None
    resumed = run(tmp_path / "b", pre, True)
    wa, wb = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    gap = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    logs = [[json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in "ab"]
    print(f"ZeRO {stage} resume: max |weight gap| = {gap:.1e}, "
          f"|final loss gap| = {abs(logs[0][-1]['train/loss'] - logs[1][-1]['train/loss']):.1e}")
    assert gap < 1e-6
    assert [r["step"] for r in logs[1]] == list(range(7))
    assert abs(logs[0][-1]["train/loss"] - logs[1][-1]["train/loss"]) < 1e-6
    assert abs(logs[0][-1]["val/loss"] - logs[1][-1]["val/loss"]) < 1e-6
    assert logs[0][-1]["train/lr"] == logs[1][-1]["train/lr"]
