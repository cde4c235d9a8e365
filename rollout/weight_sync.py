"""Moving weights from learner rank 0 to every rollout worker, in buckets of many tensors, by one of two
routes per worker:

- shared: the worker sits on the sender's own device (the same GPU, or the CPU of the same node). It maps
  the sender's bucket buffer (a CUDA IPC handle; a /dev/shm file on a CPU), copies it and acknowledges.
  NCCL refuses two ranks of one communicator on one GPU, so a colocated worker can only come this way.
- wire: a broadcast over a process group of its own (NCCL between GPUs, gloo between CPUs; never
  DeepSpeed's default group) between the sender and the workers on other devices.

One sync may mix both. Every member plans the same buckets from the same TensorSpec list, so only raw bytes
and handles cross. A TCP store hosted by the sender carries the rendezvous, the handles (plain JSON, under
keys tagged with the policy version) and the acknowledgements; every wait on it is bounded."""
from __future__ import annotations

import json
import os
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Iterator

import torch
import torch.distributed as dist

SHM_DIR = "/dev/shm"
SHM_PREFIX = "tether-sync-"


@dataclass
class TensorSpec:
    name: str          # checkpoint (HF) name, e.g. model.layers.0.self_attn.q_proj.weight
    shape: list[int]   # full (unsharded) shape
    dtype: str         # torch dtype name, e.g. float32

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty(0, dtype=getattr(torch, self.dtype)).element_size()


def plan_buckets(specs: list[TensorSpec], bucket_bytes: int) -> list[list[TensorSpec]]:
    """Consecutive tensors of one dtype packed into buckets of at most bucket_bytes (a larger tensor
    travels alone)."""
    buckets: list[list[TensorSpec]] = []
    size = 0
    for spec in specs:
        nbytes = spec.nbytes
        if not buckets or size + nbytes > bucket_bytes or buckets[-1][0].dtype != spec.dtype:
            buckets.append([])
            size = 0
        buckets[-1].append(spec)
        size += nbytes
    return buckets


# -- which route each worker takes ----------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceId:
    """Where a sync member's tensors live."""
    node: str   # the Ray node id
    kind: str   # "cuda" or "cpu"
    gpu: str    # the GPU's UUID ("" on a CPU): fractional GPUs of one card share it


def gpu_uuid(index: int) -> str:
    return str(torch.cuda.get_device_properties(index).uuid)


def device_id(node: str, device: torch.device) -> DeviceId:
    if device.type == "cuda":
        return DeviceId(node, "cuda", gpu_uuid(device.index or 0))
    return DeviceId(node, "cpu", "")


class Route(Enum):
    shared = "shared"
    """The sender's own device: a CUDA IPC handle or a shared-memory file, copied by the receiver."""
    wire = "wire"
    """A broadcast over the sync process group: NCCL between GPUs, gloo between CPUs."""


def plan_routes(sender: DeviceId, workers: list[DeviceId]) -> list[Route]:
    """shared for each worker on the sender's device, wire for the rest. Errors (naming the workers) where no
    route works: a worker on another kind of device, or two wire workers on one GPU (NCCL refuses them)."""
    routes = []
    on_gpu: dict[tuple[str, str], int] = {}
    for i, w in enumerate(workers):
        if w.kind != sender.kind:
            raise ValueError(f"weight sync needs the learners and the rollout workers on the same kind of device; "
                             f"learner rank 0 is on {sender.kind}, rollout worker {i} on {w.kind} "
                             f"(learner.gpus_per_rank, rollout.gpus_per_worker)")
        if w == sender:
            routes.append(Route.shared)
            continue
        if w.kind == "cuda":
            if (w.node, w.gpu) in on_gpu:
                raise ValueError(f"rollout workers {on_gpu[w.node, w.gpu]} and {i} share GPU {w.gpu}, which is not "
                                 f"learner rank 0's: NCCL refuses two ranks on one GPU. Give each worker a GPU of "
                                 f"its own, or place them on learner rank 0's GPU (rollout.colocate)")
            on_gpu[w.node, w.gpu] = i
        routes.append(Route.wire)
    return routes


