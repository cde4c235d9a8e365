"""Rollout workers on vLLM and the reference engine, weight sync from the learners, and faults."""
import dataclasses
import threading
import time

import numpy as np
import pytest
import ray

from cluster.actor_group import Bundle
from cluster.groups import start_learners
from cluster.rollout_pool import RolloutPool
from data.shards import PackedWindows
from data.tokenizer import load_tokenizer
from modeling.config import Precision
from rollout.config import EngineKind, RolloutConfig
from rollout.types import Sampling
from trainers.config import LearnerConfig
from trainers.learners.batches import TokenBatch

pytestmark = pytest.mark.integration
ROLLOUT = RolloutConfig(num_workers=1, cpus_per_worker=0.5, timeout_s=300, kv_cache_gib=0.25)
LEARNER = LearnerConfig(precision=Precision.fp32, cpus_per_rank=0.5, threads_per_rank=1, warmup_steps=0,
                        lr=0.05, micro_batch=8, timeout_s=300)
GREEDY = Sampling(temperature=0, max_new_tokens=16)


def prompts(tiny_corpus, k=4):
    tok = load_tokenizer(tiny_corpus / "tokenizer")
    return [tok(f"<|user|>State the final answer to the following arithmetic problem: {i} + 3 =<|end|><|assistant|>")
            ["input_ids"] for i in range(k)]


def train(learners, tiny_corpus, steps):
    windows = PackedWindows(tiny_corpus / "data", "train", 32)
    for step in range(steps):
        tokens = windows.gather(range(step * 8, step * 8 + 8))
        learners.sharded(TokenBatch(tokens, None, 8 * 32).split(1), lambda a, b: a.train_step.remote(b), "train")


def logprob_gaps(learners, rows) -> np.ndarray:
    """Learner log pi(y_t | x, y_<t) minus the engine's own, for every response token of `rows`."""
    width = max(len(r.prompt_ids) + len(r.response_ids) for r in rows)
    tokens = np.zeros((len(rows), width), dtype=np.int64)  # right-padded; padding is never read back
    for i, r in enumerate(rows):
        tokens[i, :len(r.prompt_ids) + len(r.response_ids)] = r.prompt_ids + r.response_ids
    learner = learners.rank0(lambda a: a.logprobs.remote(TokenBatch(tokens, None, 1)), "logprobs")
    # position t of learner[i] scores token t+1, so response token j sits at len(prompt) - 1 + j
    return np.concatenate([learner[i][len(r.prompt_ids) - 1:len(r.prompt_ids) - 1 + len(r.response_ids)]
                           - np.array(r.logprobs) for i, r in enumerate(rows)])


def token_ids(rollouts):
    return [[r.response_ids for r in group] for group in rollouts]


def test_sync_matches_fresh_engine_and_learner_logprobs(ray_cluster, tiny_corpus, tmp_path):
    # The worker sits in the learner's placement bundle, as in colocated GPU mode.
    learners = start_learners(LEARNER, str(tiny_corpus / "init"), total_steps=10,
                              colocated=Bundle(ROLLOUT.cpus_per_worker, ROLLOUT.gpus_per_worker))
    pool = RolloutPool(ROLLOUT, str(tiny_corpus / "init"), context_len=128, shared=learners.placement)
    try:
        ps = prompts(tiny_corpus)
        before = pool.generate(ps, GREEDY)
        assert all(r.policy_version == 0 for g in before for r in g)
        train(learners, tiny_corpus, 3)
        pool.connect_learners(learners)
        pool.sync_weights(version=1)
        after = pool.generate(ps, GREEDY)
        assert all(r.policy_version == 1 for g in after for r in g)
        assert token_ids(after) != token_ids(before)

        learners.every_rank(lambda a: a.save.remote(str(tmp_path / "ck"), str(tmp_path / "hf")), "save")
        load_tokenizer(tiny_corpus / "tokenizer").save_pretrained(str(tmp_path / "hf"))
        fresh = RolloutPool(ROLLOUT, str(tmp_path / "hf"), context_len=128, wait=False)   # starts during the parity check
        try:
            # Parity: the learner's log pi(y|x) of sampled rollouts equals the engine's own (fp32).
            sampled = pool.generate(ps, Sampling(temperature=1.0, n=2, max_new_tokens=24))
            diffs = logprob_gaps(learners, [r for g in sampled for r in g])
            print(f"fp32 parity over {diffs.size} tokens: max |diff| {np.abs(diffs).max():.2e}, "
                  f"mean {np.abs(diffs).mean():.2e}")
            assert np.abs(diffs).max() < 1e-4
            fresh.wait_started()
            assert token_ids(fresh.generate(ps, GREEDY)) == token_ids(after)
        finally:
            fresh.shutdown()
    finally:
        pool.shutdown()
        learners.shutdown()


def test_reference_engine_and_vllm_agree_greedy(ray_cluster, tiny_corpus):
    ps = prompts(tiny_corpus)
    pools = [RolloutPool(dataclasses.replace(ROLLOUT, engine=engine), str(tiny_corpus / "init"), context_len=128,
                         wait=False) for engine in (EngineKind.vllm, EngineKind.reference)]     # both start at once
    try:
        for pool in pools:
            pool.wait_started()
        results = [pool.generate(ps, GREEDY) for pool in pools]
    finally:
        for pool in pools:
            pool.shutdown()
    assert token_ids(results[0]) == token_ids(results[1])
    for a, b in zip(results[0], results[1]):
        assert np.abs(np.array(a[0].logprobs) - np.array(b[0].logprobs)).max() < 1e-4
        assert a[0].finish_reason == b[0].finish_reason


