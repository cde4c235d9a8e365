"""Moving weights from learner rank 0 to every rollout worker over a process group of their own
(gloo on CPU, NCCL on GPU; not DeepSpeed's default group), in buckets of many tensors per broadcast.

Both sides plan the same buckets from the same TensorSpec list, so only raw bytes cross the wire."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist


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


@dataclass
class SyncGroup:
    """The weight-sync process group and the device its buffers live on (cpu: gloo, cuda: NCCL)."""
    group: dist.ProcessGroup
    device: torch.device


def open_group(host: str, port: int, rank: int, world_size: int, timeout_s: float, device_type: str) -> SyncGroup:
    """Rank 0 (learner rank 0) hosts the rendezvous store; every member must call this at once, all
    with the same device_type ("cuda": NCCL on this process's current GPU; "cpu": gloo). The group is
    built from its own store, so it never touches the default group of DeepSpeed or of vLLM's workers."""
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(host, port, world_size, rank == 0, timeout=timeout)
    if device_type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return SyncGroup(dist.ProcessGroupNCCL(store, rank, world_size, options), device)
    return SyncGroup(dist.ProcessGroupGloo(store, rank, world_size, timeout), torch.device("cpu"))


class BucketSender:
    """Broadcasts flattened buckets with one in flight while the next is gathered and flattened."""

    def __init__(self, sync: SyncGroup):
        self.sync, self.in_flight = sync, None

    def send(self, tensors: list[torch.Tensor]) -> None:
        flat = torch.cat([t.detach().reshape(-1).to(self.sync.device) for t in tensors])
        work = self.sync.group.broadcast(flat, 0)
        self.finish()
        self.in_flight = (flat, work)  # the buffer must outlive its broadcast

    def finish(self) -> None:
        if self.in_flight is not None:
            self.in_flight[1].wait()
            self.in_flight = None


def receive_buckets(sync: SyncGroup, buckets: list[list[TensorSpec]]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs, one bucket at a time, in the order the sender sends them; the next
    bucket is already arriving while the caller copies the current one into the model."""
    def post(bucket: list[TensorSpec]):
        flat = torch.empty(sum(s.numel for s in bucket), dtype=getattr(torch, bucket[0].dtype), device=sync.device)
        return flat, sync.group.broadcast(flat, 0)

    pending = post(buckets[0]) if buckets else None
    for k, bucket in enumerate(buckets):
        flat, work = pending
        work.wait()
        pending = post(buckets[k + 1]) if k + 1 < len(buckets) else None
        offset = 0
        for spec in bucket:
            yield spec.name, flat[offset:offset + spec.numel].view(spec.shape)
            offset += spec.numel
