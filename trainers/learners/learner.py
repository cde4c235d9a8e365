"""The learner: one data-parallel rank of the policy under DeepSpeed ZeRO 0-3.

Run as a Ray actor (cluster.groups.start_learners); plain Python otherwise, so that it can be
tested without Ray. Every rank holds a shard (ZeRO 1-3) or a replica (ZeRO 0) of the model;
calls marked "collective" must be made on every rank at once."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from modeling.attention import attention_for
from modeling.model import ModelHead, compile_blocks, computes_in_bf16, load_model, role_device
from rollout.weight_sync import BucketSender, DeviceId, TensorSpec, device_id, open_sender
from trainers.config import LearnerConfig, Optimizer, Regulariser
from trainers.learners.batches import EvalSums, PairBatch, PairStepResult, StepResult, TokenBatch
from trainers.learners.lora import (
    adapter_anchor,
    adapter_scale,
    adapter_state_dict,
    adapter_updates,
    add_adapters,
    merged_state_dict,
    omega_ewc,
    omega_l2,
    squared_gradients,
)
from trainers.learners.schedule import warmup_cosine
from trainers.losses.lm import bradley_terry_loss, token_logprobs, token_nll


class Learner:
    def __init__(self, rank: int, world_size: int, cfg: LearnerConfig, total_steps: int):
        self.rank, self.world_size, self.cfg, self.total_steps = rank, world_size, cfg, total_steps
        torch.set_num_threads(cfg.threads_per_rank)
        self.device = role_device(cfg.gpus_per_rank, "learner")
        self.bf16 = computes_in_bf16(cfg.precision, self.device)
        self.engine = None
        self.fisher: dict[str, torch.Tensor] | None = None

    def node_address(self) -> tuple[str, int]:
        """This node's address and a free port, for the process-group rendezvous (rank 0)."""
        host = "127.0.0.1" if self._single_node() else socket.gethostbyname(socket.gethostname())
        with socket.socket() as s:
            s.bind((host, 0))
            return host, s.getsockname()[1]

    @staticmethod
    def _single_node() -> bool:
        import ray
        return len([n for n in ray.nodes() if n["Alive"]]) == 1

    def setup(self, master_addr: str, port: int, model_dir: str, head: ModelHead = ModelHead.causal_lm) -> int:
        """Collective: join the process group, load the model from `model_dir` (as a policy, or as a
        reward model with a scalar head), wrap it in DeepSpeed. Returns the number of parameters."""
        import deepspeed
        # DeepSpeed JIT-compiles a shared-memory op (~30 s on CPU) used only by inference all-reduce.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        timeout = timedelta(seconds=self.cfg.timeout_s)
        # DeepSpeed reads the launcher's variables; Ray is our launcher, and one rank per device.
        os.environ.update(RANK=str(self.rank), WORLD_SIZE=str(self.world_size), LOCAL_RANK="0",
                          MASTER_ADDR=master_addr, MASTER_PORT=str(port))
        torch.distributed.init_process_group(backend, init_method=f"tcp://{master_addr}:{port}", rank=self.rank,
                                             world_size=self.world_size, timeout=timeout)
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, timeout=timeout)
        model = attention_for(load_model(model_dir, head).to(self.device), self.device)
        if self.cfg.compile:
            compile_blocks(model)
        if cfg_lora := self.cfg.lora:
            model = add_adapters(model, cfg_lora)
            self.anchor = adapter_anchor(model)          # theta_trainable^(k) of eq. (12)
        optimizer = self._optimizer(model)
        cfg = self.cfg

        def schedule(opt):
            return torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: warmup_cosine(s, cfg.warmup_steps, self.total_steps, cfg.min_lr_ratio))

        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule,
                                                    config=self._ds_config(), dist_init_required=False)
        return sum(p.numel() for p in model.parameters())

    def _optimizer(self, model) -> torch.optim.Optimizer:
        trainable = [p for p in model.parameters() if p.requires_grad]    # LoRA: the adapters only
        if self.cfg.optimizer == Optimizer.sgd:
            return torch.optim.SGD(trainable, lr=self.cfg.lr)
        decay = [p for p in trainable if p.dim() >= 2]
        no_decay = [p for p in trainable if p.dim() < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}],
                                 lr=self.cfg.lr, betas=tuple(self.cfg.betas),
                                 fused=self.device.type == "cuda")   # one kernel for all tensors on a GPU

    def _ds_config(self) -> dict:
        c = self.cfg
        return {
            "train_micro_batch_size_per_gpu": c.micro_batch,
            "gradient_accumulation_steps": c.grad_accum,
            "train_batch_size": c.micro_batch * c.grad_accum * self.world_size,
            "gradient_clipping": c.grad_clip,
            "zero_optimization": {"stage": c.zero_stage},
            "zero_allow_untested_optimizer": True,
            # bf16 compute inside the engine (an autocast opened outside it is switched off there), fp32 weights
            # and optimizer state as before; no lower-precision modules, so gradients are reduced in fp32.
            "torch_autocast": {"enabled": self.bf16, "dtype": "bfloat16", "lower_precision_safe_modules": []},
            "steps_per_print": 2**31 - 1,
        }

    def _logits(self, input_ids: torch.Tensor, module: torch.nn.Module | None = None) -> torch.Tensor:
        """The model's output at every position [B, T, ...] at the configured precision. `module` defaults to the
        DeepSpeed engine, which applies its own torch_autocast section; the bare module skips the engine's hooks
        (a backward through its forward reduces gradients across ranks) and gets the same autocast here."""
        if module is None:
            return self.engine(input_ids=input_ids).logits
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return module(input_ids=input_ids).logits

    def _forward_nll(self, tokens: torch.Tensor, mask: torch.Tensor | None,
                     module: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return token_nll(self._logits(tokens[:, :-1], module), tokens[:, 1:], mask)     # eq. (9)

    def train_step(self, batch: TokenBatch) -> StepResult:
        """Collective: one optimizer step over this rank's grad_accum micro-batches."""
        self.engine.train()
        tokens = torch.tensor(batch.tokens, device=self.device)
        mask = torch.tensor(batch.loss_mask, device=self.device) if batch.loss_mask is not None else None
        micro = self._micro_batch(len(tokens), "sequences")
        # DeepSpeed divides each micro-batch loss by grad_accum and averages gradients over ranks;
        # scaling by (grad_accum * world / global_targets) turns that into a token mean over the global batch.
        scale = self.cfg.grad_accum * self.world_size / batch.global_targets
        lr = self.engine.get_lr()[0]
        nll_total, targets_total, compute_s, step_s = 0.0, 0, 0.0, 0.0
        for i in range(self.cfg.grad_accum):
            rows = slice(i * micro, (i + 1) * micro)
            start = time.perf_counter()
            nll_sum, targets = self._forward_nll(tokens[rows], mask[rows] if mask is not None else None)
            self.engine.backward(nll_sum * scale + self._omega())
            middle = time.perf_counter()
            grad_norm = self._optimizer_step(last=i == self.cfg.grad_accum - 1)
            compute_s, step_s = compute_s + middle - start, step_s + time.perf_counter() - middle
            nll_total += nll_sum.item()
            targets_total += int(targets.item())
        return StepResult(nll_total, targets_total, grad_norm, lr, compute_s, step_s)

    def _omega(self) -> torch.Tensor | float:
        """lambda Omega of eq. (12), added to every micro-batch's loss: DeepSpeed divides each by grad_accum and
        averages over ranks, so the step's gradient holds it exactly once."""
        lora = self.cfg.lora
        if lora is None or lora.omega == 0:
            return 0.0
        if lora.regulariser == Regulariser.l2:
            return lora.omega * omega_l2(self.engine.module, self.anchor)
        if self.fisher is None:
            raise RuntimeError("lora.regulariser=ewc: the Fisher information was not estimated (estimate_fisher)")
        return lora.omega * omega_ewc(adapter_updates(self.engine.module, adapter_scale(lora)), self.fisher)

    def estimate_fisher(self, batch: TokenBatch) -> float:
        """Collective: the diagonal Fisher information of the starting model on old-corpus rows (this rank's share),
        summed over all ranks' rows and normalised to mean 1, kept for EWC's Omega. Returns the mean before."""
        self.engine.eval()
        tokens = torch.tensor(batch.tokens, device=self.device)

        def row_nll(row: torch.Tensor) -> torch.Tensor:
            nll_sum, targets = self._forward_nll(row, None, self.engine.module)   # no gradient reduction
            return nll_sum / targets                                               # a token mean

        sums = squared_gradients(self.engine.module, tokens, row_nll)
        total = torch.tensor([float(len(tokens))], device=self.device)
        for t in [*sums.values(), total]:
            torch.distributed.all_reduce(t)
        mean = sum(float(s.sum()) for s in sums.values()) / sum(s.numel() for s in sums.values()) / float(total)
        if not mean > 0:
            raise ValueError("the Fisher information is zero: the old-corpus rows give no gradient")
        self.fisher = {n: s / (float(total) * mean) for n, s in sums.items()}
        return mean

    def _micro_batch(self, rows: int, what: str) -> int:
        """micro_batch, after checking that this rank got micro_batch x grad_accum rows."""
        if rows != self.cfg.micro_batch * self.cfg.grad_accum:
            raise ValueError(f"rank {self.rank}: got {rows} {what}, expected micro_batch x grad_accum "
                             f"= {self.cfg.micro_batch * self.cfg.grad_accum}")
        return self.cfg.micro_batch

    def _optimizer_step(self, last: bool) -> float | None:
        """engine.step() after a micro-batch's backward (DeepSpeed updates only after the last one).
        On the last, returns the global gradient norm before clipping, else None."""
        # ZeRO 0 leaves the reduced gradients on the parameters; ZeRO 1-3 compute the norm inside the step.
        grad_norm = self._reduced_grad_norm() if last and self.cfg.zero_stage == 0 else None
        self.engine.step()
        if last and grad_norm is None:
            grad_norm = float(self.engine.get_global_grad_norm() or 0.0)
        return grad_norm

    def _reduced_grad_norm(self) -> float:
        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0

    def _rewards(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._logits(tokens)[:, 0].float()                              # [B]: R_phi at the last non-pad token

    def train_pairs(self, batch: PairBatch) -> PairStepResult:
        """Collective (scalar head): one optimizer step of Bradley-Terry loss over this rank's pairs."""
        self.engine.train()
        micro = self._micro_batch(len(batch.chosen), "pairs")
        scale = self.cfg.grad_accum * self.world_size / batch.global_pairs  # a mean over the global batch
        lr = self.engine.get_lr()[0]
        loss_total, correct = 0.0, 0
        for i in range(self.cfg.grad_accum):
            rows = slice(i * micro, (i + 1) * micro)
            both = torch.tensor(np.concatenate([batch.chosen[rows], batch.rejected[rows]]), device=self.device)
            rewards = self._rewards(both)                                        # [2 micro]
            losses = bradley_terry_loss(rewards[:micro], rewards[micro:],
                                        torch.tensor(batch.margin[rows], device=self.device))  # [micro]
            self.engine.backward(losses.sum() * scale)
            grad_norm = self._optimizer_step(last=i == self.cfg.grad_accum - 1)
            loss_total += losses.sum().item()
            correct += int((rewards[:micro] > rewards[micro:]).sum())
        return PairStepResult(loss_total, len(batch.chosen), correct, grad_norm, lr)

    @torch.no_grad()
    def reward_scores(self, tokens: np.ndarray) -> np.ndarray:
        """Collective under ZeRO-3 (scalar head): R_phi of each right-padded row of tokens [B, T] -> [B]."""
        self.engine.eval()
        return self._rewards(torch.tensor(tokens, device=self.device)).cpu().numpy()

    @torch.no_grad()
    def evaluate(self, batch: TokenBatch) -> EvalSums:
        """Collective under ZeRO-3 (parameters are gathered layer by layer)."""
        self.engine.eval()
        tokens = torch.tensor(batch.tokens, device=self.device)
        mask = torch.tensor(batch.loss_mask, device=self.device) if batch.loss_mask is not None else None
        nll_sum, targets = self._forward_nll(tokens, mask)
        return EvalSums(float(nll_sum), int(targets))

    @torch.no_grad()
    def logprobs(self, batch: TokenBatch) -> list[np.ndarray]:
        """Collective under ZeRO-3: log pi_theta(x_{t+1} | x_<=t) of every target token of every row, in fp32,
        with no temperature (the model's own distribution). Returns one [T] array per row."""
        self.engine.eval()
        logp, _ = self._target_logprobs(torch.tensor(batch.tokens, device=self.device))
        return list(logp.cpu().numpy())

    def _target_logprobs(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward pass over tokens [B, T+1]: (log pi_theta of each target [B, T] in fp32, logits [B, T, V])."""
        logits = self._logits(tokens[:, :-1])                                      # [B, T, V]
        return token_logprobs(logits, tokens[:, 1:]), logits

    def device_type(self) -> str:
        return self.device.type

    def weight_specs(self) -> list[TensorSpec]:
        """Names, full shapes and dtypes of the weights a sync sends. Tied weights go under both names:
        vLLM's CPU backend keeps its own repacked copy of lm_head even when it is tied to the embedding."""
        return [TensorSpec(name, list(getattr(p, "ds_shape", p.shape)), str(p.dtype).removeprefix("torch."))
                for name, p in self._sync_tensors().items()]

    def _sync_tensors(self) -> dict[str, torch.Tensor]:
        """HF name -> the tensor a full sync sends (with LoRA: the merged weight W + (alpha/r) B A)."""
        params = dict(self.engine.module.named_parameters(remove_duplicate=False))
        if self.cfg.lora is None:
            return params
        return merged_state_dict({k: p.data for k, p in params.items()}, adapter_scale(self.cfg.lora))

    def adapter_payload(self) -> tuple[dict[str, torch.Tensor], dict]:
        """The adapter alone, as an adapter-only sync moves it: its tensors under peft's file names, and the
        adapter_config fields a LoRA-serving engine reads (ZeRO 0-2: every rank holds the whole adapter)."""
        if self.cfg.lora is None:
            raise ValueError("an adapter-only sync needs learner.lora (rollout.lora_rank > 0)")
        tensors = adapter_state_dict({k: p.detach().to("cpu", copy=True)
                                      for k, p in self.engine.module.named_parameters() if p.requires_grad})
        config = json.loads(json.dumps(self.engine.module.peft_config["default"].to_dict(), default=sorted))
        return tensors, config

    def device_id(self) -> DeviceId:
        """Where this rank's tensors live (the weight sync picks each worker's route from it)."""
        import ray
        return device_id(ray.get_runtime_context().get_node_id(), self.device)

    def join_weight_sync(self, host: str, port: int, wire_world: int, shared_receivers: int) -> None:
        """Rank 0 hosts the sync store and joins the wire group (of wire_world members) as its rank 0."""
        if self.rank == 0:
            self.sync_link = open_sender(host, port, wire_world, shared_receivers, self.cfg.timeout_s, self.device)

    def push_weights(self, buckets: list[list[TensorSpec]], version: int) -> None:
        """Collective: under ZeRO-3 every rank gathers each bucket's shards; rank 0 sends it, tagged `version`."""
        import deepspeed
        params = self._sync_tensors()
        sender = BucketSender(self.sync_link, version) if self.rank == 0 else None
        with sender if sender is not None else contextlib.nullcontext():   # on an error: no buffer or key left
            for bucket in buckets:
                tensors = [params[spec.name] for spec in bucket]
                distinct = list({id(t): t for t in tensors}.values())
                with deepspeed.zero.GatheredParameters(distinct, enabled=self.cfg.zero_stage == 3):
                    if sender is not None:
                        sender.send([t.data for t in tensors])

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Collective: the full fp32 weights (gathered from the ZeRO-3 shards) on rank 0; None elsewhere."""
        import deepspeed
        module = self.engine.module
        params = list(module.parameters())
        with deepspeed.zero.GatheredParameters(params, enabled=self.cfg.zero_stage == 3):
            if self.rank != 0:
                return None
            return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}

    def save(self, checkpoint_dir: str, hf_dir: str) -> None:
        """Collective: DeepSpeed state (optimizer, scheduler, shards) to checkpoint_dir/ds, this rank's
        RNG state beside it, and on rank 0 a full HF checkpoint (safetensors) to hf_dir."""
        self.engine.save_checkpoint(checkpoint_dir, tag="ds")
        torch.save({"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
                   Path(checkpoint_dir, f"rng_rank{self.rank}.pt"))
        state = self.full_state_dict()
        if self.rank != 0:
            return
        if self.cfg.lora is None:
            self.engine.module.save_pretrained(hf_dir, state_dict=state, safe_serialization=True)
            return
        # the merged model is what later stages and the rollout workers load; the adapter is kept beside it
        base = self.engine.module.get_base_model()
        base.save_pretrained(hf_dir, state_dict=merged_state_dict(state, adapter_scale(self.cfg.lora)),
                             safe_serialization=True)
        self.engine.module.save_pretrained(str(Path(checkpoint_dir, "adapter")), safe_serialization=True)

    def load(self, checkpoint_dir: str) -> None:
        """Collective: restore what save() wrote (weights, optimizer, LR step, RNG)."""
        path, _ = self.engine.load_checkpoint(checkpoint_dir, tag="ds")
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint in {checkpoint_dir}/ds")
        rng = torch.load(Path(checkpoint_dir, f"rng_rank{self.rank}.pt"), weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
