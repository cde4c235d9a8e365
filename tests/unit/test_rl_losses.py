"""trainers.losses.rl against values worked out by hand (arithmetic in the comments) or by brute force.
fp64 inputs stay fp64 inside the functions, so the tolerances are tight."""
import math

import pytest
import torch

from trainers.losses.rl import (
    dpo_loss,
    entropy_from_logits,
    kl_k1,
    kl_k2,
    kl_k3,
    policy_loss,
    sequence_mean,
    token_mean,
    truncated_importance_weights,
    value_loss,
)

D = torch.float64


def t(x):
    return torch.tensor(x, dtype=D)


def test_policy_loss_clip_higher_by_hand():
    # clip_low 0.2, clip_high 0.28: the ratio is clipped into [0.8, 1.28]; loss = -min(rho A, clip(rho) A)
    rho = [1.10, 1.50, 1.50, 0.50, 0.50, 1.25, 0.79, 0.81, 1.00]
    adv = [2.00, 2.00, -1.0, -1.0, 2.00, 1.00, -1.0, -1.0, 0.00]
    expected = [
        -2.20,  # 1.1 in range: -1.1 * 2
        -2.56,  # A > 0, rho above 1.28: -min(3.0, 1.28 * 2) = -2.56 (clipped)
        1.50,   # A < 0, rho above: -min(-1.5, -1.28) = 1.5 (pessimistic side: unclipped)
        0.80,   # A < 0, rho below 0.8: -min(-0.5, -0.8) = 0.8 (clipped)
        -1.00,  # A > 0, rho below: -min(1.0, 1.6) = -1.0 (unclipped)
        -1.25,  # 1.25 < 1.28: in range for clip-higher (a symmetric 0.2 clip would give -1.2)
        0.80,   # 0.79 < 0.8 = 1 - clip_low: -min(-0.79, -0.8) = 0.8 (clipped)
        0.81,   # 0.81 > 0.8 (1 - clip_high = 0.72 would not clip 0.79 either)
        0.00,   # A = 0
    ]
    expected_clipped = [0, 1, 0, 1, 0, 0, 1, 0, 0]
    logprobs = t([rho]).log().requires_grad_()
    loss, clipped = policy_loss(logprobs, torch.zeros(1, 9, dtype=D), t([adv]), 0.2, 0.28)
    assert loss.shape == clipped.shape == (1, 9)
    assert loss[0].tolist() == pytest.approx(expected, abs=1e-12)
    assert clipped[0].tolist() == expected_clipped
    # d/d logp of -rho A is -rho A (d rho / d logp = rho); a clipped token's gradient is exactly 0
    loss.sum().backward()
    grad = [0.0 if c else -r * a for r, a, c in zip(rho, adv, expected_clipped)]
    assert logprobs.grad[0].tolist() == pytest.approx(grad, abs=1e-12)


def test_policy_loss_ratio_uses_old_logprobs():
    # rho = exp(-1.0 - (-1.5)) = e^0.5 ~ 1.6487 > 1.2: clipped for A = 1 (-1.2), unclipped for A = -1
    logprobs, old = t([[-1.0, -1.0]]), t([[-1.5, -1.5]])
    loss, clipped = policy_loss(logprobs, old, t([[1.0, -1.0]]), 0.2, 0.2)
    assert loss[0].tolist() == pytest.approx([-1.2, math.exp(0.5)], abs=1e-12)
    assert clipped[0].tolist() == [1.0, 0.0]


