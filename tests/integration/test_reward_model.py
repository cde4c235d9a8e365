"""The reward model on the learner group: Bradley-Terry training fits pairs, and the saved HF
checkpoint, served by a RewardModelWorker actor, scores exactly as the learners did."""
import numpy as np
import pytest

from cluster.groups import start_learners
from cluster.scorers import RewardModelActor
from data.config import Corruption
from data.tokenizer import load_tokenizer
from modeling.config import Precision
from modeling.model import ModelHead
from rewards.config import RewardModelSpec
from trainers.config import LearnerConfig
from trainers.loops.reward_model import EncodedPairs, pair_batch

pytestmark = pytest.mark.integration
LEARNER = LearnerConfig(num_ranks=2, zero_stage=2, precision=Precision.fp32, cpus_per_rank=0.5, threads_per_rank=1,
                        micro_batch=4, warmup_steps=0, lr=3e-3, grad_clip=0.0, timeout_s=300)


def encoded(tiny_corpus, count=8) -> EncodedPairs:
    tok = load_tokenizer(tiny_corpus / "tokenizer")
    prompt = "<|user|>State the final answer to the following arithmetic problem: {a} + {b} =<|end|><|assistant|>"
    chosen, rejected = [], []
    for i in range(count):
        a, b = 10 + i, 3 + i
        text = prompt.format(a=a, b=b)
        chosen.append(tok(f"{text}{a} + {b} = {a + b}\n#### {a + b}<|eos|>")["input_ids"])
        rejected.append(tok(f"{text}{a} + {b} = {a + b}\n#### {a + b + 1}<|eos|>")["input_ids"])
    return EncodedPairs(chosen, rejected, np.zeros(count, np.float32), [Corruption.final] * count)


def test_bradley_terry_fits_pairs_and_the_saved_model_scores_the_same(ray_cluster, tiny_corpus, tmp_path):
    pairs = encoded(tiny_corpus)
    pad = load_tokenizer(tiny_corpus / "tokenizer").pad_token_id
    learners = start_learners(LEARNER, str(tiny_corpus / "init"), total_steps=40, head=ModelHead.scalar)
    try:
        batch = pair_batch(pairs, np.arange(8), pad)
        first = None
        for _ in range(40):
            parts = learners.sharded(batch.split(2), lambda a, b: a.train_pairs.remote(b), "train")
            loss = sum(p.loss_sum for p in parts) / 8
            first = loss if first is None else first
        correct = sum(p.correct for p in parts)
        print(f"Bradley-Terry on 8 pairs: loss {first:.3f} -> {loss:.3f}, {correct}/8 ranked right")
        assert loss < 0.5 * first and correct == 8

        both = np.concatenate([batch.chosen, batch.rejected])          # [16, T]
        learner_scores = np.concatenate(learners.sharded(np.split(both, 2), lambda a, t: a.reward_scores.remote(t),
                                                         "score"))
        learners.every_rank(lambda a: a.save.remote(str(tmp_path / "ck"), str(tmp_path / "hf")), "save")
    finally:
        learners.shutdown()
    rows = pairs.chosen + pairs.rejected
    served = RewardModelActor(str(tmp_path / "hf"), RewardModelSpec(cpus=0.5, batch_size=5), timeout_s=120)
    try:
        scores = served.score([r[:3] for r in rows], [r[3:] for r in rows])
    finally:
        served.shutdown()
    assert np.abs(np.array(scores) - learner_scores).max() < 1e-4
