"""LoRA learners on Ray: the EWC Fisher information is the starting model's, only the adapter trains (under
the EWC Omega), an adapter-only sync into a LoRA-serving vLLM worker moves at most 10% of a full sync's bytes,
and its greedy outputs equal those of the merged model, whether that model is saved and served fresh or pushed
as merged weights by a full sync."""
import dataclasses

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM

from cluster.groups import start_learners
from cluster.rollout_pool import RolloutPool
from data.shards import PackedWindows
from data.tokenizer import load_tokenizer
from tests.integration.test_rollout import GREEDY, LEARNER, ROLLOUT, prompts, token_ids, train
from trainers.config import LoraConfig, Regulariser
from trainers.learners.batches import TokenBatch

pytestmark = pytest.mark.integration
LORA = LoraConfig(rank=8, alpha=16, targets=["q_proj", "v_proj"], omega=1e-3, regulariser=Regulariser.ewc)


def fisher_mean_by_hand(model_dir: str, rows: np.ndarray) -> float:
    """Brute force: the plain model, one backward per row, squared gradients of q and v summed, averaged."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    adapted = [p for name, p in model.named_parameters() if name.endswith(("q_proj.weight", "v_proj.weight"))]
    total = 0.0
    for row in torch.tensor(rows):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(row[None, :-1]).logits[0], row[1:]).backward()
        total += sum(float((p.grad ** 2).sum()) for p in adapted)
    return total / sum(p.numel() for p in adapted) / len(rows)


def test_adapter_only_sync_matches_the_merged_model(ray_cluster, tiny_corpus, tmp_path):
    init = str(tiny_corpus / "init")
    learners = start_learners(dataclasses.replace(LEARNER, lora=LORA), init, total_steps=10)
    pools = []
    try:
        ps = prompts(tiny_corpus)
        rows = PackedWindows(tiny_corpus / "data", "val", 32).gather(range(4))
        [mean] = learners.sharded([TokenBatch(rows, None, 4 * 32)], lambda a, b: a.estimate_fisher.remote(b), "fisher")
        assert mean == pytest.approx(fisher_mean_by_hand(init, rows), rel=1e-4)
        train(learners, tiny_corpus, 3)
        learners.every_rank(lambda a: a.save.remote(str(tmp_path / "ck"), str(tmp_path / "hf")), "save")
        load_tokenizer(tiny_corpus / "tokenizer").save_pretrained(str(tmp_path / "hf"))
        # Each engine starts while the one before it works: on a CPU a start is mostly imports.
        served = RolloutPool(dataclasses.replace(ROLLOUT, lora_rank=8), init, context_len=128, wait=False)
        pools.append(served)
        merged = RolloutPool(ROLLOUT, init, context_len=128, wait=False)       # a full sync sends merged weights
        pools.append(merged)
        served.wait_started()
        before = served.generate(ps, GREEDY)
        served.connect_learners(learners)
        served.sync_weights(version=1)
        adapter_bytes = served.sync_bytes
        after = served.generate(ps, GREEDY)
        assert all(r.policy_version == 1 for g in after for r in g)
        assert token_ids(after) != token_ids(before)
        served.shutdown()
        pools.remove(served)

        fresh = RolloutPool(ROLLOUT, str(tmp_path / "hf"), context_len=128, wait=False)   # the saved merged model
        pools.append(fresh)
        merged.wait_started()
        merged.connect_learners(learners)
        merged.sync_weights(version=1)
        full_bytes = merged.sync_bytes
        assert token_ids(merged.generate(ps, GREEDY)) == token_ids(after)
        merged.shutdown()
        pools.remove(merged)

        fresh.wait_started()
        served_fresh = fresh.generate(ps, GREEDY)
        assert token_ids(served_fresh) == token_ids(after)
        for a, b in zip(served_fresh, after):
            assert np.abs(np.array(a[0].logprobs) - np.array(b[0].logprobs)).max() < 1e-4
    finally:
        for pool in pools:
            pool.shutdown()
        learners.shutdown()

    print(f"adapter-only sync {adapter_bytes} bytes, full sync {full_bytes} bytes ({adapter_bytes / full_bytes:.1%})")
    assert 0 < adapter_bytes <= 0.10 * full_bytes
    # the frozen base did not move: the saved model differs from init only in the adapted projections
    base, saved = load_file(str(tiny_corpus / "init" / "model.safetensors")), load_file(str(tmp_path / "hf" / "model.safetensors"))
    changed = sorted(k for k in base if not np.array_equal(base[k], saved[k]))
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    assert (tmp_path / "ck" / "adapter" / "adapter_model.safetensors").is_file()
