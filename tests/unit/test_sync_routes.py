"""Which route each rollout worker's weights take, from a faked map of devices: shared (CUDA IPC, or /dev/shm
on a CPU) for a worker on learner rank 0's own device, the wire (NCCL, gloo) for the rest."""
import pytest

from rollout.weight_sync import DeviceId, Member, Route, members, plan_routes

GPU0, GPU1, GPU2 = (DeviceId("node-a", "cuda", f"GPU-{i}") for i in range(3))
REMOTE_GPU0 = DeviceId("node-b", "cuda", "GPU-0")     # the same UUID string on another node is another card
CPU_A, CPU_B = DeviceId("node-a", "cpu", ""), DeviceId("node-b", "cpu", "")
S, W = Route.shared, Route.wire


@pytest.mark.parametrize("sender, workers, expected", [
    (GPU0, [GPU0], [S]),                                   # colocated on one GPU: NCCL would refuse it
    (GPU0, [GPU1, GPU2], [W, W]),                          # a GPU each: NCCL
    (GPU0, [GPU0, GPU1, GPU0, GPU2], [S, W, S, W]),        # one sync mixes both
    (GPU0, [REMOTE_GPU0], [W]),
    (CPU_A, [CPU_A, CPU_A], [S, S]),                       # one node's CPU: shared memory
    (CPU_A, [CPU_B, CPU_A], [W, S]),                       # another node's: gloo
])
def test_routes(sender, workers, expected):
    assert plan_routes(sender, workers) == expected


def test_members_number_the_wire_from_one_and_the_shared_from_zero():
    places, wire_world, shared = members([S, W, S, W, W])
    assert places == [Member(S, 0), Member(W, 1), Member(S, 1), Member(W, 2), Member(W, 3)]
    assert (wire_world, shared) == (4, 2)
    assert members([S, S]) == ([Member(S, 0), Member(S, 1)], 1, 2)


def test_two_wire_workers_on_one_gpu_are_refused():
    with pytest.raises(ValueError, match=r"rollout workers 1 and 3 share GPU GPU-1.*NCCL refuses"):
        plan_routes(GPU0, [GPU0, GPU1, GPU2, GPU1])


def test_a_worker_on_another_kind_of_device_is_refused():
    with pytest.raises(ValueError, match="learner rank 0 is on cuda, rollout worker 1 on cpu"):
        plan_routes(GPU0, [GPU1, CPU_A])
