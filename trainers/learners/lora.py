"""LoRA adapters on a frozen backbone (peft), the continual-learning regulariser Omega of eq. (12), and the
conversions a learner needs: merged HF weights for the next stage, adapter-only tensors for a sync.

Eq. (12): theta_trainable^(k+1) = argmin_v L^(k+1)(theta_frozen, v) + lambda Omega(v, theta_trainable^(k)),
here with theta_frozen the backbone and v the adapter. Two Omegas: L2 to the previous adapter,
||v - theta_trainable^(k)||^2 (a fresh adapter's "previous" is its initialisation, B = 0); or EWC,
sum_i F_i (Delta W_i)^2 over the merged model's adapted weights, F the diagonal Fisher information of the
starting model on the old corpus, so that weights the old corpus depends on move least."""
from __future__ import annotations

from typing import Callable

import torch

from trainers.config import LoraConfig

ADAPTER_PREFIX = "base_model.model."


def add_adapters(model: torch.nn.Module, cfg: LoraConfig) -> torch.nn.Module:
    """The peft model: adapters on cfg.targets, every other weight frozen."""
    import peft
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in cfg.targets if t not in present]
    if missing:
        raise ValueError(f"lora.targets {missing} name no module of this model (e.g. {sorted(present)[:8]})")
    spec = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.targets), lora_dropout=0.0,
                           bias="none")
    return peft.get_peft_model(model, spec)


def adapter_anchor(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the trainable (adapter) weights: the theta_trainable^(k) Omega pulls towards."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def omega_l2(model: torch.nn.Module, anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """Omega(v, theta^(k)) = sum over adapter weights of ||v - theta^(k)||^2 (a scalar)."""
    params = dict(model.named_parameters())
    return sum(((params[n] - a) ** 2).sum() for n, a in anchor.items())


def adapted_weights(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Module name -> the frozen base weight W [out, in] of each adapted layer."""
    from peft.tuners.lora import LoraLayer
    return {name: m.base_layer.weight for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def adapter_updates(model: torch.nn.Module, scale: float) -> dict[str, torch.Tensor]:
    """Module name -> Delta W = scale * B A [out, in], what the adapter adds to that layer's W."""
    from peft.tuners.lora import LoraLayer
    return {name: scale * (m.lora_B["default"].weight @ m.lora_A["default"].weight)    # [out, r] @ [r, in]
            for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def omega_ewc(updates: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor]) -> torch.Tensor:
    """Omega = sum_i F_i (Delta W_i)^2 (a scalar): EWC's quadratic penalty around the starting weights, which a
    fresh adapter (B = 0, Delta W = 0) sits at."""
    return sum((fisher[n] * u.float() ** 2).sum() for n, u in updates.items())


def squared_gradients(model: torch.nn.Module, rows: torch.Tensor,
                      loss_of: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Module name -> sum over rows [N, T+1] of (d loss_of(row) / d W)^2 for each adapted layer's W, computed with
    the adapters off (the starting model): the empirical diagonal Fisher information, times N."""
    weights = adapted_weights(model)
    sums = {n: torch.zeros_like(w, dtype=torch.float32) for n, w in weights.items()}
    for w in weights.values():
        w.requires_grad_(True)
    try:
        with model.disable_adapter():
            for row in rows:
                grads = torch.autograd.grad(loss_of(row[None]), list(weights.values()))
                for total, g in zip(sums.values(), grads):
                    total += g.float() ** 2
    finally:
        for w in weights.values():
            w.requires_grad_(False)
    return sums


def merged_state_dict(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A peft model's full state dict -> the plain model's, with W + scale * B A folded into each adapted W."""
    out = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        name = key.removeprefix(ADAPTER_PREFIX).replace(".base_layer.", ".")
        a_key = key.replace(".base_layer.weight", ".lora_A.default.weight")
        if key.endswith(".base_layer.weight") and a_key in state:
            b = state[key.replace(".base_layer.weight", ".lora_B.default.weight")]
            value = value + scale * (b.float() @ state[a_key].float()).to(value.dtype)   # [out, r] @ [r, in]
        out[name] = value
    return out


def adapter_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter tensors under the names peft writes into adapter_model.safetensors (vLLM reads those)."""
    return {k.replace(".default.", "."): v for k, v in state.items() if ".lora_" in k}


def adapter_scale(cfg: LoraConfig) -> float:
    return cfg.alpha / cfg.rank
