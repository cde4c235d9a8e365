"""LoRA adapters on a frozen backbone (peft), the continual-learning regulariser Omega of eq. (12), and the
conversions a learner needs: merged HF weights for the next stage, adapter-only tensors for a sync.

Eq. (12): theta_trainable^(k+1) = argmin_v L^(k+1)(theta_frozen, v) + lambda Omega(v, theta_trainable^(k)),
here with theta_frozen the backbone, v the adapter, and Omega = ||v - theta_trainable^(k)||^2 (L2 to the
previous adapter; a fresh adapter's "previous" is its initialisation, B = 0)."""
from __future__ import annotations

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
