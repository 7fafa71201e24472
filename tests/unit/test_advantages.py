"""Advantage estimators (gae, grpo, rloo, reinforce_pp) and loss aggregation, by hand.

Two data-parallel processes are simulated by two threads whose ``reduce`` sums both threads'
tensors, as ``torch.distributed.all_reduce`` would.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

import mplus.algo.advantages as adv_mod
from mplus.algo import (
    KL_IN_REWARD,
    LOSS_AGG_MODES,
    aggregate_loss,
    estimator_names,
    gae,
    get_estimator,
    kl_estimate,
    masked_mean,
    policy_loss,
    register_estimator,
    token_rewards,
)
from mplus.distributed import all_reduce_sum
from tests.unit.fake_ranks import Ranks

NAN, INF = math.nan, math.inf
SQRT7 = math.sqrt(7.0)


# ------------------------------------------------------------------ the grouped batch

# Group 7: rows 0-2, scores 1, 2, 6 (row 1 is a length-1 response).
# Group 3: rows 3-4, scores 4, 4 (zero std).
SCORES = torch.tensor([1.0, 2.0, 6.0, 4.0, 4.0])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 0]])
IDS = torch.tensor([7, 7, 7, 3, 3])


def _rewards(scores=SCORES, mask=MASK):
    """PPO's token rewards with no KL in them, and nan/inf poured into the padding."""
    r = token_rewards(scores, torch.zeros(mask.shape), mask, kl_coef=0.0)
    junk = torch.tensor([NAN, INF, -INF]).repeat(mask.shape[1])[: mask.shape[1]]
    return torch.where(mask.bool(), r, junk)


def _spread(seq_adv, mask=MASK):
    """(B,) per-sequence advantages on every response token."""
    return torch.tensor(seq_adv).unsqueeze(1) * mask


def _run(name, **kw):
    kw.setdefault("mask", MASK)
    if "token_rewards" not in kw:
        kw["token_rewards"] = _rewards(mask=kw["mask"])
    return get_estimator(name)(**kw)


def test_grpo_group_normalised_with_unbiased_std():
    adv, ret = _run("grpo", group_ids=IDS)
    # Group 7: mean (1 + 2 + 6) / 3 = 3; deviations -2, -1, 3;
    #   unbiased var (4 + 1 + 9) / (3 - 1) = 7, std sqrt(7); A = dev / (sqrt(7) + 1e-6).
    # Group 3: 4, 4 -> std 0 -> exactly 0.
    d = SQRT7 + 1e-6
    assert_close(adv, _spread([-2 / d, -1 / d, 3 / d, 0.0, 0.0]))
    assert torch.equal(adv[3:], torch.zeros(2, 3))
    assert torch.equal(ret, adv)  # no critic: returns are the advantages (verl)
    assert adv.dtype == torch.float32 and not adv.requires_grad


def test_dr_grpo_skips_the_std():
    adv, _ = _run("grpo", group_ids=IDS, norm_by_std=False)
    # deviations from the group mean: -2, -1, 3; group 3: 0
    assert_close(adv, _spread([-2.0, -1.0, 3.0, 0.0, 0.0]))


def test_rloo_leave_one_out_baseline():
    adv, ret = _run("rloo", group_ids=IDS)
    # row 0: 1 - (2 + 6) / 2 = -3;  row 1: 2 - (1 + 6) / 2 = -1.5;  row 2: 6 - (1 + 2) / 2 = 4.5
    # group 3: 4 - 4 = 0
    assert_close(adv, _spread([-3.0, -1.5, 4.5, 0.0, 0.0]))
    assert torch.equal(ret, adv)


def test_rloo_with_kl_in_the_reward():
    # TRL's RLOO: sequence reward = score - kl_coef * sum(kl). Padding kl is nan.
    mask = MASK[:3]
    kl = torch.tensor([[0.5, 0.5, 0.0], [1.0, NAN, NAN], [0.25, 0.25, NAN]])
    r = token_rewards(SCORES[:3], kl, mask, kl_coef=2.0)
    adv, _ = get_estimator("rloo")(token_rewards=r, mask=mask, group_ids=IDS[:3])
    # sums: 1 - 2*1.0 = -1;  2 - 2*1.0 = 0;  6 - 2*0.5 = 5
    # row 0: -1 - (0 + 5)/2 = -3.5;  row 1: 0 - (-1 + 5)/2 = -2;  row 2: 5 - (-1 + 0)/2 = 5.5
    assert_close(adv, _spread([-3.5, -2.0, 5.5], mask))


