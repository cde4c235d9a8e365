"""modeling/attention.py: the explicit attention against a brute-force loop, and a model using it against the
same model on transformers' sdpa path (logits and gradients), short and long rows, padded and not."""
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from modeling.attention import EXPLICIT_MAX_KEYS, attention_for, explicit_attention


def brute_force(q, k, v, allowed, scaling):
    """One query at a time: weights exp(<q_t, k_s> scaling) over the allowed keys, normalised; [B, T, H, d]."""
    B, H, T, d = q.shape
    groups = H // k.shape[1]
    out = torch.zeros(B, T, H, d, dtype=q.dtype)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                keys = [s for s in range(k.shape[2]) if allowed[b, t, s]]
                scores = torch.stack([(q[b, h, t] * k[b, h // groups, s]).sum() * scaling for s in keys])
                w = torch.exp(scores - scores.max())
                w = w / w.sum()
                out[b, t, h] = sum(wi * v[b, h // groups, s] for wi, s in zip(w, keys))
    return out


@pytest.mark.parametrize("padded", [False, True])
def test_explicit_attention_is_eq_3_one_query_at_a_time(padded):
    torch.manual_seed(0)
    B, H, Hkv, T, d = 2, 4, 2, 5, 3                      # grouped-query: 2 heads share each key head
    q, k, v = (torch.randn(B, n, T, d, dtype=torch.float64) for n in (H, Hkv, Hkv))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    allowed = causal.expand(B, T, T).clone()
    mask = None
    if padded:                                           # row 1's last two tokens are padding
        allowed[1, :, 3:] = False
        allowed[1, 3:, :] = causal[3:]                   # (a padded query still sees what a causal one does)
        allowed[1, 3:, 3:] = False
        mask = allowed[:, None]
    got = explicit_attention(q, k, v, mask, 0.7, causal=True)
    want = brute_force(q, k, v, allowed, 0.7)
    assert torch.allclose(got, want, atol=1e-12, rtol=0)


def test_a_query_with_every_key_masked_gives_numbers_not_nan():
    q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 2, 4), torch.randn(1, 1, 2, 4)
    mask = torch.tensor([[False, False], [True, True]])[None, None]
    assert torch.isfinite(explicit_attention(q, k, v, mask, 0.5, causal=True)).all()


def tiny_llama(max_len: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_len)
    return LlamaForCausalLM(config).float()


@pytest.mark.parametrize("width", [24, EXPLICIT_MAX_KEYS + 8])
@pytest.mark.parametrize("padded", [False, True])
def test_a_model_on_cpu_attention_matches_sdpa_in_logits_and_gradients(width, padded):
    fused, explicit = tiny_llama(width), tiny_llama(width)
    attention_for(explicit, torch.device("cpu"))
    assert fused.config._attn_implementation == "sdpa" and explicit.config._attn_implementation != "sdpa"
    ids = torch.randint(0, 97, (3, width))
    mask = torch.ones(3, width, dtype=torch.long)
    if padded:
        mask[0, width - 7:] = 0
    real = mask.bool()
    for model in (fused, explicit):
        logits = model(input_ids=ids, attention_mask=mask if padded else None).logits
        logits[real].logsumexp(-1).sum().backward()
    a, b = (m(input_ids=ids, attention_mask=mask if padded else None).logits[real] for m in (fused, explicit))
    assert torch.allclose(a, b, atol=2e-5, rtol=0)
    for (name, p), q in zip(fused.named_parameters(), explicit.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=2e-5, rtol=1e-4), name


def test_other_devices_other_attentions_and_scalar_heads_are_kept_and_the_saved_config_names_none(tmp_path):
    model = attention_for(tiny_llama(16), torch.device("cuda"))             # no GPU needed: nothing moves
    assert model.config._attn_implementation == "sdpa"
    eager = tiny_llama(16)
    eager.set_attn_implementation("eager")                                  # e.g. a model whose scores are soft-capped
    assert attention_for(eager, torch.device("cpu")).config._attn_implementation == "eager"
    critic = LlamaForSequenceClassification(LlamaConfig(**tiny_llama(16).config.to_dict(), num_labels=1))
    assert attention_for(critic, torch.device("cpu")).config._attn_implementation == "sdpa"   # scalar heads keep it
    attention_for(model, torch.device("cpu")).save_pretrained(tmp_path)
    assert "tether" not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
