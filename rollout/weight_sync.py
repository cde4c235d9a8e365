"""Moving weights from learner rank 0 to every rollout worker over a process group of their own
(gloo on CPU; not DeepSpeed's default group), in buckets of many tensors per broadcast.

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


def plan_buckets(specs: list[TensorSpec], bucket_bytes: int) -> list[list[TensorSpec]]:
    """Consecutive tensors of one dtype packed into buckets of at most bucket_bytes (a larger tensor
    travels alone)."""
    buckets: list[list[TensorSpec]] = []
    size = 0
    for spec in specs:
        nbytes = spec.numel * torch.empty(0, dtype=getattr(torch, spec.dtype)).element_size()
        if not buckets or size + nbytes > bucket_bytes or buckets[-1][0].dtype != spec.dtype:
            buckets.append([])
            size = 0
        buckets[-1].append(spec)
        size += nbytes
    return buckets


def open_group(host: str, port: int, rank: int, world_size: int, timeout_s: float) -> dist.ProcessGroupGloo:
    """Rank 0 (learner rank 0) hosts the rendezvous store; every member must call this at once."""
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(host, port, world_size, rank == 0, timeout=timeout)
    return dist.ProcessGroupGloo(store, rank, world_size, timeout)


class BucketSender:
    """Broadcasts flattened buckets with one in flight while the next is gathered and flattened."""

    def __init__(self, group: dist.ProcessGroupGloo):
        self.group, self.in_flight = group, None

    def send(self, tensors: list[torch.Tensor]) -> None:
        flat = torch.cat([t.detach().reshape(-1).cpu() for t in tensors])
        work = self.group.broadcast(flat, 0)
        self.finish()
        self.in_flight = (flat, work)  # the buffer must outlive its broadcast

    def finish(self) -> None:
        if self.in_flight is not None:
            self.in_flight[1].wait()
            self.in_flight = None


def receive_buckets(group: dist.ProcessGroupGloo, buckets: list[list[TensorSpec]]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs, one bucket at a time, in the order the sender sends them; the next
    bucket is already arriving while the caller copies the current one into the model."""
    def post(bucket: list[TensorSpec]):
        flat = torch.empty(sum(s.numel for s in bucket), dtype=getattr(torch, bucket[0].dtype))
        return flat, group.broadcast(flat, 0)

    pending = post(buckets[0]) if buckets else None
    for k, bucket in enumerate(buckets):
        flat, work = pending
        work.wait()
        pending = post(buckets[k + 1]) if k + 1 < len(buckets) else None
        offset = 0
        for spec in bucket:
            yield spec.name, flat[offset:offset + spec.numel].view(spec.shape)
            offset += spec.numel