@pytest.mark.parametrize("name", ["grpo", "rloo"])
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_grouped_rows_need_not_be_adjacent(name, norm_by_std):
    adv, _ = _run(name, group_ids=IDS, norm_by_std=norm_by_std)
    # the same rows shuffled so that both groups interleave, under other (any integer) ids
    perm = torch.tensor([3, 0, 4, 1, 2])  # groups 3, 7, 3, 7, 7
    mask = MASK[perm]
    ids = torch.where(IDS[perm] == 7, 1000, -5)
    adv_p, _ = _run(
        name,
        mask=mask,
        token_rewards=_rewards(SCORES[perm], mask),
        group_ids=ids,
        norm_by_std=norm_by_std,
    )
    assert torch.equal(adv_p, adv[perm])


@pytest.mark.parametrize("name", ["grpo", "rloo"])
def test_group_of_one_gets_zero(name):
    mask = torch.ones(3, 2)
    r = _rewards(torch.tensor([5.0, 1.0, 3.0]), mask)
    adv, _ = get_estimator(name)(token_rewards=r, mask=mask, group_ids=torch.tensor([0, 1, 1]))
    # row 0 is alone: 0.  Rows 1, 2 (scores 1, 3): mean 2, unbiased std sqrt(2):
    #   grpo -1/(sqrt2 + 1e-6), +1/(sqrt2 + 1e-6);  rloo 1 - 3 = -2, 3 - 1 = 2
    a = 1 / (math.sqrt(2.0) + 1e-6) if name == "grpo" else 2.0
    assert_close(adv, _spread([0.0, -a, a], mask))


@pytest.mark.parametrize("name", ["grpo", "rloo"])
def test_empty_response_is_left_out_of_its_group(name):
    mask = torch.tensor([[1, 1], [1, 0], [0, 0]])
    r = _rewards(torch.tensor([1.0, 3.0, 100.0]), mask)
    adv, _ = get_estimator(name)(token_rewards=r, mask=mask, group_ids=torch.zeros(3).long())
    # As a group of two (1, 3): grpo -+1/(sqrt2 + 1e-6), rloo -+2; the empty row has no token.
    a = 1 / (math.sqrt(2.0) + 1e-6) if name == "grpo" else 2.0
    assert_close(adv, _spread([-a, a, 0.0], mask))


@pytest.mark.parametrize("name", ["grpo", "rloo"])
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_equal_scores_give_exactly_zero(name, norm_by_std):
    # In float64, mean(0.1, 0.1, 0.1) = 0.1 + 1.4e-17 and the std is 1.7e-17: without the
    # equal-scores rule, dev / std would be -0.82 for every row at eps=0.
    r = torch.full((3, 1), 0.1, dtype=torch.float64)
    adv, _ = get_estimator(name)(
        token_rewards=r,
        mask=torch.ones(3, 1),
        group_ids=torch.zeros(3).long(),
        eps=0.0,
        norm_by_std=norm_by_std,
    )
    assert torch.equal(adv, torch.zeros(3, 1, dtype=torch.float64))


@pytest.mark.parametrize("name", ["grpo", "rloo"])
def test_group_ids_are_checked(name):
    fn = get_estimator(name)
    r = _rewards()
    with pytest.raises(ValueError, match="group_ids is required"):
        fn(token_rewards=r, mask=MASK)
    with pytest.raises(ValueError, match="integer tensor of shape"):
        fn(token_rewards=r, mask=MASK, group_ids=IDS.float())
    with pytest.raises(ValueError, match="integer tensor of shape"):
        fn(token_rewards=r, mask=MASK, group_ids=IDS[:4])


# ------------------------------------------------------------------ reinforce_pp

RPP_REWARDS = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, NAN]])
RPP_MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_reinforce_pp_gamma1_whitened_by_hand():
    adv, ret = _run("reinforce_pp", token_rewards=RPP_REWARDS, mask=RPP_MASK, eps=0.0)
    # reward-to-go: row 0: 1, 1, 1;  row 1: 2.5, 2 (padding nan ignored)
    assert_close(ret, torch.tensor([[1.0, 1.0, 1.0], [2.5, 2.0, 0.0]]))
    # over the 5 tokens: mean 7.5 / 5 = 1.5; deviations -0.5 x3, 1, 0.5;
    # squares 0.75 + 1 + 0.25 = 2, unbiased var 2 / 4 = 0.5, std 1/sqrt2
    r2 = math.sqrt(2.0)
    assert_close(adv, torch.tensor([[-1 / r2, -1 / r2, -1 / r2], [r2, 1 / r2, 0.0]]))


