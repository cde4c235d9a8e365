"""RolloutWorker: one engine (vLLM or the reference engine) behind one small interface, run as a
Ray actor. Calls run one at a time, so no generation ever sees half-loaded weights."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

from data.tasks import Task
from rollout.config import EngineKind, RolloutConfig
from rollout.episodes import BatchTurns, RemoteTools, VllmTurns, run_episodes
from rollout.types import FinishReason, Rollout, Sampling
from rollout.weight_sync import DeviceId, Member, TensorSpec, device_id, open_receiver, receive_buckets
from tools.config import EpisodeConfig
from tools.environment import make_environments
from tools.registry import run_tool


class VllmEngine:
    def __init__(self, model_dir: str, cfg: RolloutConfig):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine lives in this actor's process
        from vllm import LLM
        self.llm = LLM(model=model_dir, dtype=cfg.dtype, seed=cfg.seed, enforce_eager=True,
                       kv_cache_memory_bytes=int(cfg.kv_cache_gib * 2**30),
                       tensor_parallel_size=cfg.tensor_parallel_size, max_model_len=cfg.max_model_len,
                       enable_sleep_mode=cfg.colocate,
                       worker_extension_cls="rollout.weight_receiver.WeightReceiver",
                       **({"enable_lora": True, "max_lora_rank": cfg.lora_rank, "max_loras": 1} if cfg.lora_rank else {}))
        self.adapter = None          # the LoRARequest every generate call applies, once an adapter is loaded
        self.adapter_dir = Path(tempfile.mkdtemp(prefix="tether_adapter_"))

    def generate(self, prompts: list[list[int]], s: Sampling) -> list[list[tuple[list[int], list[float], FinishReason]]]:
        if s.seed is not None:
            # Per-request seeds crash vLLM's CPU worker; without one its sampler draws from torch's
            # global generator, which lives in this process (multiprocessing off).
            import torch
            torch.manual_seed(s.seed)
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], _params(s), use_tqdm=False,
                                 lora_request=self.adapter)
        return [[_completion(c) for c in out.outputs] for out in outs]

    def turns(self) -> VllmTurns:
        if self.adapter is not None:
            raise ValueError("multi-turn episodes do not serve a LoRA adapter yet (rollout.lora_rank: 0)")
        return VllmTurns(self.llm, _params, _completion)

    def load_adapter(self, tensors: dict, config: dict, version: int) -> None:
        """Serve a new LoRA adapter (peft's tensor names and adapter_config fields) on the unchanged base
        weights: written to this worker's folder as peft saves it, loaded under a new id, the old one dropped."""
        from safetensors.torch import save_file
        from vllm.lora.request import LoRARequest
        folder = self.adapter_dir / f"v{version}"
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(json.dumps(config))
        request = LoRARequest(f"policy-v{version}", version + 1, str(folder))
        self.llm.llm_engine.add_lora(request)
        if self.adapter is not None:
            self.llm.llm_engine.remove_lora(self.adapter.lora_int_id)
            shutil.rmtree(self.adapter.lora_path, ignore_errors=True)
        self.adapter = request
        self.llm.reset_prefix_cache()

    def vocab_size(self) -> int:
        return self.llm.llm_engine.model_config.get_vocab_size()

    def join_sync_group(self, host: str, port: int, member: Member, wire_world: int, timeout_s: float) -> None:
        # collective_rpc arguments are msgpack-encoded: plain values only
        self.llm.collective_rpc("tether_join_sync_group",
                                args=(host, port, member.route.value, member.index, wire_world, timeout_s))

    def receive_weights(self, buckets: list[list[TensorSpec]], version: int) -> None:
        plan = [[[s.name, s.shape, s.dtype] for s in bucket] for bucket in buckets]
        self.llm.collective_rpc("tether_receive_weights", args=(plan, version))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights

    def sleep(self) -> None:
        self.llm.sleep(level=1)  # weights to host memory, KV cache dropped

    def wake_up(self, tags: list[str] | None) -> None:
        self.llm.wake_up(tags)


def _params(s: Sampling):
    from vllm import SamplingParams
    return SamplingParams(n=s.n, temperature=max(s.temperature, 0.0), top_k=s.top_k, top_p=s.top_p,
                          max_tokens=s.max_new_tokens, min_tokens=s.min_new_tokens, stop=s.stop or None, logprobs=0)


def _completion(c) -> tuple[list[int], list[float], FinishReason]:
    ids = list(c.token_ids)
    logprobs = [step[token].logprob for step, token in zip(c.logprobs, ids)]
    if c.finish_reason == "length":
        reason = FinishReason.length
    else:
        reason = FinishReason.stop if isinstance(c.stop_reason, str) else FinishReason.eos
    return ids, logprobs, reason


class ReferenceWorkerEngine:
    """The reference engine plus the weight-sync endpoint that vLLM gets from its worker extension."""

    def __init__(self, model_dir: str, cfg: RolloutConfig):
        from modeling.model import role_device
        from rollout.reference_engine import ReferenceEngine
        self.engine = ReferenceEngine(model_dir, cfg.seed, role_device(cfg.gpus_per_worker, "rollout worker"), cfg.dtype,
                                      cfg.reference_batch_size)
        self.link = None

    def generate(self, prompts, s):
        return self.engine.generate(prompts, s)

    def turns(self) -> BatchTurns:
        return BatchTurns(self.engine)

    def vocab_size(self) -> int:
        return self.engine.model.config.vocab_size

    def join_sync_group(self, host: str, port: int, member: Member, wire_world: int, timeout_s: float) -> None:
        self.link = open_receiver(host, port, member, wire_world, timeout_s, self.engine.device)

    def receive_weights(self, buckets: list[list[TensorSpec]], version: int) -> None:
        self.engine.load_weights(receive_buckets(self.link, buckets, version))

    def sleep(self) -> None:
        self.engine.offload()

    def wake_up(self, tags: list[str] | None) -> None:
        self.engine.reload()


ENGINES = {EngineKind.vllm: VllmEngine, EngineKind.reference: ReferenceWorkerEngine}


class RolloutWorker:
    def __init__(self, index: int, model_dir: str, cfg: RolloutConfig, version: int):
        self.index, self.cfg, self.version, self.model_dir = index, cfg, version, model_dir
        self.tokenizer = None        # loaded on the first episode (the environment tokenises observations)
        self.engine = ENGINES[cfg.engine](model_dir, cfg)

    def generate(self, prompts: list[list[int]], s: Sampling) -> list[list[Rollout]]:
        """n Rollouts per prompt, stamped with the version of the weights that sampled them. A seeded
        Sampling is offset by the worker's index, so that workers draw different streams."""
        if s.seed is not None:
            s = dataclasses.replace(s, seed=s.seed + self.index)
        return [[Rollout(p, ids, lps, reason, self.version) for ids, lps, reason in samples]
                for p, samples in zip(prompts, self.engine.generate(prompts, s))]

    def run_episodes(self, tasks: list[Task], s: Sampling, cfg: EpisodeConfig,
                     tool_workers: list | None = None) -> list[Rollout]:
        """One multi-turn episode per task (token in, token out), each with its own environment. Tool calls go to
        the tool pool's workers when given, else run on threads here; each is bounded by its tool's timeout.
        A seeded Sampling is offset by the worker's index."""
        from data.tokenizer import load_tokenizer
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.model_dir)
        if s.seed is not None:
            import torch
            torch.manual_seed(s.seed + self.index)
        call_tool = RemoteTools(tool_workers) if tool_workers else run_tool
        envs = make_environments(cfg, self.tokenizer, len(tasks), call_tool)
        return run_episodes(self.engine.turns(), envs, tasks, dataclasses.replace(s, seed=None), cfg.max_episode_tokens,
                            self.version)

    def device_id(self) -> DeviceId:
        """Where this worker's engine holds its weights (the weight sync picks the route from it)."""
        import ray

        from modeling.model import role_device
        return device_id(ray.get_runtime_context().get_node_id(), role_device(self.cfg.gpus_per_worker, "rollout worker"))

    def join_sync_group(self, host: str, port: int, member: Member, wire_world: int, timeout_s: float) -> None:
        self.engine.join_sync_group(host, port, member, wire_world, timeout_s)

    def receive_weights(self, buckets: list[list[TensorSpec]], version: int) -> int:
        self.engine.receive_weights(buckets, version)
        self.version = version
        return version

    def load_adapter(self, tensors: dict, config: dict, version: int) -> int:
        """An adapter-only sync (rollout.lora_rank > 0)."""
        if not isinstance(self.engine, VllmEngine):
            raise ValueError("adapter-only weight sync needs the vllm engine (rollout.engine=vllm)")
        self.engine.load_adapter(tensors, config, version)
        self.version = version
        return version

    def sleep(self) -> None:
        """Colocated mode: give the GPU to the learners."""
        self.engine.sleep()

    def wake_up(self, tags: list[str] | None = None) -> None:
        """tags: vLLM's memory kinds to bring back ("weights", "kv_cache"); None: all."""
        self.engine.wake_up(tags)

    def policy_version(self) -> int:
        return self.version

    def weights(self) -> dict:
        """The reference engine's weights, copied to the CPU (the sync parity checks read them)."""
        if not isinstance(self.engine, ReferenceWorkerEngine):
            raise ValueError("weights: only the reference engine exposes its weights (rollout.engine=reference)")
        return {k: v.detach().to("cpu", copy=True) for k, v in self.engine.engine.model.state_dict().items()}

    def vocab_size(self) -> int:
        return self.engine.vocab_size()
