"""Length penalty and per-token rewards against values worked out by hand."""

import pytest
import torch
from torch.testing import assert_close

from mplus.algo import length_penalty, token_rewards


def test_linear_length_penalty():
    # coef * len / max: 0.5 * (0, 32, 64, 128) / 128 = 0, 0.125, 0.25, 0.5
    out = length_penalty(torch.tensor([0, 32, 64, 128]), max_new_tokens=128, coef=0.5)
    assert out.dtype == torch.float32
    assert_close(out, torch.tensor([0.0, 0.125, 0.25, 0.5]))


def test_overlong_length_penalty_default_threshold():
    lengths = torch.tensor([0, 96, 112, 128, 200])
    out = length_penalty(lengths, max_new_tokens=128, coef=0.5, kind="overlong")
    # threshold = 0.75 * 128 = 96; ramp over 32 tokens:
    #   0 -> 0; 96 -> 0; 112 -> 0.5 * 16/32 = 0.25; 128 -> 0.5; 200 -> clamped at 0.5
    assert_close(out, torch.tensor([0.0, 0.0, 0.25, 0.5, 0.5]))


def test_overlong_length_penalty_explicit_threshold():
    lengths = torch.tensor([10, 64, 96])
    out = length_penalty(lengths, max_new_tokens=128, coef=1.0, kind="overlong", threshold=64)
    # ramp over 64 tokens: 10 -> 0; 64 -> 0; 96 -> 32/64 = 0.5
    assert_close(out, torch.tensor([0.0, 0.0, 0.5]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "quadratic"},
        {"kind": "overlong", "threshold": 128},
        {"kind": "overlong", "threshold": -1},
        {"coef": -0.1},
        {"max_new_tokens": 0},
    ],
    ids=str,
)
def test_length_penalty_rejects_bad_settings(kwargs):
    settings = {"max_new_tokens": 128, "coef": 0.5} | kwargs
    with pytest.raises(ValueError):
        length_penalty(torch.tensor([10]), **settings)


def test_token_rewards_places_score_on_last_real_token():
    scores = torch.tensor([1.0, 2.0, 3.0])
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], [0.9, 1.0, 1.1, 1.2]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])
    out = token_rewards(scores, kl, mask, kl_coef=0.5)
    # -0.5 * kl on real tokens; score added at the last real token:
    #   row 0: -0.05, -0.1, -0.15, -0.2 + 1 = 0.8
    #   row 1: -0.25, -0.3 + 2 = 1.7, then padding 0, 0
    #   row 2: empty mask -> all 0, the score 3 goes nowhere
    expected = torch.tensor(
        [[-0.05, -0.1, -0.15, 0.8], [-0.25, 1.7, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    )
    assert_close(out, expected)