def test_worker_killed_during_generate(ray_cluster, tiny_corpus):
    """Two generate calls in flight on one worker (as async rollouts queue them) when it is killed: both come
    back whole, from one replacement at the current weights (the second call's failure restarts nothing)."""
    # one sequence at a time, so that generate is still running when the worker is killed a second in
    cfg = dataclasses.replace(ROLLOUT, engine=EngineKind.reference, reference_batch_size=1)
    pool = RolloutPool(cfg, str(tiny_corpus / "init"), context_len=128, wait=False)    # starts with the learners
    learners = start_learners(LEARNER, str(tiny_corpus / "init"), total_steps=10)
    try:
        pool.wait_started()
        train(learners, tiny_corpus, 1)
        pool.connect_learners(learners)
        pool.sync_weights(version=1)
        victim = pool.workers[0]
        killer = threading.Thread(target=lambda: (time.sleep(1.0), ray.kill(victim)))
        killer.start()
        start = time.perf_counter()
        sampling = Sampling(temperature=1.0, n=4, max_new_tokens=96)
        first, queued = (pool.submit(prompts(tiny_corpus, 16), sampling) for _ in range(2))
        out, later = first.result(), queued.result()
        print(f"two generate calls with a kill and a restart: {time.perf_counter() - start:.1f}s")
        killer.join()
        assert pool.restarts == 1
        for groups in (out, later):
            assert len(groups) == 16 and all(len(g) == 4 for g in groups)
            assert all(r.policy_version == 1 for g in groups for r in g)
        assert pool.versions() == [1]
    finally:
        pool.shutdown()
        learners.shutdown()


def test_bf16_parity(ray_cluster, tiny_corpus):
    """bf16 on both sides (learner: fp32 weights under bf16 autocast; vLLM: bf16 weights): the
    per-token log-probabilities of sampled rollouts agree to within bf16's resolution."""
    pool = RolloutPool(dataclasses.replace(ROLLOUT, dtype="bfloat16"), str(tiny_corpus / "init"), context_len=128,
                       wait=False)                                                   # starts with the learners
    learners = start_learners(dataclasses.replace(LEARNER, precision=Precision.bf16), str(tiny_corpus / "init"), 10)
    try:
        pool.wait_started()
        sampled = pool.generate(prompts(tiny_corpus), Sampling(temperature=1.0, n=4, max_new_tokens=24))
        diffs = logprob_gaps(learners, [r for g in sampled for r in g])
        print(f"bf16 parity over {diffs.size} tokens: max |diff| {np.abs(diffs).max():.2e}, mean {np.abs(diffs).mean():.2e}")
        assert np.abs(diffs).max() < 0.02 and np.abs(diffs).mean() < 0.005
    finally:
        pool.shutdown()
        learners.shutdown()


def test_multi_turn_episodes_are_token_in_token_out_and_the_learner_scores_what_the_engine_sampled(
        ray_cluster, tiny_corpus):
    """Episodes of three model turns with an observation after each of the first two (a scripted environment
    answers every turn, since an untrained model calls no tool): every episode is the prompt, then its turns as
    sampled, then each observation as tokenised once; the learner's log-probs of the sampled tokens, recomputed
    over the whole episode, match the engine's (fp32, the single-turn parity bound)."""
    from data.tasks import Task
    from tools.config import EpisodeConfig
    from trainers.learners.rl_batches import token_rows
    pool = RolloutPool(ROLLOUT, str(tiny_corpus / "init"), context_len=128, wait=False)
    learners = start_learners(LEARNER, str(tiny_corpus / "init"), total_steps=10)
    tok = load_tokenizer(tiny_corpus / "tokenizer")
    try:
        pool.wait_started()
        tasks = [Task(sample=None, prompt_ids=p, solution="") for p in prompts(tiny_corpus, 4)]
        cfg = EpisodeConfig(tools=[], environment="tests.fixtures.environments:Scripted", max_turns=3,
                            max_episode_tokens=120)
        episodes = pool.submit_episodes(tasks, Sampling(temperature=1.0, max_new_tokens=12, seed=3), cfg).result()
        assert [e.prompt_ids for e in episodes] == [t.prompt_ids for t in tasks]
        for e in episodes:
            mask = e.sampled_mask()
            observations = [i for i, m in zip(e.response_ids, mask) if not m]
            expected = (tok("<result>turn 1</result>", add_special_tokens=False)["input_ids"]
                        + tok("<result>turn 2</result>", add_special_tokens=False)["input_ids"])
            assert observations == expected and e.turns == 3 and e.env_parts == {"observations": 2.0, "turns_done": 1.0}
            assert all(lp == 0.0 for lp, m in zip(e.logprobs, mask) if not m)
            assert len(e.prompt_ids) + len(e.response_ids) <= 120
        tokens, loss_mask = token_rows([e.prompt_ids for e in episodes], [e.response_ids for e in episodes], 0,
                                       response_masks=[e.sampled_mask() for e in episodes])
        learner = np.stack(learners.rank0(lambda a: a.logprobs.remote(TokenBatch(tokens, None, 1)), "logprobs"))
        engine = np.zeros_like(loss_mask)
        for i, e in enumerate(episodes):
            engine[i, len(e.prompt_ids) - 1:len(e.prompt_ids) - 1 + len(e.response_ids)] = e.logprobs
        gaps = np.abs((learner - engine) * loss_mask)
        print(f"multi-turn fp32 parity over {int(loss_mask.sum())} sampled tokens: max |diff| {gaps.max():.2e}")
        assert gaps.max() < 1e-4 and loss_mask.sum() == sum(sum(e.sampled_mask()) for e in episodes)
    finally:
        pool.shutdown()
        learners.shutdown()
