import pytest
import torch

from cluster.rollout_pool import fit_prompts, spread_by_load, worker_env
from rollout.config import PromptOverflow, RolloutConfig
from rollout.types import Sampling
from rollout.weight_sync import TensorSpec, plan_buckets


def test_spread_by_load_balances_outstanding_tokens():
    shares = spread_by_load([100, 10, 10, 10, 10, 10, 50, 40], 2)
    loads = [sum([100, 10, 10, 10, 10, 10, 50, 40][i] for i in s) for s in shares]
    assert sorted(i for s in shares for i in s) == list(range(8))
    assert loads == [120, 120]
    assert spread_by_load([5, 5], 3)[2] == []


def test_a_worker_computes_on_its_threads_else_on_its_reserved_cpus():
    assert worker_env(RolloutConfig(cpus_per_worker=1.0))["OMP_NUM_THREADS"] == "1"
    assert worker_env(RolloutConfig(cpus_per_worker=0.5))["OMP_NUM_THREADS"] == "1"      # at least one
    assert worker_env(RolloutConfig(cpus_per_worker=4.0))["OMP_NUM_THREADS"] == "4"
    assert worker_env(RolloutConfig(cpus_per_worker=1.0, threads_per_worker=2))["OMP_NUM_THREADS"] == "2"


def test_fit_prompts_truncates_left_or_rejects():
    long = list(range(1, 21))
    out = fit_prompts([long, [1, 2]], max_new_tokens=10, context_len=20, overflow=PromptOverflow.truncate_left)
    assert out[0] == [1] + list(range(12, 21)) and len(out[0]) == 10 and out[1] == [1, 2]
    with pytest.raises(ValueError, match="prompt 0 has 20 tokens"):
        fit_prompts([long], 10, 20, PromptOverflow.reject)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        fit_prompts([[1], []], 4, 20, PromptOverflow.reject)
    with pytest.raises(ValueError, match="leaves no room"):
        fit_prompts([[1]], 19, 20, PromptOverflow.reject)


def test_sampling_rejects_n_below_one():
    with pytest.raises(ValueError, match="n=0"):
        Sampling(n=0)


def test_plan_buckets_packs_by_size_and_dtype():
    specs = [TensorSpec("a", [256], "float32"), TensorSpec("b", [256], "float32"), TensorSpec("c", [256], "float32"),
             TensorSpec("d", [4096], "float32"), TensorSpec("e", [8], "bfloat16")]
    buckets = plan_buckets(specs, bucket_bytes=2048)
    assert [[s.name for s in b] for b in buckets] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert sum(s.numel for b in buckets for s in b) == 256 * 3 + 4096 + 8
    assert torch.float32 == getattr(torch, buckets[0][0].dtype)