@dataclass
class Member:
    """A receiver's place in the sync: its route, and its rank on the wire (1, 2, ...) or its index among
    the shared receivers (0, 1, ...)."""
    route: Route
    index: int


def members(routes: list[Route]) -> tuple[list[Member], int, int]:
    """Each worker's Member, the wire group's size (the sender included) and the number of shared receivers."""
    out, wire, shared = [], 1, 0
    for r in routes:
        if r == Route.wire:
            out.append(Member(r, wire))
            wire += 1
        else:
            out.append(Member(r, shared))
            shared += 1
    return out, wire, shared


# -- the link each member holds --------------------------------------------------------------------------
@dataclass
class SyncLink:
    store: dist.Store
    device: torch.device
    wire: dist.ProcessGroup | None   # None: no worker is on the wire (or this receiver is not)
    member: Member | None            # None on the sender
    shared_receivers: int            # the sender: how many shared receivers acknowledge each bucket
    timeout: timedelta


def _wire_group(store, rank: int, world: int, timeout: timedelta, device: torch.device) -> dist.ProcessGroup:
    store = dist.PrefixStore("wire", store)
    if device.type == "cuda":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return dist.ProcessGroupNCCL(store, rank, world, options)
    return dist.ProcessGroupGloo(store, rank, world, timeout)


def open_sender(host: str, port: int, wire_world: int, shared_receivers: int, timeout_s: float,
                device: torch.device) -> SyncLink:
    """Learner rank 0: hosts the store. Called at the same time as every receiver's open_receiver."""
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(host, port, None, True, timeout, wait_for_workers=False)
    wire = _wire_group(store, 0, wire_world, timeout, device) if wire_world > 1 else None
    return SyncLink(store, device, wire, None, shared_receivers, timeout)


def open_receiver(host: str, port: int, member: Member, wire_world: int, timeout_s: float,
                  device: torch.device) -> SyncLink:
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(host, port, None, False, timeout)
    wire = _wire_group(store, member.index, wire_world, timeout, device) if member.route == Route.wire else None
    return SyncLink(store, device, wire, member, 0, timeout)


# -- shared buffers ----------------------------------------------------------------------------------------
def _shared_buffer(numel: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, str | None]:
    """A buffer that receivers on this device can map: CUDA memory (exported by IPC handle), or a file in
    /dev/shm on a CPU (its path is returned, to be unlinked once every receiver has copied it)."""
    if device.type == "cuda":
        return torch.empty(numel, dtype=dtype, device=device), None
    path = os.path.join(SHM_DIR, f"{SHM_PREFIX}{uuid.uuid4().hex}")
    nbytes, room = numel * dtype.itemsize, os.statvfs(SHM_DIR)
    if room.f_bavail * room.f_frsize < nbytes:      # a tmpfs write past its size kills the writer (SIGBUS)
        raise RuntimeError(f"weight sync: {SHM_DIR} has {room.f_bavail * room.f_frsize >> 20} MB free and a bucket "
                           f"needs {nbytes >> 20} MB; lower rollout.sync_bucket_mb or give {SHM_DIR} more room "
                           f"(docker run --shm-size)")
    try:
        buffer = torch.from_file(path, shared=True, size=numel, dtype=dtype)
    except RuntimeError as e:
        raise RuntimeError(f"weight sync: cannot map {nbytes} bytes in {SHM_DIR} ({e}); "
                           f"lower rollout.sync_bucket_mb or give {SHM_DIR} more room") from None
    return buffer, path


