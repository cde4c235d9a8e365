"""The reference engine decodes a left-padded batch with a KV cache: each row's tokens and log-probabilities are
those of the row decoded alone, and those a full forward pass without a cache gives (brute force)."""
import pytest
import torch

from modeling.config import ModelConfig
from modeling.model import build_llama, compile_blocks, role_device
from rollout.reference_engine import sample_batch
from rollout.types import FinishReason, Sampling

CFG = ModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128, max_seq_len=64)
PROMPTS = [[1, 5, 9, 13], [1, 7], [1, 20, 21, 22, 23, 24, 25], [1, 3, 3]]


class Vocab:             # build_llama reads the vocabulary size and special ids from a tokenizer
    def __len__(self):
        return 60
    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2


@pytest.fixture(scope="module")
def model():
    return build_llama(CFG, Vocab(), seed=0).eval()


def full_forward_logprobs(model, prompt: list[int], response: list[int]) -> list[float]:
    """Brute force: one forward pass over prompt + response, no cache, no padding."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + response])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(response)]


def test_a_padded_batch_decodes_each_row_as_alone(model):
    greedy = Sampling(temperature=0, max_new_tokens=12)
    batch = sample_batch(model, PROMPTS, greedy, eos_id=None, generator=torch.Generator(), pad_id=0)
    for prompt, (ids, logprobs, reason) in zip(PROMPTS, batch):
        alone_ids, alone_logprobs, _ = sample_batch(model, [prompt], greedy, None, torch.Generator())[0]
        assert ids == alone_ids and len(ids) == 12 and reason == FinishReason.length
        assert max(abs(a - b) for a, b in zip(logprobs, alone_logprobs)) < 1e-5
        assert max(abs(a - b) for a, b in zip(logprobs, full_forward_logprobs(model, prompt, ids))) < 1e-5


def test_rows_end_on_their_own_eos_or_stop(model):
    first = sample_batch(model, PROMPTS, Sampling(temperature=0, max_new_tokens=6), None, torch.Generator())
    eos = first[0][0][0]                           # row 0's first greedy token plays the EOS
    assert all(eos not in ids for ids, _, _ in first[1:])
    out = sample_batch(model, PROMPTS, Sampling(temperature=0, max_new_tokens=6), eos, torch.Generator(),
                       stopped=lambda ids: len(ids) == 4)
    assert out[0][0] == [eos] and out[0][2] == FinishReason.eos
    for (ids, logprobs, reason), (alone, alone_logprobs, _) in zip(out[1:], first[1:]):
        assert ids == alone[:4] and reason == FinishReason.stop         # the finished row did not disturb them
        assert max(abs(a - b) for a, b in zip(logprobs, alone_logprobs)) < 1e-5


def test_sampling_is_seeded_and_rows_differ(model):
    s = Sampling(temperature=1.0, max_new_tokens=10)
    a = sample_batch(model, [[1, 5]] * 4, s, None, torch.Generator().manual_seed(3))
    b = sample_batch(model, [[1, 5]] * 4, s, None, torch.Generator().manual_seed(3))
    assert [r[0] for r in a] == [r[0] for r in b]
    assert len({tuple(r[0]) for r in a}) > 1
    for ids, logprobs, _ in a:
        assert max(abs(x - y) for x, y in zip(logprobs, full_forward_logprobs(model, [1, 5], ids))) < 1e-5


def test_a_role_that_reserved_a_gpu_never_falls_back_to_the_cpu(monkeypatch):
    assert role_device(0.0, "reference policy") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="reference policy: reserved 0.25 GPU but this process sees no CUDA"):
        role_device(0.25, "reference policy")


def test_compile_blocks_keeps_parameter_names(model):
    fresh = build_llama(CFG, Vocab(), seed=0)
    names = list(fresh.state_dict())
    compile_blocks(fresh)
    assert all(block._compiled_call_impl is not None for block in fresh.model.layers)
    assert list(fresh.state_dict()) == names
