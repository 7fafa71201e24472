"""Pairwise preference losses against values worked out by hand."""

import math

import pytest
import torch
from torch.testing import assert_close

from mplus.algo import bradley_terry_loss, dpo_loss, sequence_logps


def test_sequence_logps():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -7.0, -100.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # -1 - 2 - 3 = -6; -0.5
    assert_close(sequence_logps(logprobs, mask), torch.tensor([-6.0, -0.5]))


def test_bradley_terry_equal_rewards_is_log2():
    r = torch.tensor([0.3, -1.2])
    out = bradley_terry_loss(r, r.clone())
    # -logsigmoid(0) = ln 2; no pair is strictly preferred
    assert_close(out.loss, torch.tensor(math.log(2.0)))
    assert_close(out.accuracy, torch.tensor(0.0))
    assert_close(out.margin_mean, torch.tensor(0.0))


def test_bradley_terry_values_and_margin():
    ln3 = math.log(3.0)
    chosen = torch.tensor([ln3, 0.0], requires_grad=True)
    rejected = torch.tensor([0.0, ln3])
    out = bradley_terry_loss(chosen, rejected)
    # sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4: loss = (ln(4/3) + ln 4) / 2
    assert_close(out.loss, torch.tensor((math.log(4 / 3) + math.log(4.0)) / 2))
    assert_close(out.accuracy, torch.tensor(0.5))
    assert_close(out.margin_mean, torch.tensor(0.0))
    assert out.loss.requires_grad and not out.accuracy.requires_grad
    # A margin equal to the reward gap leaves logit 0: ln 2.
    with_margin = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0]), margin=2.0)
    assert_close(with_margin.loss, torch.tensor(math.log(2.0)))
    assert_close(with_margin.accuracy, torch.tensor(1.0))


# Pair 0: chosen log-ratio -1 - (-2) = 1, rejected -3 - (-2) = -1 -> h = 2.
# Pair 1: chosen log-ratio -2 - (-2) = 0, rejected -2 - (-3) = 1  -> h = -1.
PC = torch.tensor([-1.0, -2.0])
PR = torch.tensor([-3.0, -2.0])
RC = torch.tensor([-2.0, -2.0])
RR = torch.tensor([-2.0, -3.0])
BETA = 0.5


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))  # -logsigmoid(-x)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_dpo_sigmoid_and_stats():
    out = dpo_loss(PC, PR, RC, RR, beta=BETA)
    # beta*h = 1, -0.5: -logsigmoid(z) = ln(1 + e^-z) -> (ln(1 + e^-1) + ln(1 + e^0.5)) / 2
    assert_close(out.loss, torch.tensor((_softplus(-1.0) + _softplus(0.5)) / 2))
    # Implicit rewards: chosen 0.5*1 = 0.5, 0.5*0 = 0; rejected 0.5*-1 = -0.5, 0.5*1 = 0.5
    assert_close(out.chosen_reward, torch.tensor(0.25))
    assert_close(out.rejected_reward, torch.tensor(0.0))
    # Pair 0: 0.5 > -0.5 yes; pair 1: 0 > 0.5 no. Margins 1, -0.5 -> mean 0.25
    assert_close(out.reward_accuracy, torch.tensor(0.5))
    assert_close(out.margin, torch.tensor(0.25))


def test_dpo_sigmoid_label_smoothing():
    out = dpo_loss(PC, PR, RC, RR, beta=BETA, label_smoothing=0.2)
    # 0.8 * -logsigmoid(beta*h) + 0.2 * -logsigmoid(-beta*h), beta*h = 1 and -0.5
    pair0 = 0.8 * _softplus(-1.0) + 0.2 * _softplus(1.0)
    pair1 = 0.8 * _softplus(0.5) + 0.2 * _softplus(-0.5)
    assert_close(out.loss, torch.tensor((pair0 + pair1) / 2))


def test_dpo_equal_policy_and_reference_is_log2():
    x = torch.tensor([-4.0, -7.0])
    assert_close(dpo_loss(x, x, x, x).loss, torch.tensor(math.log(2.0)))


def test_ipo():
    # (h - 1/(2*0.5))^2 = (2 - 1)^2 = 1, (-1 - 1)^2 = 4 -> mean 2.5
    assert_close(dpo_loss(PC, PR, RC, RR, beta=BETA, loss_type="ipo").loss, torch.tensor(2.5))


def test_hinge():
    # relu(1 - 0.5*h): relu(1 - 1) = 0, relu(1 + 0.5) = 1.5 -> mean 0.75
    assert_close(dpo_loss(PC, PR, RC, RR, beta=BETA, loss_type="hinge").loss, torch.tensor(0.75))


def test_dpo_gradient_only_through_policy():
    pc = PC.clone().requires_grad_()
    out = dpo_loss(pc, PR, RC, RR, beta=BETA)
    out.loss.backward()
    # d/dpc of mean(-logsigmoid(beta*h)) = -beta * sigmoid(-beta*h) / 2
    # pair 0: -0.5 * sigmoid(-1) / 2; pair 1: -0.5 * sigmoid(0.5) / 2
    assert_close(pc.grad, torch.tensor([-0.25 * _sigmoid(-1.0), -0.25 * _sigmoid(0.5)]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"loss_type": "kto"},
        {"beta": 0.0},
        {"label_smoothing": 0.6},
        {"loss_type": "ipo", "label_smoothing": 0.1},
    ],
    ids=str,
)
def test_dpo_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        dpo_loss(PC, PR, RC, RR, **kwargs)
