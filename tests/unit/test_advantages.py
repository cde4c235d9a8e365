"""trainers.losses.advantages against values worked out by hand (arithmetic in the comments) or by brute force.
fp64 inputs stay fp64 inside the functions, so the tolerances are tight."""
import math

import pytest
import torch

from trainers.losses.advantages import (
    discounted_returns,
    gae,
    group_advantages,
    reinforce_pp_baseline,
    rloo_advantages,
    whiten,
)

D = torch.float64
NAN = float("nan")


def t(x):
    return torch.tensor(x, dtype=D)


def close(a, b, atol=1e-12):
    return torch.allclose(a, t(b) if not torch.is_tensor(b) else b, rtol=0, atol=atol)


def test_gae_by_hand():
    # gamma 0.9, lam 0.8 (gamma * lam = 0.72)
    # row 0, three tokens, r = (0, 0, 1), V = (0.5, 0.6, 0.7):
    #   delta_2 = 1 + 0.9 * 0 - 0.7 = 0.3          (no value after the last token)
    #   delta_1 = 0 + 0.9 * 0.7 - 0.6 = 0.03
    #   delta_0 = 0 + 0.9 * 0.6 - 0.5 = 0.04
    #   A_2 = 0.3, A_1 = 0.03 + 0.72 * 0.3 = 0.246, A_0 = 0.04 + 0.72 * 0.246 = 0.21712
    # row 1, two tokens then padding whose reward 5 and value 9 must never be read:
    #   delta_1 = 1 + 0 - 0.6 = 0.4, delta_0 = 0 + 0.9 * 0.6 - 0.5 = 0.04
    #   A_1 = 0.4, A_0 = 0.04 + 0.72 * 0.4 = 0.328
    rewards = t([[0.0, 0.0, 1.0], [0.0, 1.0, 5.0]])
    values = t([[0.5, 0.6, 0.7], [0.5, 0.6, 9.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    assert close(adv, [[0.21712, 0.246, 0.3], [0.328, 0.4, 0.0]])
    # returns = A + V inside the mask, 0 outside
    assert close(ret, [[0.71712, 0.846, 1.0], [0.828, 1.0, 0.0]])


def brute_force_gae(rewards, values, lengths, gamma, lam):
    """A_t = sum_{l=0}^{L-1-t} (gamma lam)^l delta_{t+l}, delta_t = r_t + gamma V_{t+1} - V_t, V_L = 0."""
    B, T = len(rewards), len(rewards[0])
    adv = [[0.0] * T for _ in range(B)]
    for b in range(B):
        L = lengths[b]
        v = values[b][:L] + [0.0]
        delta = [rewards[b][s] + gamma * v[s + 1] - v[s] for s in range(L)]
        for s in range(L):
            adv[b][s] = sum((gamma * lam) ** l * delta[s + l] for l in range(L - s))
    return adv


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (0.99, 0.0), (0.7, 1.0)])
def test_gae_against_double_sum(gamma, lam):
    g = torch.Generator().manual_seed(1)
    lengths = [6, 3, 1, 0]
    rewards, values = torch.randn(4, 6, generator=g, dtype=D), torch.randn(4, 6, generator=g, dtype=D)
    mask = t([[1.0 if s < L else 0.0 for s in range(6)] for L in lengths])
    adv, ret = gae(rewards, values, mask, gamma, lam)
    expected = t(brute_force_gae(rewards.tolist(), values.tolist(), lengths, gamma, lam))
    assert close(adv, expected)
    assert close(ret, (expected + values) * mask)


def test_gae_limits():
    g = torch.Generator().manual_seed(2)
    rewards, values = torch.randn(2, 5, generator=g, dtype=D), torch.randn(2, 5, generator=g, dtype=D)
    mask = t([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    # lam = 1: the returns are the Monte Carlo reward-to-go, whatever the critic says
    _, ret = gae(rewards, values, mask, gamma=0.9, lam=1.0)
    assert close(ret, discounted_returns(rewards, mask, 0.9))
    # a 0 inside a row (never made by right padding) ends the episode there, for both alike
    holed = t([[1, 1, 0, 1, 1], [1, 0, 1, 0, 0]])
    assert close(gae(rewards, values, holed, gamma=0.9, lam=1.0)[1], discounted_returns(rewards, holed, 0.9))
    # lam = 0: A_t = delta_t, the one-step TD error
    adv, _ = gae(rewards, values, mask, gamma=0.9, lam=0.0)
    next_v = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros(2, 1, dtype=D)], dim=1)
    assert close(adv, (rewards + 0.9 * next_v - values) * mask)


def test_discounted_returns_by_hand():
    # gamma 0.5, r = (1, 2, 3): G_2 = 3, G_1 = 2 + 0.5 * 3 = 3.5, G_0 = 1 + 0.5 * 3.5 = 2.75
    # with the last position masked its reward (3, or NaN) is not read: G_1 = 2, G_0 = 1 + 0.5 * 2 = 2
    rewards = t([[1.0, 2.0, 3.0], [1.0, 2.0, NAN]])
    out = discounted_returns(rewards, t([[1, 1, 1], [1, 1, 0]]), gamma=0.5)
    assert close(out, [[2.75, 3.5, 3.0], [2.0, 2.0, 0.0]])
    # gamma 1 with a single terminal reward: every token gets it
    out = discounted_returns(t([[0.0, 0.0, 1.0, 0.0]]), t([[1, 1, 1, 0]]), gamma=1.0)
    assert close(out, [[1.0, 1.0, 1.0, 0.0]])


def test_group_advantages_by_hand():
    rewards = t([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    eps = 1e-6
    # row 0: mean 0.5, centred +-0.5, unbiased var = 4 * 0.25 / 3 = 1/3 -> std sqrt(1/3)
    #   (a population std, 0.5, would give +-1 instead of +-sqrt(3)/2)
    s0 = math.sqrt(1 / 3)
    # row 1: all equal -> centred 0, std 0 -> 0 / eps = 0
    # row 2: mean 0.25, centred (-0.25, -0.25, -0.25, 0.75), var = (3 * 0.0625 + 0.5625) / 3 = 0.25 -> std 0.5
    expected = [[0.5 / (s0 + eps), -0.5 / (s0 + eps), -0.5 / (s0 + eps), 0.5 / (s0 + eps)],
                [0.0, 0.0, 0.0, 0.0],
                [-0.25 / (0.5 + eps), -0.25 / (0.5 + eps), -0.25 / (0.5 + eps), 0.75 / (0.5 + eps)]]
    assert close(group_advantages(rewards, divide_by_std=True), expected)
    # Dr. GRPO: only the mean comes off
    assert close(group_advantages(rewards, divide_by_std=False),
                 [[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0], [-0.25, -0.25, -0.25, 0.75]])
    # one response per prompt: nothing to compare with
    for divide in (True, False):
        assert close(group_advantages(t([[3.0], [1.0]]), divide_by_std=divide), [[0.0], [0.0]])


def test_rloo_by_hand_and_against_leave_one_out_loop():
    # r = (1, 0, 0): 1 - mean(0, 0) = 1; 0 - mean(1, 0) = -0.5 (twice); = 3/2 * (r - 1/3)
    assert close(rloo_advantages(t([[1.0, 0.0, 0.0]])), [[1.0, -0.5, -0.5]])
    rewards = torch.randn(3, 5, generator=torch.Generator().manual_seed(3), dtype=D)
    loop = [[r[i] - (sum(r) - r[i]) / (len(r) - 1) for i in range(len(r))] for r in rewards.tolist()]
    assert close(rloo_advantages(rewards), loop)
    # n = 2: each response is compared with the other one, r_i - r_j
    assert close(rloo_advantages(t([[2.0, 5.0]])), [[-3.0, 3.0]])
    with pytest.raises(ValueError):
        rloo_advantages(t([[1.0], [0.0]]))


def test_reinforce_pp_baseline_by_hand():
    # centred: row 0 (1, 0) -> (0.5, -0.5); row 1 (1, 1) -> (0, 0)
    # global unbiased std over the four: mean 0, sum of squares 0.5, var 0.5 / 3 = 1/6
    s = math.sqrt(1 / 6)
    eps = 1e-6
    out = reinforce_pp_baseline(t([[1.0, 0.0], [1.0, 1.0]]))
    assert close(out, [[0.5 / (s + eps), -0.5 / (s + eps)], [0.0, 0.0]])  # +-sqrt(1.5), not GRPO's +-sqrt(0.5)
    assert not close(out, group_advantages(t([[1.0, 0.0], [1.0, 1.0]]), divide_by_std=True), atol=1e-3)
    # a single value: zeros, not NaN
    assert close(reinforce_pp_baseline(t([[4.0]])), [[0.0]])


def test_whiten_by_hand():
    # counted entries 1, 2, 3, 4: mean 2.5, unbiased var (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3
    values = t([[1.0, 2.0, 3.0], [4.0, 100.0, NAN]])
    mask = t([[1, 1, 1], [1, 0, 0]])
    s = math.sqrt(5 / 3) + 1e-8
    out = whiten(values, mask)
    assert close(out, [[-1.5 / s, -0.5 / s, 0.5 / s], [1.5 / s, 0.0, 0.0]])
    kept = out[mask.bool()]
    assert abs(kept.mean().item()) < 1e-12 and kept.std().item() == pytest.approx(1.0, abs=1e-6)
    # fewer than two counted entries: zeros
    assert close(whiten(values, t([[0, 1, 0], [0, 0, 0]])), torch.zeros(2, 3, dtype=D))
    assert close(whiten(values, torch.zeros(2, 3, dtype=D)), torch.zeros(2, 3, dtype=D))


def test_half_precision_inputs_come_back_fp32():
    r = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.bfloat16)
    m = torch.ones(1, 3)
    for out in (gae(r, r, m, 1.0, 1.0)[0], discounted_returns(r, m, 1.0), group_advantages(r, True),
                rloo_advantages(r), reinforce_pp_baseline(r), whiten(r, m)):
        assert out.dtype == torch.float32 and out.shape == (1, 3)


def test_an_episodes_observations_are_transparent_to_gae_and_returns():
    """A multi-turn row (sampled, 2 observation tokens, sampled) gives on its sampled tokens what the same tokens
    give laid side by side: the observations are the environment's transition, not steps."""
    torch.manual_seed(0)
    rewards, values = torch.randn(1, 7, dtype=torch.float64), torch.randn(1, 7, dtype=torch.float64)
    gapped = torch.tensor([[0, 1, 1, 0, 0, 1, 1]], dtype=torch.float64)
    keep = gapped[0].bool()
    dense = torch.ones(1, 4, dtype=torch.float64)
    adv_gapped, ret_gapped = gae(rewards, values, gapped, 0.9, 0.8)
    adv_dense, ret_dense = gae(rewards[:, keep], values[:, keep], dense, 0.9, 0.8)
    torch.testing.assert_close(adv_gapped[:, keep], adv_dense)
    torch.testing.assert_close(ret_gapped[:, keep], ret_dense)
    assert (adv_gapped[:, ~keep] == 0).all() and (ret_gapped[:, ~keep] == 0).all()
    torch.testing.assert_close(discounted_returns(rewards, gapped, 0.9)[:, keep],
                               discounted_returns(rewards[:, keep], dense, 0.9))
