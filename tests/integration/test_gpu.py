"""On a GPU (skipped where CUDA is absent; `make gpu-check` runs them): bf16 inside the DeepSpeed engine,
weight sync to a rollout worker on learner rank 0's own GPU (CUDA IPC: NCCL refuses two ranks on one GPU),
and the forward-only roles computing on the GPU they reserve, in step with the learner."""
import dataclasses

import numpy as np
import pytest
import ray
import torch
from transformers import AutoConfig

from cluster.actor_group import Bundle
from cluster.groups import start_learners
from cluster.rollout_pool import RolloutPool
from cluster.scorers import ReferenceActor, RewardModelActor
from modeling.config import Precision
from modeling.model import ModelHead
from rewards.config import RewardModelSpec
from rollout.config import EngineKind, RolloutConfig
from rollout.types import Sampling
from rollout.weight_sync import Route
from tests.integration.test_learner_precision import dtypes_seen, losses, run_in_fresh_process
from tests.integration.test_rollout import prompts, train
from trainers.align_config import ReferenceConfig
from trainers.config import LearnerConfig
from trainers.learners.batches import TokenBatch

pytestmark = [pytest.mark.integration, pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
LEARNER = LearnerConfig(precision=Precision.bf16, gpus_per_rank=0.4, cpus_per_rank=0.25, threads_per_rank=1,
                        warmup_steps=0, lr=0.05, micro_batch=8, timeout_s=300)
ROLLOUT = RolloutConfig(engine=EngineKind.reference, num_workers=1, cpus_per_worker=0.25, gpus_per_worker=0.2,
                        colocate=True, timeout_s=300)


def test_bf16_reaches_the_linears_inside_the_engine_on_the_gpu(tiny_corpus):
    seen = run_in_fresh_process(dtypes_seen, str(tiny_corpus), Precision.bf16, 2, 1.0)
    assert seen["device"] == {"cuda"}
    assert seen["train"] == seen["logprobs"] == {"torch.bfloat16"}
    assert seen["weights"] == seen["adam"] == {"torch.float32"}


def test_compiled_blocks_train_as_the_eager_model_on_the_gpu(tiny_corpus):
    eager = run_in_fresh_process(losses, str(tiny_corpus), False, 1.0)
    compiled = run_in_fresh_process(losses, str(tiny_corpus), True, 1.0)
    print(f"eager {eager}\ncompiled {compiled}")
    assert eager[-1] < eager[0] and np.allclose(eager, compiled, rtol=1e-4, atol=1e-4)


def assert_same_weights(learners, pool) -> int:
    """Bit for bit: every tensor the worker holds equals the learner's. Returns how many were compared."""
    learner = learners.every_rank(lambda a: a.full_state_dict.remote(), "gather weights")[0]
    worker = ray.get(pool.workers[0].weights.remote())
    assert set(worker) <= set(learner)
    for name, tensor in worker.items():
        assert tensor.dtype == learner[name].dtype and torch.equal(tensor, learner[name]), name
    return len(worker)


def test_same_gpu_sync_is_bit_exact_and_survives_sleep(ray_cluster, tiny_corpus):
    learners = start_learners(LEARNER, str(tiny_corpus / "init"), total_steps=10,
                              colocated=Bundle(ROLLOUT.cpus_per_worker, ROLLOUT.gpus_per_worker))
    pool = RolloutPool(ROLLOUT, str(tiny_corpus / "init"), context_len=128, shared=learners.placement)
    try:
        pool.connect_learners(learners)
        assert pool.routes == [Route.shared]                       # learner rank 0's own GPU: CUDA IPC
        for version in (1, 2):
            pool.free_gpu()                                        # colocated: the engine sleeps while we train
            train(learners, tiny_corpus, 2)
            pool.sync_weights(version)                             # wakes it, then the handles
            assert assert_same_weights(learners, pool) >= 10
            out = pool.generate(prompts(tiny_corpus), Sampling(temperature=1.0, n=2, max_new_tokens=8))
            assert all(r.policy_version == version for g in out for r in g)
    finally:
        pool.shutdown()
        learners.shutdown()


def test_reference_and_reward_model_compute_on_the_gpu_like_the_learner(ray_cluster, tiny_corpus):
    model = str(tiny_corpus / "init")
    policy = start_learners(LEARNER, model, total_steps=10)
    scorer = start_learners(dataclasses.replace(LEARNER, gpus_per_rank=0.2), model, 10, head=ModelHead.scalar,
                            role="reward learner")
    ref = ReferenceActor(model, ReferenceConfig(batch_size=4, cpus=0.1, gpus=0.1), Precision.bf16)
    rm = RewardModelActor(model, RewardModelSpec(batch_size=4, cpus=0.1, gpus=0.1), Precision.bf16)
    try:
        assert ray.get(ref.actor.device_type.remote()) == ray.get(rm.actor.device_type.remote()) == "cuda"
        rows = [p + p[:5] for p in prompts(tiny_corpus, 6)]
        width = max(len(r) for r in rows)
        pad = 0
        tokens = np.array([r + [pad] * (width - len(r)) for r in rows], dtype=np.int64)
        learner = np.stack(policy.rank0(lambda a: a.logprobs.remote(TokenBatch(tokens, None, 1)), "logprobs"))
        reference = ref.logprobs(tokens)
        real = np.array([[t < len(r) - 1 for t in range(width - 1)] for r in rows])   # targets that are not padding
        gap = np.abs(learner - reference)[real]
        print(f"reference vs learner log-probs on the GPU (bf16): max |diff| {gap.max():.2e}")
        assert gap.max() < 2e-2
        scores = np.array(rm.score([r[:-5] for r in rows], [r[-5:] for r in rows]))
        pad_id = AutoConfig.from_pretrained(model).pad_token_id                        # what the worker pads with
        padded = np.array([r + [pad_id] * (width - len(r)) for r in rows], dtype=np.int64)
        by_learner = scorer.rank0(lambda a: a.reward_scores.remote(padded), "reward scores")
        print(f"reward model vs learner on the GPU (bf16): max |diff| {np.abs(scores - by_learner).max():.2e}")
        assert np.allclose(scores, by_learner, atol=2e-2, rtol=2e-2)
    finally:
        for role in (ref, rm, scorer, policy):
            role.shutdown()
