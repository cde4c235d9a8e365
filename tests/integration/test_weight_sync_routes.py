"""One sync that mixes both routes, in real processes on the CPU: the sender, a receiver on the wire (gloo)
and one on the shared route (/dev/shm, the CPU's counterpart of CUDA IPC). Every tensor arrives bit for bit,
over several buckets of two dtypes and two versions in a row, and no shared buffer is left behind."""
import glob
import io
import multiprocessing
import socket

import pytest
import torch

from rollout.weight_sync import (SHM_DIR, SHM_PREFIX, BucketSender, Member, Route, TensorSpec, open_receiver,
                                 open_sender, plan_buckets, receive_buckets)

pytestmark = pytest.mark.integration
CPU = torch.device("cpu")


def weights(version: int) -> dict[str, torch.Tensor]:
    """A model-shaped set of tensors whose values depend on the version (fp32 and bf16: buckets split by dtype)."""
    g = torch.Generator().manual_seed(version)
    shapes = {"embed.weight": [300, 16], "layers.0.q.weight": [16, 16], "layers.0.norm.weight": [16],
              "layers.1.q.weight": [16, 16], "head.weight": [300, 16]}
    out = {name: torch.randn(shape, generator=g) for name, shape in shapes.items()}
    out["layers.1.q.weight"] = out["layers.1.q.weight"].bfloat16()
    return out


def specs() -> list[TensorSpec]:
    return [TensorSpec(n, list(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in weights(0).items()]


BUCKETS = plan_buckets(specs(), bucket_bytes=8 << 10)   # 8 KiB: several buckets


def send(port: int, versions: list[int], out) -> None:
    torch.set_num_threads(1)
    link = open_sender("127.0.0.1", port, wire_world=2, shared_receivers=1, timeout_s=60, device=CPU)
    for v in versions:
        w, sender = weights(v), BucketSender(link, v)
        for bucket in BUCKETS:
            sender.send([w[s.name] for s in bucket])
        sender.finish()
    out.put(("sender", None))


def receive(port: int, member: Member, versions: list[int], out) -> None:
    torch.set_num_threads(1)
    link = open_receiver("127.0.0.1", port, member, wire_world=2, timeout_s=60, device=CPU)
    got = {v: {name: t.clone() for name, t in receive_buckets(link, BUCKETS, v)} for v in versions}
    buffer = io.BytesIO()
    torch.save(got, buffer)              # bytes: tensors on a queue would need this process alive to be read
    out.put((member.route.value, buffer.getvalue()))


def test_one_sync_mixes_the_wire_and_shared_memory():
    assert len(BUCKETS) >= 3 and {b[0].dtype for b in BUCKETS} == {"float32", "bfloat16"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    out, versions = ctx.Queue(), [1, 2]
    before = set(glob.glob(f"{SHM_DIR}/{SHM_PREFIX}*"))          # another run's (or a killed one's) are not ours
    procs = [ctx.Process(target=send, args=(port, versions, out)),
             ctx.Process(target=receive, args=(port, Member(Route.wire, 1), versions, out)),
             ctx.Process(target=receive, args=(port, Member(Route.shared, 0), versions, out))]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert set(results) == {"sender", "wire", "shared"}
    for route in ("wire", "shared"):
        for v in versions:
            sent, got = weights(v), torch.load(io.BytesIO(results[route]))[v]
            assert list(got) == [s.name for b in BUCKETS for s in b]
            for name, tensor in sent.items():
                assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), (route, v, name)
    assert set(glob.glob(f"{SHM_DIR}/{SHM_PREFIX}*")) <= before   # every shared buffer was unlinked after its copies


def test_a_version_never_sent_times_out_with_its_name():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = open_sender("127.0.0.1", port, wire_world=1, shared_receivers=1, timeout_s=1, device=CPU)
    receiver = open_receiver("127.0.0.1", port, Member(Route.shared, 0), wire_world=1, timeout_s=1, device=CPU)
    with pytest.raises(TimeoutError, match=r"bucket 0 of version 7 did not arrive within 1s"):
        next(receive_buckets(receiver, BUCKETS, 7))
    del sender


def test_an_aborted_sync_leaves_no_buffer_or_key():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    link = open_sender("127.0.0.1", port, wire_world=1, shared_receivers=1, timeout_s=1, device=CPU)
    w, before = weights(1), set(glob.glob(f"{SHM_DIR}/{SHM_PREFIX}*"))   # another run's are not ours
    with pytest.raises(RuntimeError, match="a receiver died"):
        with BucketSender(link, 1) as sender:
            sender.send([w[s.name] for s in BUCKETS[0]])
            assert set(glob.glob(f"{SHM_DIR}/{SHM_PREFIX}*")) - before and link.store.check(["v1/bucket0"])
            raise RuntimeError("a receiver died")
    assert set(glob.glob(f"{SHM_DIR}/{SHM_PREFIX}*")) <= before and not link.store.check(["v1/bucket0"])