def export_buffer(flat: torch.Tensor, path: str | None) -> dict:
    """Plain values a receiver on the same device needs to map `flat` (no pickle crosses the store); `path`:
    the /dev/shm file of a CPU buffer."""
    if flat.device.type == "cpu":
        return {"kind": "cpu", "path": path, "numel": flat.numel(), "dtype": str(flat.dtype)}
    from torch.multiprocessing.reductions import reduce_tensor
    torch.cuda.current_stream(flat.device).synchronize()          # the bytes are written before anyone maps them
    _, (_, size, stride, offset, _, dtype, index, handle, size_bytes, offset_bytes, _, counter, counter_offset,
        event, event_sync) = reduce_tensor(flat)
    return {"kind": "cuda", "gpu": gpu_uuid(index), "numel": flat.numel(), "dtype": str(dtype),
            "size": list(size), "stride": list(stride), "offset": offset, "handle": handle.hex(),
            "size_bytes": size_bytes, "offset_bytes": offset_bytes, "counter": counter.hex(),
            "counter_offset": counter_offset, "event": event.hex() if event else "", "event_sync": event_sync}


def import_buffer(meta: dict) -> torch.Tensor:
    """A view of the sender's buffer in this process (the caller copies it before acknowledging)."""
    dtype = getattr(torch, meta["dtype"].removeprefix("torch."))
    if meta["kind"] == "cpu":
        path = os.path.realpath(meta["path"])
        if os.path.dirname(path) != os.path.realpath(SHM_DIR) or not os.path.basename(path).startswith(SHM_PREFIX):
            raise ValueError(f"weight sync: refusing to map {meta['path']}, which is not a sync buffer")
        nbytes = meta["numel"] * dtype.itemsize
        if not os.path.isfile(path) or os.path.getsize(path) != nbytes:     # never create or grow one
            raise ValueError(f"weight sync: {path} is not a buffer of {nbytes} bytes")
        return torch.from_file(path, shared=False, size=meta["numel"], dtype=dtype)
    from torch.multiprocessing.reductions import rebuild_cuda_tensor
    local = [i for i in range(torch.cuda.device_count()) if gpu_uuid(i) == meta["gpu"]]
    if not local:
        raise RuntimeError(f"weight sync: this process does not see the sender's GPU {meta['gpu']}")
    return rebuild_cuda_tensor(torch.Tensor, tuple(meta["size"]), tuple(meta["stride"]), meta["offset"],
                               torch.storage.TypedStorage, dtype, local[0], bytes.fromhex(meta["handle"]),
                               meta["size_bytes"], meta["offset_bytes"], False, bytes.fromhex(meta["counter"]),
                               meta["counter_offset"], bytes.fromhex(meta["event"]) or None, meta["event_sync"])


def _bucket_key(version: int, k: int) -> str:
    return f"v{version}/bucket{k}"


def _wait_keys(link: SyncLink, keys: list[str], what: str) -> None:
    try:
        link.store.wait(keys, link.timeout)
    except (RuntimeError, dist.DistStoreError) as e:
        missing = [k for k in keys if not link.store.check([k])]
        raise TimeoutError(f"weight sync: {what} did not arrive within {link.timeout.total_seconds():.0f}s "
                           f"(missing {missing[:4]}): {e}") from None


