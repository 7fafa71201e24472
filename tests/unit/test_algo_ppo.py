"""GAE and the PPO policy/value losses against values worked out by hand."""

import math

import pytest
import torch
from torch.testing import assert_close

from mplus.algo import explained_variance, gae, policy_loss, value_loss


def test_gae_gamma1_lam1_is_reward_to_go_minus_value():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.5, 1.0, 99.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 2.0, 50.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # row 1 ends after 2 tokens
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # Row 0: reward-to-go 6, 5, 3; minus 0.5 -> 5.5, 4.5, 2.5.
    # Row 1: the 99 reward and the 50 value lie past the mask and must not leak:
    #   reward-to-go 1.5, 1.0; minus values 1, 2 -> 0.5, -1.0; padding -> 0.
    assert_close(adv, torch.tensor([[5.5, 4.5, 2.5], [0.5, -1.0, 0.0]]))
    # returns = advantages + values = reward-to-go; 0 on padding.
    assert_close(ret, torch.tensor([[6.0, 5.0, 3.0], [1.5, 1.0, 0.0]]))


def test_gae_discounted():
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.5)
    # gamma * lam = 0.45
    # t=2: delta = 2 + 0.9*0 - 1.5 = 0.5;      A2 = 0.5
    # t=1: delta = 0 + 0.9*1.5 - 1.0 = 0.35;   A1 = 0.35 + 0.45*0.5 = 0.575
    # t=0: delta = 1 + 0.9*1.0 - 0.5 = 1.4;    A0 = 1.4 + 0.45*0.575 = 1.65875
    assert_close(adv, torch.tensor([[1.65875, 0.575, 0.5]]))
    # returns = A + V = 2.15875, 1.575, 2.0
    assert_close(ret, torch.tensor([[2.15875, 1.575, 2.0]]))


def test_gae_discounted_with_cut_mask_does_not_bootstrap_from_padding():
    rewards = torch.tensor([[1.0, 2.0, 100.0]])
    values = torch.tensor([[0.5, 1.0, 7.0]])
    adv, ret = gae(rewards, values, torch.tensor([[1, 1, 0]]), gamma=0.9, lam=0.5)
    # t=1 is terminal, V(t=2) counts as 0: delta = 2 + 0 - 1.0 = 1.0;  A1 = 1.0
    # t=0: delta = 1 + 0.9*1.0 - 0.5 = 1.4;  A0 = 1.4 + 0.45*1.0 = 1.85
    assert_close(adv, torch.tensor([[1.85, 1.0, 0.0]]))
    assert_close(ret, torch.tensor([[2.35, 2.0, 0.0]]))


def test_gae_zero_on_masked_positions_even_with_left_padding():
    rewards = torch.tensor([[5.0, 1.0, 2.0]])
    values = torch.tensor([[9.0, 0.5, 1.0]])
    adv, ret = gae(rewards, values, torch.tensor([[0, 1, 1]]), gamma=1.0, lam=1.0)
    # Real tokens t=1, 2: reward-to-go 3, 2; minus values 0.5, 1.0 -> 2.5, 1.0. t=0 is padding.
    assert_close(adv, torch.tensor([[0.0, 2.5, 1.0]]))
    assert_close(ret, torch.tensor([[0.0, 3.0, 2.0]]))


def test_gae_outputs_are_detached():
    values = torch.tensor([[0.5, 1.0]], requires_grad=True)
    adv, ret = gae(torch.ones(1, 2), values, torch.ones(1, 2), gamma=1.0, lam=1.0)
    assert not adv.requires_grad and not ret.requires_grad