def test_policy_loss_dual_clip_caps_negative_advantages():
    # dual_clip 3: for A < 0 the loss is min(loss, -3 A)
    rho = [5.0, 2.0, 5.0, 0.5]
    adv = [-1.0, -1.0, 1.0, -2.0]
    # 5, A=-1: PPO loss -min(-5, -1.2) = 5 > cap 3 -> 3 (capped, zero gradient)
    # 2, A=-1: 2 < cap 3 -> 2, gradient -rho A = 2
    # 5, A=+1: the cap is only for A < 0 -> ordinary clip -1.2
    # 0.5, A=-2: -min(-1.0, -1.6) = 1.6 (clipped below) < cap 6 -> 1.6
    logprobs = t([rho]).log().requires_grad_()
    loss, clipped = policy_loss(logprobs, torch.zeros(1, 4, dtype=D), t([adv]), 0.2, 0.2, dual_clip=3.0)
    assert loss[0].tolist() == pytest.approx([3.0, 2.0, -1.2, 1.6], abs=1e-12)
    assert clipped[0].tolist() == [1.0, 0.0, 1.0, 1.0]
    loss.sum().backward()
    assert logprobs.grad[0].tolist() == pytest.approx([0.0, 2.0, 0.0, 0.0], abs=1e-12)
    plain, _ = policy_loss(t([rho]).log(), torch.zeros(1, 4, dtype=D), t([adv]), 0.2, 0.2)
    assert plain[0, 0].item() == pytest.approx(5.0, abs=1e-12)  # uncapped without dual clip


def test_policy_loss_huge_ratio_stays_finite():
    logprobs = t([[0.0, 0.0]]).requires_grad_()
    loss, clipped = policy_loss(logprobs, t([[-500.0, -500.0]]), t([[1.0, -1.0]]), 0.2, 0.2, dual_clip=3.0)
    assert loss[0].tolist() == pytest.approx([-1.2, 3.0], abs=1e-12)
    loss.sum().backward()
    assert torch.isfinite(logprobs.grad).all() and logprobs.grad.abs().max() == 0


@pytest.mark.parametrize("kwargs", [dict(clip_low=-0.1, clip_high=0.2), dict(clip_low=0.2, clip_high=-0.1),
                                    dict(clip_low=0.2, clip_high=0.2, dual_clip=1.0),
                                    dict(clip_low=0.2, clip_high=0.2, dual_clip=0.5)])
def test_policy_loss_rejects_bad_clips(kwargs):
    z = torch.zeros(1, 2)
    with pytest.raises(ValueError):
        policy_loss(z, z, z, **kwargs)


def test_truncated_importance_weights_by_hand():
    old = torch.log(torch.tensor([[0.5, 0.2, 0.9], [0.1, 0.1, 0.1]], dtype=torch.float64))
    behaviour = torch.log(torch.tensor([[0.25, 0.4, 0.3], [0.1, 0.05, 0.5]], dtype=torch.float64))
    weights, ratios = truncated_importance_weights(old, behaviour, cap=2.5)
    torch.testing.assert_close(ratios, torch.tensor([[2.0, 0.5, 3.0], [1.0, 2.0, 0.2]], dtype=torch.float64))
    torch.testing.assert_close(weights, torch.tensor([[2.0, 0.5, 2.5], [1.0, 2.0, 0.2]], dtype=torch.float64))
    with pytest.raises(ValueError, match="TIS cap"):
        truncated_importance_weights(old, behaviour, cap=0.0)


def test_value_loss_by_hand():
    v, old, ret = t([[1.0, 2.0, 0.5, 1.4]]), t([[0.8, 1.0, 1.0, 1.0]]), t([[1.5, 2.0, 0.0, 0.0]])
    # unclipped 0.5 (V - R)^2: 0.5*0.25, 0, 0.5*0.25, 0.5*1.96
    assert value_loss(v, old, ret, None)[0].tolist() == pytest.approx([0.125, 0.0, 0.125, 0.98], abs=1e-12)
    # clip 0.2: V_clip = old + clamp(V - old, -0.2, 0.2)
    # t0: V - old = 0.2 (in range), V_clip = 1.0 -> 0.125
    # t1: V moved 1.0 onto R; V_clip = 1.2, (1.2 - 2)^2 = 0.64 > 0 -> 0.32 (pessimistic)
    # t2: V - old = -0.5, V_clip = 0.8, 0.64 > 0.25 -> 0.32
    # t3: V - old = 0.4, V_clip = 1.2, 1.44 < 1.96 -> 0.98 (unclipped is larger)
    values = v.clone().requires_grad_()
    loss = value_loss(values, old, ret, 0.2)
    assert loss[0].tolist() == pytest.approx([0.125, 0.32, 0.32, 0.98], abs=1e-12)
    # where the clipped term wins its gradient is 0; elsewhere d/dV 0.5 (V - R)^2 = V - R
    loss.sum().backward()
    assert values.grad[0].tolist() == pytest.approx([-0.5, 0.0, 0.0, 1.4], abs=1e-12)