# -- sending and receiving ---------------------------------------------------------------------------------
class BucketSender:
    """Sends flattened buckets of one version with at most two alive: bucket k+1 is gathered and flattened
    while the receivers still copy bucket k."""

    def __init__(self, link: SyncLink, version: int):
        self.link, self.version, self.count = link, version, 0
        self.in_flight: deque = deque()

    def send(self, tensors: list[torch.Tensor]) -> None:
        numel, dtype = sum(t.numel() for t in tensors), tensors[0].dtype
        if self.link.shared_receivers:
            flat, path = _shared_buffer(numel, dtype, self.link.device)
        else:
            flat, path = torch.empty(numel, dtype=dtype, device=self.link.device), None
        torch.cat([t.detach().reshape(-1).to(self.link.device) for t in tensors], out=flat)
        key = _bucket_key(self.version, self.count)
        if self.link.shared_receivers:
            self.link.store.set(key, json.dumps(export_buffer(flat, path)))
        work = self.link.wire.broadcast(flat, 0) if self.link.wire is not None else None
        self.in_flight.append((key, flat, path, work))   # the buffer outlives its broadcast and every copy of it
        self.count += 1
        while len(self.in_flight) > 1:
            self._retire()

    def _retire(self) -> None:
        """Wait until the oldest bucket is broadcast and copied by every shared receiver, then drop it."""
        key, _, _, work = self.in_flight[0]
        if work is not None:
            work.wait()
        if self.link.shared_receivers:
            _wait_keys(self.link, self._acks(key), f"the copies of {key}")
        self._drop(self.in_flight.popleft())

    def _acks(self, key: str) -> list[str]:
        return [f"{key}/ack{i}" for i in range(self.link.shared_receivers)]

    def _drop(self, entry: tuple) -> None:
        """Forget one bucket: its store keys (handle and acknowledgements) and its shared-memory file."""
        key, _, path, _ = entry
        for k in [key, *self._acks(key)] if self.link.shared_receivers else []:
            self.link.store.delete_key(k)      # False, not an error, for a key never set
        if path is not None and os.path.exists(path):
            os.unlink(path)

    def finish(self) -> None:
        while self.in_flight:
            self._retire()
        if self.link.device.type == "cuda" and self.link.shared_receivers:
            torch.cuda.ipc_collect()       # free the blocks whose IPC references are all released

    def abort(self) -> None:
        """After an error: drop what is in flight, its shared-memory files and store keys included."""
        while self.in_flight:
            self._drop(self.in_flight.popleft())

    def __enter__(self) -> "BucketSender":
        return self

    def __exit__(self, kind, error, trace) -> None:
        """Without an error, finish (wait for every bucket's receivers); with one, abort."""
        if kind is None:
            self.finish()
        else:
            self.abort()


def receive_buckets(link: SyncLink, buckets: list[list[TensorSpec]], version: int) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs, one bucket at a time, in the order the sender sends them."""
    chunks = _shared_chunks(link, buckets, version) if link.member.route == Route.shared else _wire_chunks(link, buckets)
    for bucket, flat in zip(buckets, chunks):
        offset = 0
        for spec in bucket:
            yield spec.name, flat[offset:offset + spec.numel].view(spec.shape)
            offset += spec.numel


def _empty(link: SyncLink, bucket: list[TensorSpec]) -> torch.Tensor:
    return torch.empty(sum(s.numel for s in bucket), dtype=getattr(torch, bucket[0].dtype), device=link.device)


def _wire_chunks(link: SyncLink, buckets: list[list[TensorSpec]]) -> Iterator[torch.Tensor]:
    """Each bucket's flat buffer; the next is already arriving while the caller copies the current one."""
    def post(bucket):
        flat = _empty(link, bucket)
        return flat, link.wire.broadcast(flat, 0)

    pending = post(buckets[0]) if buckets else None
    for k in range(len(buckets)):
        flat, work = pending
        work.wait()
        pending = post(buckets[k + 1]) if k + 1 < len(buckets) else None
        yield flat


def _shared_chunks(link: SyncLink, buckets: list[list[TensorSpec]], version: int) -> Iterator[torch.Tensor]:
    """Each bucket copied out of the sender's buffer, acknowledged as soon as the copy is done."""
    for k, bucket in enumerate(buckets):
        key = _bucket_key(version, k)
        _wait_keys(link, [key], f"bucket {k} of version {version}")
        meta = json.loads(link.store.get(key))
        expected = (sum(s.numel for s in bucket), f"torch.{bucket[0].dtype}")
        if (meta["numel"], meta["dtype"]) != expected:
            raise ValueError(f"weight sync: {key} holds {meta['numel']} x {meta['dtype']}, the plan {expected}")
        view = import_buffer(meta)
        flat = view.to(link.device, copy=True)
        if flat.is_cuda:
            torch.cuda.current_stream(flat.device).synchronize()   # copied before the sender may free it
        del view
        link.store.set(f"{key}/ack{link.member.index}", b"1")
        yield flat
