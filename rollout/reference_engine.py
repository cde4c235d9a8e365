"""The reference engine: plain transformers with a KV cache (Part 3 of the paper) and sampling
with temperature, top-k and top-p from eq. (1)/(10). Small and slow; the check on faster engines."""
from __future__ import annotations

import torch

from rollout.types import FinishReason, Sampling


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
def sample_continuation(model, prompt_ids: list[int], s: Sampling, eos_id: int | None, generator: torch.Generator,
                        stopped=lambda ids: False) -> tuple[list[int], list[float], FinishReason]:
    """Sample one continuation token by token, reusing the KV cache: each new token costs one forward
    over one position instead of over the whole prefix. Returns (token ids, log pi of each under the
    untempered model, why it ended)."""
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True)
    cache, raw = out.past_key_values, out.logits[:, -1].float()               # [1, V]
    ids, logprobs = [], []
    for step in range(s.max_new_tokens):
        logits = raw
        if step < s.min_new_tokens and eos_id is not None:
            logits = raw.clone()
            logits[:, eos_id] = float("-inf")  # sampling only: the logprob below stays the model's own
        if s.temperature <= 0:
            token = int(logits.argmax(dim=-1))
        else:
            token = int(torch.multinomial(next_token_distribution(logits, s), 1, generator=generator))
        ids.append(token)
        logprobs.append(float(torch.log_softmax(raw, dim=-1)[0, token]))
        if token == eos_id:
            return ids, logprobs, FinishReason.eos
        if step + 1 >= s.min_new_tokens and stopped(ids):
            return ids, logprobs, FinishReason.stop
        out = model(input_ids=torch.tensor([[token]], device=device), past_key_values=cache, use_cache=True)
        cache, raw = out.past_key_values, out.logits[:, -1].float()
    return ids, logprobs, FinishReason.length


def generate(model, prompt_ids: list[int], s: Sampling, eos_id: int | None) -> list[int]:
    """One continuation's token ids (for `tether generate`)."""
    generator = torch.Generator(device=next(model.parameters()).device)
    generator.manual_seed(s.seed) if s.seed is not None else generator.seed()
    return sample_continuation(model, prompt_ids, s, eos_id, generator)[0]


class ReferenceEngine:
    """The rollout-engine interface on plain transformers: used where vLLM is not installed, and as
    the check on vLLM. One prompt at a time; small models only."""

    def __init__(self, model_dir: str, seed: int):
        from trainers.model import load_causal_lm
        from trainers.tokenizer import load_tokenizer
        self.model = load_causal_lm(model_dir).eval()
        self.tokenizer = load_tokenizer(model_dir)
        self.generator = torch.Generator().manual_seed(seed)

    def generate(self, prompts: list[list[int]], s: Sampling) -> list[list[tuple[list[int], list[float], FinishReason]]]:
        if s.seed is not None:
            self.generator.manual_seed(s.seed)
        eos = self.tokenizer.eos_token_id

        def stopped(ids: list[int]) -> bool:
            return bool(s.stop) and self.tokenizer.decode(ids).endswith(tuple(s.stop))

        return [[sample_continuation(self.model, p, s, eos, self.generator, stopped) for _ in range(s.n)]
                for p in prompts]

    def load_weights(self, weights) -> None:
        state = dict(weights)
        missing = set(self.model.state_dict()) - set(state)
        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        if missing - tied:
            raise KeyError(f"weights are missing {sorted(missing - tied)[:5]}")
        self.model.load_state_dict(state, strict=False)
