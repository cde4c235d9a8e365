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
def sample_batch(model, prompts: list[list[int]], s: Sampling, eos_id: int | None, generator: torch.Generator,
                 stopped=lambda ids: False, pad_id: int = 0) -> list[tuple[list[int], list[float], FinishReason]]:
    """Sample one continuation per prompt, every row in one left-padded batch with a KV cache (Part 3): each
    new token costs one forward over one position per row instead of over the whole prefix. Returns per row
    (token ids, log pi of each under the untempered model, why it ended)."""
    device = next(model.parameters()).device
    rows, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((rows, width), pad_id, dtype=torch.long, device=device)               # [B, P]
    mask = torch.zeros((rows, width), dtype=torch.long, device=device)                    # [B, P] 1 = real token
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, device=device)
        mask[i, width - len(p):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)                                        # [B, P]: each row from 0
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    cache, raw = out.past_key_values, out.logits[:, -1].float()                           # [B, V]
    next_position = positions[:, -1:] + 1                                                 # [B, 1]
    tokens: list[list[int]] = [[] for _ in range(rows)]
    logprobs: list[list[float]] = [[] for _ in range(rows)]
    reasons: list[FinishReason | None] = [None] * rows
    for step in range(s.max_new_tokens):
        logits = raw
        if step < s.min_new_tokens and eos_id is not None:
            logits = raw.clone()
            logits[:, eos_id] = float("-inf")  # sampling only: the logprob below stays the model's own
        if s.temperature <= 0:
            chosen = logits.argmax(dim=-1)                                                # [B]
        else:
            chosen = torch.multinomial(next_token_distribution(logits, s), 1, generator=generator)[:, 0]
        chosen_logp = torch.log_softmax(raw, dim=-1).gather(1, chosen[:, None])[:, 0]    # [B]
        for i, (token, logp) in enumerate(zip(chosen.tolist(), chosen_logp.tolist())):
            if reasons[i] is not None:
                continue                                                                 # finished rows idle along
            tokens[i].append(token)
            logprobs[i].append(logp)
            if token == eos_id:
                reasons[i] = FinishReason.eos
            elif step + 1 >= s.min_new_tokens and stopped(tokens[i]):
                reasons[i] = FinishReason.stop
        if all(r is not None for r in reasons) or step + 1 == s.max_new_tokens:
            break
        mask = torch.cat([mask, mask.new_ones((rows, 1))], dim=1)
        out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=next_position,
                    past_key_values=cache, use_cache=True)
        cache, raw = out.past_key_values, out.logits[:, -1].float()
        next_position = next_position + 1
    return [(t, lp, r or FinishReason.length) for t, lp, r in zip(tokens, logprobs, reasons)]


def generate(model, prompt_ids: list[int], s: Sampling, eos_id: int | None) -> list[int]:
    """One continuation's token ids (for `tether generate`)."""
    generator = torch.Generator(device=next(model.parameters()).device)
    generator.manual_seed(s.seed) if s.seed is not None else generator.seed()
    return sample_batch(model, [prompt_ids], s, eos_id, generator)[0][0]


class ReferenceEngine:
    """The rollout-engine interface on plain transformers: used where vLLM is not installed, and as the check
    on vLLM. Decodes up to batch_size sequences together, on the worker's device at the engine's dtype."""

    def __init__(self, model_dir: str, seed: int, device: torch.device = torch.device("cpu"),
                 dtype: str = "float32", batch_size: int = 64):
        from data.tokenizer import load_tokenizer
        from modeling.model import load_causal_lm
        self.device, self.batch_size = device, batch_size
        self.model = load_causal_lm(model_dir, getattr(torch, dtype)).eval().to(device)
        self.tokenizer = load_tokenizer(model_dir)
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def generate(self, prompts: list[list[int]], s: Sampling) -> list[list[tuple[list[int], list[float], FinishReason]]]:
        if s.seed is not None:
            self.generator.manual_seed(s.seed)
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

        def stopped(ids: list[int]) -> bool:
            return bool(s.stop) and self.tokenizer.decode(ids).endswith(tuple(s.stop))

        rows = [p for p in prompts for _ in range(s.n)]                     # sample j of prompt i at i * n + j
        done = []
        for start in range(0, len(rows), self.batch_size):
            done += sample_batch(self.model, rows[start:start + self.batch_size], s, eos, self.generator, stopped, pad)
        return [done[i * s.n:(i + 1) * s.n] for i in range(len(prompts))]

    def load_weights(self, weights) -> None:
        """Copies each (name, tensor) into the model as it arrives (a sync's buckets are never all held)."""
        params = self.model.state_dict()          # tensors that share the parameters' storage
        seen = set()
        for name, tensor in weights:
            if name not in params:
                raise KeyError(f"weight sync sent {name}, which this model does not have")
            params[name].copy_(tensor)
            seen.add(name)
        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        if missing := set(params) - seen - tied:
            raise KeyError(f"weights are missing {sorted(missing)[:5]}")

    def offload(self) -> None:
        """Colocated mode: the weights go to host memory so the learners sharing the GPU can train."""
        self.model.to("cpu")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def reload(self) -> None:
        self.model.to(self.device)
