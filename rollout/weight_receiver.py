"""vLLM worker extension (`LLM(worker_extension_cls="rollout.weight_receiver.WeightReceiver")`):
receives weight buckets inside the vLLM worker and reloads them in place. Its methods are reached
through `llm.collective_rpc`; tensors never travel as RPC arguments (those are msgpack-encoded)."""
from __future__ import annotations

from rollout.weight_sync import TensorSpec, open_group, receive_buckets


class WeightReceiver:
    def tether_join_sync_group(self, host: str, port: int, rank: int, world_size: int, timeout_s: float,
                               device_type: str) -> None:
        self.tether_sync_group = open_group(host, port, rank, world_size, timeout_s, device_type)

    def tether_receive_weights(self, buckets: list[list[list]]) -> None:
        plan = [[TensorSpec(name, list(shape), dtype) for name, shape, dtype in bucket] for bucket in buckets]
        # reload_weights repacks weights for the CPU kernels; model.load_weights alone would not.
        self.model_runner.reload_weights(weights_iterator=receive_buckets(self.tether_sync_group, plan),
                                         is_checkpoint_format=True)
