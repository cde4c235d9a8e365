"""The asynchronous rollout schedule (trainers/loops/rollout_stream.py) against a pool that keeps Ray's order:
a worker runs its calls in the order they were sent, so a generate call samples the weights of the last sync
sent before it. The batches' length order and padding shares are checked by hand here too."""
from types import SimpleNamespace

import numpy as np
import pytest

from data.tasks import Task
from rollout.types import FinishReason, Rollout, Sampling
from trainers.learners.rl_batches import length_order, row_ends, used_width
from trainers.loops.alignment import padding_shares
from trainers.loops.rollout_stream import RolloutStream, staleness_record


class OrderedPool:
    """Calls in the order sent; a generate call samples the version of the last sync sent before it.
    ignore_syncs: a worker that never takes new weights (its rollouts grow stale without bound)."""

    def __init__(self, ignore_syncs: bool = False):
        self.version, self.ignore_syncs, self.calls, self.mark = 0, ignore_syncs, [], 0

    def submit(self, prompts, s: Sampling):
        version, mark = self.version, self.mark       # mark: tells a test's later calls apart
        self.calls.append(("generate", s.seed, version))
        groups = [[Rollout(p, [s.seed, k, mark], [-0.5, -0.25, -0.125], FinishReason.eos, version) for k in range(s.n)]
                  for p in prompts]
        return SimpleNamespace(result=lambda: groups)

    def sync_weights(self, version: int) -> None:
        self.calls.append(("sync", version))
        if not self.ignore_syncs:
            self.version = version


def task(i: int) -> Task:
    return Task(sample=None, prompt_ids=[1, i], solution="")


def draw(step: int):
    return [task(step), task(100 + step)], Sampling(n=2, seed=step)


def run(pool, steps: int, max_staleness: int, stream=None, start: int = 0):
    """A driver loop: take the step's rollouts, 'train', sync the next version. Returns the staleness seen."""
    stream = stream or RolloutStream(pool, draw, steps, max_staleness, version=start)
    seen = []
    for step in range(start, steps):
        batch = stream.take(step)
        seen.append(list(batch.staleness))
        stream.sync_weights(step + 1)
    return stream, seen


def test_at_max_staleness_0_each_step_samples_after_the_last_sync_as_the_synchronous_loop_does():
    pool = OrderedPool()
    _, seen = run(pool, 3, 0)
    assert pool.calls == [("generate", 0, 0), ("sync", 1), ("generate", 1, 1), ("sync", 2), ("generate", 2, 2),
                          ("sync", 3)]
    assert seen == [[0] * 4] * 3


def test_at_max_staleness_2_the_workers_sample_two_steps_ahead_and_nothing_is_older():
    pool = OrderedPool()
    _, seen = run(pool, 5, 2)
    # steps 0-2 are queued at once; afterwards each take queues the step two ahead, before that step's sync
    assert pool.calls == [("generate", 0, 0), ("generate", 1, 0), ("generate", 2, 0), ("sync", 1),
                          ("generate", 3, 1), ("sync", 2), ("generate", 4, 2), ("sync", 3), ("sync", 4), ("sync", 5)]
    assert seen == [[0] * 4, [1] * 4, [2] * 4, [2] * 4, [2] * 4]


def test_a_group_past_the_bound_is_sampled_again_before_any_loss_sees_it():
    pool = OrderedPool(ignore_syncs=True)          # its rollouts stay at version 0 while the learners move on
    stream = RolloutStream(pool, draw, 4, 1, version=0)
    assert stream.take(0).regenerated == 0
    stream.sync_weights(1)
    assert stream.take(1).regenerated == 0          # one sync behind: within the bound
    stream.sync_weights(2)
    pool.mark = 1
    batch = stream.take(2)                          # two syncs behind: past it
    assert batch.regenerated == 2 and pool.calls[-1] == ("generate", 2, 0)     # step 2 sampled again, now
    assert all(r.response_ids[2] == 1 for r in batch.rollouts)      # those rollouts, not the stale ones
    record = staleness_record(batch, 1)
    assert record["async/regenerated_groups"] == 2.0 and record["async/staleness_0"] + record["async/staleness_1"] < 1


def test_staleness_counts_syncs_not_version_numbers():
    stream = RolloutStream(OrderedPool(), draw, 3, 1, version=0)
    for version in (16, 32):                        # rsft: a round of 16 optimizer steps is one sync
        stream.sync_weights(version)
    assert [stream.staleness(v) for v in (0, 16, 32)] == [2, 1, 0]


def test_a_checkpoint_holds_the_steps_queued_ahead_and_resuming_replays_them_exactly():
    def loop(stream, steps):
        out = []
        for step in steps:
            batch = stream.take(step)
            out.append((batch.rollouts, list(batch.staleness)))
            stream.sync_weights(step + 1)
        return out

    straight = loop(RolloutStream(OrderedPool(), draw, 5, 2, version=0), range(5))
    first = RolloutStream(OrderedPool(), draw, 5, 2, version=0)
    loop(first, range(2))
    saved = first.ahead_json()                      # the step-2 checkpoint: steps 2 and 3 are queued, sampled at v0, v1
    pool = OrderedPool()
    pool.version = 2                                # the workers restart on the checkpoint's weights
    resumed = loop(RolloutStream(pool, draw, 5, 2, version=2, ahead=saved), range(2, 5))
    assert [c for c in pool.calls if c[0] == "generate"] == [("generate", 4, 2)]   # only the step not saved
    assert resumed == straight[2:]


def test_a_negative_bound_is_refused():
    with pytest.raises(ValueError, match="max_staleness=-1"):
        RolloutStream(OrderedPool(), draw, 3, -1, version=0)


def test_rows_go_to_ranks_longest_first_and_each_micro_batch_is_cut_to_its_longest_row():
    mask = np.zeros((4, 6), np.float32)
    mask[0, 1:3] = 1       # ends at column 3
    mask[1, 2:6] = 1       # 6
    mask[2, 0:1] = 1       # 1
    mask[3, 3:5] = 1       # 5
    assert list(row_ends(mask)) == [3, 6, 1, 5]
    order = length_order(mask, 2)                  # sorted: rows 1 (6), 3 (5), 0 (3), 2 (1); dealt to 2 ranks
    assert list(order) == [1, 0, 3, 2]             # rank 0: rows 1, 0; rank 1: rows 3, 2
    assert used_width(mask[[1, 0]]) == 6 and used_width(mask[[3, 2]]) == 5
    assert used_width(np.zeros((2, 6), np.float32)) == 1
    # one micro-batch of 2 rows per rank: cells 2 x 6 + 2 x 5 = 22 against 4 x 6 = 24; tokens 6 + 3 + 5 + 1 = 15
    shares = padding_shares(mask, [order], 22)
    assert shares["batch/padding_share_before"] == pytest.approx(1 - 15 / 24)
    assert shares["batch/padding_share"] == pytest.approx(1 - 15 / 22)
