"""The reference engine: plain transformers with a KV cache (Part 3 of the paper) and sampling
with temperature, top-k and top-p from eq. (1)/(10). Small and slow; the check on faster engines."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Sampling:
    temperature: float = 1.0
    """tau in eq. (1); <= 0 means greedy (argmax), the tau -> 0 limit."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = all)."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability reaches top_p, in (0, 1]."""
    max_new_tokens: int = 64
    """Stop after this many generated tokens."""
    seed: Optional[int] = None
    """Seeds the sampler (None: nondeterministic)."""

    def __post_init__(self):
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}: must be >= 0")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}: must be >= 1")


def next_token_distribution(logits: torch.Tensor, s: Sampling) -> torch.Tensor:
    """pi_t^tau = softmax(z_t / tau), eq. (1), restricted to the top-k / top-p set and renormalised.
    logits [B, V] -> probabilities [B, V]."""
    z = logits.float() / s.temperature                                        # [B, V]
    if s.top_k:
        kth = torch.topk(z, min(s.top_k, z.shape[-1]), dim=-1).values[:, -1:]  # [B, 1]
        z = z.masked_fill(z < kth, float("-inf"))
    probs = torch.softmax(z, dim=-1)
    if s.top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p                     # mass of strictly likelier tokens
        sorted_p = sorted_p.masked_fill(before >= s.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


@torch.no_grad()
def generate(model, prompt_ids: list[int], s: Sampling, eos_id: int | None) -> list[int]:
    """Sample a continuation of one prompt, one token at a time, reusing the KV cache: each new
    token costs one forward over one position instead of over the whole prefix."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if s.seed is not None:
        generator.manual_seed(s.seed)
    else:
        generator.seed()
    ids = torch.tensor([prompt_ids], device=device)
    out = model(input_ids=ids, use_cache=True)
    cache, logits, new = out.past_key_values, out.logits[:, -1], []
    for _ in range(s.max_new_tokens):
        if s.temperature <= 0:
            token = int(logits.argmax(dim=-1))
        else:
            token = int(torch.multinomial(next_token_distribution(logits, s), 1, generator=generator))
        new.append(token)
        if token == eos_id:
            break
        out = model(input_ids=torch.tensor([[token]], device=device), past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
    return new