def _policy_case():
    # Four real tokens and one padding token holding a huge log-ratio.
    ratios = [1.5, 0.5, 1.1, 0.5, 100.0]
    old = torch.tensor([[-1.0, -2.0, -0.5, -1.5, -3.0]])
    logprobs = (old + torch.log(torch.tensor([ratios]))).requires_grad_()
    advantages = torch.tensor([[1.0, 1.0, -2.0, -1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    return ratios, logprobs, old, advantages, mask


def test_policy_loss_clipped_surrogate():
    ratios, logprobs, old, advantages, mask = _policy_case()
    out = policy_loss(logprobs, old, advantages, mask, clip_eps=0.2)
    # Per token max(-A*r, -A*clip(r, 0.8, 1.2)):
    #   r=1.5, A=+1: max(-1.5, -1.2) = -1.2   clipped
    #   r=0.5, A=+1: max(-0.5, -0.8) = -0.5
    #   r=1.1, A=-2: max( 2.2,  2.2) =  2.2   (inside the range: not clipped)
    #   r=0.5, A=-1: max( 0.5,  0.8) =  0.8   clipped
    # loss = (-1.2 - 0.5 + 2.2 + 0.8) / 4 = 0.325; clipfrac = 2/4
    assert_close(out.loss, torch.tensor(0.325))
    assert_close(out.clipfrac, torch.tensor(0.5))
    assert_close(out.ratio_mean, torch.tensor((1.5 + 0.5 + 1.1 + 0.5) / 4))
    kl = 0.5 * sum(math.log(r) ** 2 for r in ratios[:4]) / 4
    assert_close(out.approx_kl, torch.tensor(kl))
    for stat in out[1:]:
        assert not stat.requires_grad

    out.loss.backward()
    # d/dlogp of -A*r/4 is -A*r/4 on unclipped tokens, 0 on clipped tokens and padding:
    #   token 1: -1*0.5/4 = -0.125; token 2: 2*1.1/4 = 0.55.
    assert_close(logprobs.grad, torch.tensor([[0.0, -0.125, 0.55, 0.0, 0.0]]))


def test_policy_loss_dual_clip():
    old = torch.zeros(1, 3)
    logprobs = torch.log(torch.tensor([[5.0, 0.5, 5.0]]))
    advantages = torch.tensor([[-1.0, -1.0, 1.0]])
    mask = torch.ones(1, 3)
    # Standard clip: r=5, A=-1: max(5, 1.2) = 5; r=0.5, A=-1: max(0.5, 0.8) = 0.8;
    #   r=5, A=+1: max(-5, -1.2) = -1.2.  Mean = (5 + 0.8 - 1.2) / 3 = 4.6/3
    plain = policy_loss(logprobs, old, advantages, mask, clip_eps=0.2)
    assert_close(plain.loss, torch.tensor(4.6 / 3))
    # Dual clip c=3 caps A<0 tokens at -c*A = 3: min(5, 3) = 3, min(0.8, 3) = 0.8;
    #   the A>0 token is untouched (min(-1.2, -3) would give -3). Mean = (3 + 0.8 - 1.2)/3 = 2.6/3
    dual = policy_loss(logprobs, old, advantages, mask, clip_eps=0.2, dual_clip=3.0)
    assert_close(dual.loss, torch.tensor(2.6 / 3))
    # clipfrac counts the ratio clip only: tokens 2 and 3 -> 2/3.
    assert_close(dual.clipfrac, torch.tensor(2 / 3))


def test_policy_loss_rejects_dual_clip_not_above_one():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(x, x, x, torch.ones(1, 2), dual_clip=1.0)


def _value_case():
    values = torch.tensor([[1.0, 0.625, 2.0, 0.0, 9.0]], requires_grad=True)
    old = torch.tensor([[0.5, 0.5, 1.0, 1.0, 0.0]])
    returns = torch.tensor([[1.0, 0.0, 3.0, 2.0, -9.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    return values, old, returns, mask


def test_value_loss_clipped_both_branches():
    values, old, returns, mask = _value_case()
    out = value_loss(values, old, returns, mask, clip_eps=0.2)
    # v_clip = old + clip(v - old, -0.2, 0.2); per token max((v-R)^2, (v_clip-R)^2):
    #   v=1,     old=0.5, R=1: (0)^2 = 0     vs v_clip=0.7:   (0.3)^2 = 0.09  -> 0.09 clipped
    #   v=0.625, old=0.5, R=0: 0.390625      vs v_clip=0.625: same         -> 0.390625
    #   v=2,     old=1,   R=3: 1             vs v_clip=1.2:   (1.8)^2 = 3.24 -> 3.24 clipped
    #   v=0,     old=1,   R=2: 4             vs v_clip=0.8:   (1.2)^2 = 1.44 -> 4 unclipped
    # loss = 0.5 * (0.09 + 0.390625 + 3.24 + 4) / 4 = 0.965078125
    assert_close(out.loss, torch.tensor(0.965078125))
    assert_close(out.clipfrac, torch.tensor(0.5))
    assert_close(out.vpred_mean, torch.tensor((1.0 + 0.625 + 2.0 + 0.0) / 4))
    out.loss.backward()
    # Gradient flows only through unclipped tokens: 0.5 * 2 * (v - R) / 4.
    #   token 1: (0.625 - 0)/4 = 0.15625; token 3: (0 - 2)/4 = -0.5
    assert_close(values.grad, torch.tensor([[0.0, 0.15625, 0.0, -0.5, 0.0]]))


def test_value_loss_without_clipping():
    values, old, returns, mask = _value_case()
    out = value_loss(values, old, returns, mask, clip_eps=None)
    # 0.5 * (0 + 0.390625 + 1 + 4) / 4 = 0.673828125
    assert_close(out.loss, torch.tensor(0.673828125))
    assert_close(out.clipfrac, torch.tensor(0.0))


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0, 50.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    assert explained_variance(returns.clone(), returns, mask) == pytest.approx(1.0)
    # A constant prediction explains nothing.
    assert explained_variance(torch.full_like(returns, 2.5), returns, mask) == pytest.approx(0.0)
    # Residual (0, 0, 0, -1): var = (3 * 0.25^2 + 0.75^2) / 4 = 0.1875; Var(R) = 1.25;
    # 1 - 0.1875 / 1.25 = 0.85
    values = torch.tensor([[1.0, 2.0, 3.0, 5.0, 0.0]])
    assert explained_variance(values, returns, mask) == pytest.approx(0.85)
    assert math.isnan(explained_variance(values, torch.ones_like(returns), mask))