def test_reinforce_pp_discounted_whitened_by_hand():
    adv, ret = _run("reinforce_pp", token_rewards=RPP_REWARDS, mask=RPP_MASK, gamma=0.5)
    # row 0: G2 = 1, G1 = 0.5 * 1 = 0.5, G0 = 0.25;  row 1: G1 = 2, G0 = 0.5 + 0.5 * 2 = 1.5
    assert_close(ret, torch.tensor([[0.25, 0.5, 1.0], [1.5, 2.0, 0.0]]))
    # mean 5.25 / 5 = 1.05; deviations -0.8, -0.55, -0.05, 0.45, 0.95;
    # squares 0.64 + 0.3025 + 0.0025 + 0.2025 + 0.9025 = 2.05; var 2.05 / 4 = 0.5125;
    # A = dev / sqrt(0.5125 + eps), eps = 1e-6 (the default, added to the variance)
    s = math.sqrt(0.5125 + 1e-6)
    want = torch.tensor([[-0.8, -0.55, -0.05], [0.45, 0.95, 0.0]]) / s
    assert_close(adv, want)


def test_reinforce_pp_two_processes_whiten_over_the_global_batch():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(6, 5, generator=g)
    lengths = torch.tensor([5, 1, 3, 4, 2, 5])
    mask = (torch.arange(5) < lengths[:, None]).long()
    r = torch.where(mask.bool(), r, NAN)
    one, one_ret = _run("reinforce_pp", token_rewards=r, mask=mask, gamma=0.9)
    parts = [(r[:3], mask[:3]), (r[3:], mask[3:])]
    out = Ranks(2).run(
        lambda k, red: _run(
            "reinforce_pp", token_rewards=parts[k][0], mask=parts[k][1], gamma=0.9, reduce=red
        )
    )
    assert_close(torch.cat([out[0][0], out[1][0]]), one)
    assert_close(torch.cat([out[0][1], out[1][1]]), one_ret)
    # and the halves whitened alone would differ: the reduction matters
    alone, _ = _run("reinforce_pp", token_rewards=r[:3], mask=mask[:3], gamma=0.9)
    assert not torch.allclose(alone, one[:3])


# ------------------------------------------------------------------ gae, registry, nan


def test_gae_estimator_is_ppo_gae():
    g = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    mask = (torch.arange(6) < torch.tensor([[6], [1], [4], [3]])).long()
    adv, ret = _run("gae", token_rewards=rewards, values=values, mask=mask, gamma=0.9, lam=0.8)
    want_adv, want_ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    assert torch.equal(adv, want_adv) and torch.equal(ret, want_ret)
    with pytest.raises(ValueError, match="needs values"):
        _run("gae")


def test_registry_names_and_unknown_estimator():
    assert estimator_names() == ("gae", "grpo", "reinforce_pp", "rloo")
    assert set(KL_IN_REWARD) == set(estimator_names())
    assert KL_IN_REWARD["grpo"] is False  # a k3 loss term by default
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'") as e:
        get_estimator("ppo")
    for name in estimator_names():
        assert repr(name) in str(e.value)


def test_register_estimator(monkeypatch):
    monkeypatch.setattr(adv_mod, "_ESTIMATORS", dict(adv_mod._ESTIMATORS))

    @register_estimator("zero")
    def zero(*, token_rewards, mask, **_):
        return torch.zeros_like(token_rewards), torch.zeros_like(token_rewards)

    assert get_estimator("zero") is zero and "zero" in estimator_names()
    register_estimator("zero")(zero)  # the same function again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("grpo")(zero)


@pytest.mark.parametrize("name", ["gae", "grpo", "rloo", "reinforce_pp"])
def test_nan_in_padding_does_not_leak(name):
    values = torch.where(MASK.bool(), torch.ones(MASK.shape), NAN)
    rewards = _rewards().requires_grad_()
    adv, ret = _run(name, token_rewards=rewards, values=values, group_ids=IDS)
    for t in (adv, ret):
        assert torch.isfinite(t).all() and not t.requires_grad
        assert torch.equal(t[~MASK.bool()], torch.zeros(int((MASK == 0).sum())))


# ------------------------------------------------------------------ aggregate_loss

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, NAN]])
LOSS_MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
# token-mean: (1 + 2 + 3 + 4 + 5) / 5 = 3
# seq-mean-token-mean: row means 6/3 = 2 and 9/2 = 4.5 -> (2 + 4.5) / 2 = 3.25
# seq-mean-token-sum: row sums 6 and 9 -> 7.5
# seq-mean-token-sum-norm, max_len 4: (6/4 + 9/4) / 2 = 1.875
BY_HAND = {
    "token-mean": 3.0,
    "seq-mean-token-mean": 3.25,
    "seq-mean-token-sum": 7.5,
    "seq-mean-token-sum-norm": 1.875,
}


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_aggregate_modes_by_hand(mode):
    out = aggregate_loss(LOSS, LOSS_MASK, mode, max_len=4)
    assert_close(out, torch.tensor(BY_HAND[mode]))
    # an empty third row counts neither as tokens nor as a sequence
    loss3 = torch.cat([LOSS, torch.tensor([[INF, NAN, 7.0]])])
    mask3 = torch.cat([LOSS_MASK, torch.zeros(1, 3, dtype=torch.long)])
    assert_close(aggregate_loss(loss3, mask3, mode, max_len=4), torch.tensor(BY_HAND[mode]))
    # a reduce that only copies (one process) changes nothing
    assert_close(aggregate_loss(LOSS, LOSS_MASK, mode, all_reduce_sum, 4), out)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_aggregate_nan_in_padding_gives_finite_loss_and_grad(mode):
    loss = LOSS.clone().requires_grad_()
    out = aggregate_loss(loss, LOSS_MASK, mode, max_len=4)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(loss.grad).all()
    assert loss.grad[1, 2] == 0


