"""Attention for models trained on the CPU: eq. (3)'s bilinear-softmax-linear composition written out as
matmuls for short sequences, torch's fused kernel for long ones.

torch's CPU flash-attention kernel is slow backwards on short rows: on the demo's Llama (one thread, bf16
autocast) a training step on 48-token rows took 1.45x as long as with the scores computed explicitly, 1.21x on
160-token rows, 1.05x at 256 (docs/benchmarks.md, "Attention on the CPU"); beyond that the fused kernel is as
fast or faster. The scores of a short row are small ([B, H, T, T]), so writing them out costs little memory.

Under bf16 autocast the explicit scores are bf16 (as in transformers' eager attention), where the fused kernel
keeps them in fp32. Policies (the learners' causal LM and the reference policy) use it; reward models and critics
keep the fused kernel, because their small differences matter: with bf16 scores the demo's reward model reached
0.63 and 0.59 held-out pair accuracy on seeds 1 and 2 (at 0a4594d), where the fused kernel reached 0.71 and
0.69 (at 37348ef; docs/demo.md)."""
from __future__ import annotations

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

CPU_ATTENTION = "tether_cpu"
"""The name under which transformers dispatches to `cpu_attention` (its registries are keyed by name)."""

EXPLICIT_MAX_KEYS = 256
"""Rows of at most this many keys get explicit scores; longer ones the fused kernel (the crossover measured on
the demo's model lies near 256 keys on two threads, near 300 on one)."""


def explicit_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                       scaling: float, causal: bool, dropout: float = 0.0, training: bool = False) -> torch.Tensor:
    """softmax_s(<q_t, k_s> * scaling) v_s of eq. (3), one head at a time. query [B, H, T, d]; key, value
    [B, Hkv, S, d] (H a multiple of Hkv: grouped-query heads share a key head); mask [B or 1, 1, T, S] bool
    (True: attend) or None (causal, or no mask where `causal` is False). Returns [B, T, H, d]."""
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling                        # [B, H, T, S]
    if mask is None and causal:
        t, s = scores.shape[-2:]
        mask = torch.ones(t, s, dtype=torch.bool, device=scores.device).tril(s - t)    # query i sees keys <= i + s - t
    if mask is not None:
        # the dtype's lowest value, not -inf: a row with every key masked then averages instead of giving NaN
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    # the softmax in fp32 at least: bf16 scores keep 8 significant bits
    weights = scores.softmax(dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous()


def cpu_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                  **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: explicit scores up to EXPLICIT_MAX_KEYS keys, else
    transformers' sdpa path (which takes the same boolean masks, made by sdpa_mask)."""
    if key.shape[2] > EXPLICIT_MAX_KEYS or kwargs.get("cache") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if causal is None else causal
    out = explicit_attention(query, key, value, attention_mask, scaling, causal and query.shape[2] > 1, dropout,
                             module.training)
    return out, None


AttentionInterface.register(CPU_ATTENTION, cpu_attention)
AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)


def attention_for(model: PreTrainedModel, device: torch.device) -> PreTrainedModel:
    """`model` computing attention as fastest measured on `device`: a policy (a model that generates) on the CPU
    runs `cpu_attention` in place of transformers' sdpa. Elsewhere, a scalar-head model (reward model, critic: see
    above) and a model that runs another attention (e.g. eager, which soft-capped scores need) are unchanged. Its
    saved config is unaffected."""
    if device.type == "cpu" and model.can_generate() and model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(CPU_ATTENTION)
    return model