def test_kl_estimators_by_hand():
    # pi = 0.5, pi_ref = 0.25 at the sampled token: log r = log(0.25 / 0.5) = -ln 2
    lp, ref = t([[math.log(0.5)]]), t([[math.log(0.25)]])
    ln2 = math.log(2)
    assert kl_k1(lp, ref).item() == pytest.approx(ln2, abs=1e-12)
    assert kl_k2(lp, ref).item() == pytest.approx(0.5 * ln2 ** 2, abs=1e-12)
    assert kl_k3(lp, ref).item() == pytest.approx(0.5 - 1 + ln2, abs=1e-12)  # r - 1 - log r, r = 0.5
    # pi = pi_ref: all three are 0
    for k in (kl_k1, kl_k2, kl_k3):
        assert k(ref, ref).item() == 0.0


def test_kl_estimators_expectation_against_brute_force():
    # A 3-token categorical; averaging each estimator with the exact probabilities of pi is E_pi[k].
    p, q = t([0.5, 0.3, 0.2]), t([0.2, 0.5, 0.3])
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()))  # KL(pi || pi_ref)
    lp, ref = p.log()[None], q.log()[None]                                        # [1, 3]: every token sampled
    assert (p * kl_k1(lp, ref)[0]).sum().item() == pytest.approx(kl, abs=1e-12)
    assert (p * kl_k3(lp, ref)[0]).sum().item() == pytest.approx(kl, abs=1e-12)
    # E[k3] = E[k1] + sum(q) - sum(p) = KL, but E[k2] = 0.5 E[(log r)^2] is only close
    e_k2 = (p * kl_k2(lp, ref)[0]).sum().item()
    assert abs(e_k2 - kl) > 1e-3 and e_k2 == pytest.approx(kl, rel=0.25)
    # k1 is negative where pi_ref > pi; k2 and k3 never are
    assert kl_k1(lp, ref)[0, 1].item() < 0
    assert (kl_k2(lp, ref) >= 0).all() and (kl_k3(lp, ref) >= 0).all()
    # swapped arguments estimate -KL: the order (policy first, reference second) matters
    assert (p * kl_k1(ref, lp)[0]).sum().item() == pytest.approx(-kl, abs=1e-12)


def test_kl_k3_clamps_log_ratio():
    # log r = 100 is clamped to 20: e^20 - 1 - 20
    out = kl_k3(t([[-100.0]]), t([[0.0]]))
    assert out.item() == pytest.approx(math.exp(20) - 21, rel=1e-12)
    assert torch.isfinite(kl_k3(torch.tensor([[-1e4]]), torch.tensor([[0.0]]))).all()


def test_token_mean_and_sequence_mean_differ_on_unequal_lengths():
    values = t([[1.0, 2.0, 3.0], [10.0, float("nan"), float("inf")]])
    mask = t([[1, 1, 1], [1, 0, 0]])
    # token mean: (1 + 2 + 3 + 10) / 4 = 4; sequence mean: (mean(1, 2, 3) + 10) / 2 = (2 + 10) / 2 = 6
    assert token_mean(values, mask).item() == pytest.approx(4.0, abs=1e-12)
    assert sequence_mean(values, mask).item() == pytest.approx(6.0, abs=1e-12)
    # gradients: token mean 1/4 per counted token; sequence mean 1/(2*3) and 1/2; none outside the mask
    v = values.clone().requires_grad_()
    token_mean(v, mask).backward()
    assert torch.allclose(v.grad, t([[0.25, 0.25, 0.25], [0.25, 0.0, 0.0]]), rtol=0, atol=1e-12)
    v = values.clone().requires_grad_()
    sequence_mean(v, mask).backward()
    assert torch.allclose(v.grad, t([[1 / 6, 1 / 6, 1 / 6], [0.5, 0.0, 0.0]]), rtol=0, atol=1e-12)


