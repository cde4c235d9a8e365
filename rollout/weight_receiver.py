"""vLLM worker extension (`LLM(worker_extension_cls="rollout.weight_receiver.WeightReceiver")`):
receives weight buckets inside the vLLM worker and loads them in place. Its methods are reached
through `llm.collective_rpc` (vLLM >= 0.11); tensors never travel as RPC arguments (those are
msgpack-encoded): they come over the sync link, by CUDA IPC handle from learner rank 0 when this
worker shares its GPU, else by broadcast."""
from __future__ import annotations

import inspect

import torch

from rollout.weight_sync import Member, Route, TensorSpec, open_receiver, receive_buckets


class WeightReceiver:
    def tether_join_sync_group(self, host: str, port: int, route: str, index: int, wire_world: int,
                               timeout_s: float) -> None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        self.tether_sync_link = open_receiver(host, port, Member(Route(route), index), wire_world, timeout_s, device)

    def tether_receive_weights(self, buckets: list[list[list]], version: int) -> None:
        plan = [[TensorSpec(name, list(shape), dtype) for name, shape, dtype in bucket] for bucket in buckets]
        weights = receive_buckets(self.tether_sync_link, plan, version)
        runner = self.model_runner
        if "weights_iterator" in inspect.signature(runner.reload_weights).parameters:
            # reload_weights also repacks weights for the CPU kernels; model.load_weights alone would not.
            runner.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
        else:
            runner.model.load_weights(weights=weights)   # releases before reload_weights took an iterator (GPU)
