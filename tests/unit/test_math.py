import math

import pytest
import torch

from rollout.reference_engine import next_token_distribution
from rollout.types import Sampling
from trainers.learners.schedule import warmup_cosine
from trainers.losses.lm import token_nll


def test_token_nll_matches_hand_computation():
    # One sequence, two positions, vocabulary 3; eq. (9) by hand.
    logits = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]])
    targets = torch.tensor([[2, 0]])
    p0 = math.exp(2) / (1 + math.e + math.exp(2))
    expected = -math.log(p0) - math.log(1 / 3)
    total, count = token_nll(logits, targets)
    assert total.item() == pytest.approx(expected, abs=1e-6) and count.item() == 2
    total, count = token_nll(logits, targets, torch.tensor([[0.0, 1.0]]))
    assert total.item() == pytest.approx(math.log(3), abs=1e-6) and count.item() == 1


def test_warmup_cosine_values():
    assert warmup_cosine(0, 10, 110, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 110, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 110, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(109, 10, 110, 0.1) == pytest.approx(0.1)
    mid = 10 + 99 / 2
    assert warmup_cosine(int(mid), 10, 110, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 49 / 99)))


def test_sampling_distribution_temperature_topk_topp():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.10]]))
    p = next_token_distribution(logits, Sampling(temperature=1.0))
    assert torch.allclose(p, torch.tensor([[0.5, 0.25, 0.15, 0.10]]), atol=1e-6)
    p = next_token_distribution(logits, Sampling(temperature=0.5))  # p_i^2 / sum p^2
    sq = torch.tensor([0.25, 0.0625, 0.0225, 0.01])
    assert torch.allclose(p, (sq / sq.sum())[None], atol=1e-6)
    p = next_token_distribution(logits, Sampling(top_k=2))
    assert torch.allclose(p, torch.tensor([[2 / 3, 1 / 3, 0, 0]]), atol=1e-6)
    p = next_token_distribution(logits, Sampling(top_p=0.7))  # 0.5 + 0.25 reaches 0.7
    assert torch.allclose(p, torch.tensor([[2 / 3, 1 / 3, 0, 0]]), atol=1e-6)
    p = next_token_distribution(logits, Sampling(top_p=0.5))
    assert torch.allclose(p, torch.tensor([[1.0, 0, 0, 0]]), atol=1e-6)


@pytest.mark.parametrize("bad", [dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1), dict(max_new_tokens=0)])
def test_sampling_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        Sampling(**bad)


def test_bradley_terry_loss_by_hand():
    from trainers.losses.lm import bradley_terry_loss
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.5])
    # -log sigma(d) = log(1 + e^-d), d = 1 and -0.5
    expected = [math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(0.5))]
    assert bradley_terry_loss(chosen, rejected).tolist() == pytest.approx(expected, abs=1e-6)
    # a margin m asks for R+ - R- > m: d = 1 - 0.5 and -0.5 - 1
    margin = torch.tensor([0.5, 1.0])
    expected = [math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(1.5))]
    assert bradley_terry_loss(chosen, rejected, margin).tolist() == pytest.approx(expected, abs=1e-6)
    # its gradient w.r.t. R+ is -(1 - sigma(d)) = -sigma(-d)
    c = torch.tensor([2.0], requires_grad=True)
    bradley_terry_loss(c, torch.tensor([1.0])).sum().backward()
    assert c.grad.item() == pytest.approx(-1 / (1 + math.e), abs=1e-6)