def test_aggregate_empty_batch_is_zero():
    for mode in LOSS_AGG_MODES:
        assert aggregate_loss(torch.ones(2, 3), torch.zeros(2, 3), mode, max_len=3) == 0


def test_aggregate_mode_errors():
    with pytest.raises(ValueError, match="unknown loss aggregation mode 'mean'") as e:
        aggregate_loss(LOSS, LOSS_MASK, "mean")
    for mode in LOSS_AGG_MODES:
        assert repr(mode) in str(e.value)
    with pytest.raises(ValueError, match="needs max_len"):
        aggregate_loss(LOSS, LOSS_MASK, "seq-mean-token-sum-norm")


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_aggregate_two_processes_match_one(mode):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 5, generator=g)
    # uneven halves: 5+1+3 = 9 tokens, 3 rows | 4+0+2 = 6 tokens, 2 non-empty rows
    mask = (torch.arange(5) < torch.tensor([[5], [1], [3], [4], [0], [2]])).long()
    x = torch.where(mask.bool(), x, NAN)
    whole = x.clone().requires_grad_()
    one = aggregate_loss(whole, mask, mode, max_len=5)
    one.backward()

    def on_rank(k, red):
        part = x[3 * k : 3 * k + 3].clone().requires_grad_()
        loss = aggregate_loss(part, mask[3 * k : 3 * k + 3], mode, red, max_len=5)
        loss.backward()
        return loss.detach(), part.grad

    out = Ranks(2).run(on_rank)
    # DDP takes the mean over processes, of the losses and of the gradients
    assert_close((out[0][0] + out[1][0]) / 2, one.detach())
    assert_close(torch.cat([out[0][1], out[1][1]]) / 2, whole.grad)


def test_token_mean_is_todays_ppo_policy_loss_reduction():
    ratios = torch.tensor([[1.5, 0.5, 1.1, 0.5, 100.0], [0.9, 1.3, 1.0, 1.0, 1.0]])
    old = torch.tensor([[-1.0, -2.0, -0.5, -1.5, -3.0], [-0.7, -1.1, -2.0, NAN, NAN]])
    advantages = torch.tensor([[1.0, 1.0, -2.0, -1.0, 5.0], [-0.5, 2.0, 0.3, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    logprobs = (old + ratios.log()).detach().requires_grad_()
    want = policy_loss(logprobs, old, advantages, mask, clip_eps=0.2).loss
    # the clipped surrogate per token, as policy_loss builds it
    r = torch.exp(logprobs - old)
    per_token = torch.maximum(-advantages * r, -advantages * r.clamp(0.8, 1.2))
    got = aggregate_loss(per_token, mask, "token-mean")
    assert torch.equal(got, want)
    assert torch.equal(got, masked_mean(per_token, mask))
    (g_want,) = torch.autograd.grad(want, logprobs)
    (g_got,) = torch.autograd.grad(got, logprobs)
    # bit for bit, nan included (the padding's nan log-probs give nan gradients in both)
    assert_close(g_got, g_want, rtol=0, atol=0, equal_nan=True)


def test_k3_kl_as_a_loss_term():
    # GRPO's KL: kl_estimate(..., "k3") reduced like the policy loss.
    # k3 = exp(-x) - 1 + x for x = logp - logp_ref:
    #   x = 0 -> 0;  x = ln 2 -> 1/2 - 1 + ln 2 = ln 2 - 0.5;  x = -ln 2 -> 2 - 1 - ln 2 = 1 - ln 2
    ln2 = math.log(2.0)
    logp = torch.tensor([[0.0, ln2], [-ln2, NAN]])
    mask = torch.tensor([[1, 1], [1, 0]])
    kl = kl_estimate(logp, torch.zeros(2, 2), "k3")
    # token-mean: (0 + (ln2 - 0.5) + (1 - ln2)) / 3 = 0.5 / 3
    assert_close(aggregate_loss(kl, mask, "token-mean"), torch.tensor(0.5 / 3))
    # seq-mean-token-sum: ((ln2 - 0.5) + (1 - ln2)) / 2 = 0.25
    assert_close(aggregate_loss(kl, mask, "seq-mean-token-sum"), torch.tensor(0.25))