def test_sequence_mean_skips_empty_rows_and_empty_mask_is_zero():
    values = t([[1.0, 2.0], [5.0, 7.0]])
    # row 1 has no tokens: the mean is over row 0 only, 1.5 (not (1.5 + 0) / 2)
    assert sequence_mean(values, t([[1, 1], [0, 0]])).item() == pytest.approx(1.5, abs=1e-12)
    assert token_mean(values, t([[1, 1], [0, 0]])).item() == pytest.approx(1.5, abs=1e-12)
    empty = torch.zeros(2, 2, dtype=D)
    for agg in (token_mean, sequence_mean):
        v = values.clone().requires_grad_()
        out = agg(v, empty)
        out.backward()
        assert out.item() == 0.0 and torch.isfinite(v.grad).all()


def test_entropy_by_hand_and_against_brute_force():
    # uniform over 4: ln 4; p = (3/4, 1/4) from logits (ln 3, 0): -(0.75 ln 0.75 + 0.25 ln 0.25)
    # the last two logits of position 1 are -1e9: probability exp(-1e9) = 0, so they drop out
    logits = t([[[0.0, 0.0, 0.0, 0.0], [math.log(3), 0.0, -1e9, -1e9]]])
    h = entropy_from_logits(logits)
    assert h.shape == (1, 2)
    assert h[0].tolist() == pytest.approx([math.log(4), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))],
                                          abs=1e-12)
    z = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0), dtype=D) * 3
    p = z.softmax(-1)
    brute = -(p * p.log()).sum(-1)
    assert torch.allclose(entropy_from_logits(z), brute, rtol=0, atol=1e-12)
    assert torch.allclose(entropy_from_logits(z + 100.0), brute, rtol=0, atol=1e-9)  # shift invariant
    out = entropy_from_logits(z.to(torch.bfloat16))
    assert out.dtype == torch.float32 and out.shape == (2, 3)


def test_dpo_loss_by_hand():
    # zero margin: -log sigma(0) = log 2
    zero = t([-3.0])
    losses, cr, rr = dpo_loss(zero, zero, zero, zero, beta=0.1)
    assert losses.item() == pytest.approx(math.log(2), abs=1e-12) and cr.item() == rr.item() == 0.0
    # pc = -1, pr = -3, rc = rr = -2, beta 0.5: chosen reward 0.5 * (-1 + 2) = 0.5, rejected 0.5 * (-3 + 2) = -0.5
    # margin 1: loss log(1 + e^-1)
    pc, pr, rc, rrf = t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0])
    losses, cr, rr = dpo_loss(pc, pr, rc, rrf, beta=0.5)
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-12)
    assert (cr.item(), rr.item()) == pytest.approx((0.5, -0.5), abs=1e-12)
    # the pair the other way round: margin -1, loss log(1 + e), and the reward margin flags it as wrong
    losses, cr, rr = dpo_loss(pr, pc, rrf, rc, beta=0.5)
    assert losses.item() == pytest.approx(math.log(1 + math.e), abs=1e-12) and (cr < rr).all()
    # gradient w.r.t. log pi(y+): -beta * sigma(-margin) = -0.5 / (1 + e)
    c = pc.clone().requires_grad_()
    dpo_loss(c, pr, rc, rrf, beta=0.5)[0].sum().backward()
    assert c.grad.item() == pytest.approx(-0.5 / (1 + math.e), abs=1e-12)
