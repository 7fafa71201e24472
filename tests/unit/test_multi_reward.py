"""Several reward models and the safety constraint, against values worked out by hand:
normalisation and the weighted sum, the Lagrangian score, the Lagrange multiplier's update
(Safe-RLHF's rule on log lambda), its checkpoint state, and the subset filter of the RM stage."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from mplus.algo import LagrangeMultiplier, lagrangian_score, normalized_score, weighted_scores
from mplus.data.types import PreferencePair
from mplus.errors import DataError
from mplus.models.reward import RewardSet
from mplus.stages.rm import subset_pairs


def test_normalized_score_uses_its_own_stats_then_clips():
    raw = torch.tensor([3.0, 1.0, -9.0])
    # (raw - 1) / 2 = 1, 0, -5 -> clipped to [-2, 2]: 1, 0, -2
    assert_close(normalized_score(raw, 1.0, 2.0, clip=2.0), torch.tensor([1.0, 0.0, -2.0]))
    assert_close(normalized_score(raw, 1.0, 2.0, normalize=False), raw)
    # a zero std is floored at 1e-6, not a division by zero
    assert normalized_score(torch.tensor([1.0]), 0.0, 0.0, clip=5.0).item() == 5.0


def test_weighted_scores_sums_weight_times_score():
    z = {"harmless": torch.tensor([1.0, -1.0]), "helpful": torch.tensor([0.5, 2.0])}
    # 2 * (1, -1) + 0.5 * (0.5, 2) = (2.25, -1.0)
    assert_close(weighted_scores(z, {"harmless": 2.0, "helpful": 0.5}), torch.tensor([2.25, -1.0]))
    # a weight of 0 drops a model; the weights need not sum to 1
    assert_close(weighted_scores(z, {"harmless": 0.0, "helpful": 3.0}), torch.tensor([1.5, 6.0]))
    with pytest.raises(ValueError, match="no scores for"):
        weighted_scores(z, {"cost": 1.0})
    with pytest.raises(ValueError, match="no weights"):
        weighted_scores(z, {})


def test_lagrangian_score():
    obj, cost = torch.tensor([1.0, 0.0]), torch.tensor([0.5, -1.0])
    # lam = 3: (1 - 1.5) / 4 = -0.125; (0 + 3) / 4 = 0.75
    assert_close(lagrangian_score(obj, cost, 3.0), torch.tensor([-0.125, 0.75]))
    assert_close(lagrangian_score(obj, cost, 0.0), obj)  # no multiplier: the objective
    with pytest.raises(ValueError, match=">= 0"):
        lagrangian_score(obj, cost, -1.0)


def test_reward_set_normalises_each_model_by_its_stats_and_keeps_the_cost_out():
    models = {"harmless": torch.nn.Identity(), "helpful": torch.nn.Identity()}
    stats = {"harmless": {"mean": 1.0, "std": 2.0}, "helpful": {"mean": -1.0, "std": 0.5}}
    raw = {"harmless": torch.tensor([3.0, -1.0]), "helpful": torch.tensor([0.0, -1.5])}
    both = RewardSet(models, stats, {"harmless": 1.0, "helpful": 2.0}, clip=5.0)
    z = both.normalized(raw)
    # harmless (3, -1) -> (1, -1); helpful (0, -1.5) -> (2, -1)
    assert_close(z["harmless"], torch.tensor([1.0, -1.0]))
    assert_close(z["helpful"], torch.tensor([2.0, -1.0]))
    assert_close(both.objective(z), torch.tensor([5.0, -3.0]))  # 1*z_h + 2*z_p
    assert both.cost(z) is None and not both.single
    safe = RewardSet(models, stats, {"harmless": 1.0, "helpful": 2.0}, cost="harmless")
    assert_close(safe.objective(z), torch.tensor([4.0, -2.0]))  # the cost's model left out
    assert_close(safe.cost(z), torch.tensor([-1.0, 1.0]))  # -z_harmless
    one = RewardSet({"reward": torch.nn.Identity()}, {"reward": stats["harmless"]}, {"reward": 1})
    assert one.single
    with pytest.raises(ValueError, match="cost"):
        RewardSet(models, stats, {"harmless": 1.0, "helpful": 1.0}, cost="toxicity")


def test_lagrange_multiplier_against_hand_computed_steps():
    lam = LagrangeMultiplier(init=1.0, lr=0.1, threshold=0.5, window=3)
    # window (1, 2): J = 1.5; log lam = 0 + 0.1 * 1 * (1.5 - 0.5) = 0.1
    assert math.isclose(lam.update([1.0, 2.0]), math.exp(0.1))
    # window (1, 2, 0): J = 1; log lam = 0.1 + 0.1 * e^0.1 * 0.5
    want = 0.1 + 0.1 * math.exp(0.1) * 0.5
    assert math.isclose(lam.update([0.0]), math.exp(want))
    # window of 3 keeps (0, 0, 0): J = 0 < 0.5 -> lam falls
    before = lam.log_value
    lam.update([0.0, 0.0])
    assert lam.window_cost() == 0.0
    assert math.isclose(lam.log_value, before + 0.1 * math.exp(before) * (0.0 - 0.5))
    assert lam.value > 0  # log space: never negative


def test_lagrange_multiplier_clamps_at_its_max_and_round_trips_its_state():
    lam = LagrangeMultiplier(init=1.0, lr=10.0, threshold=0.0, max_value=2.0)
    assert lam.update([5.0]) == pytest.approx(2.0)  # 0 + 10 * 5 = 50 -> clamped to log 2
    state = lam.state_dict()
    other = LagrangeMultiplier(init=1.0, lr=10.0, threshold=0.0, max_value=2.0)
    other.load_state_dict(state)
    assert other.value == lam.value and list(other.costs) == [5.0]
    assert other.update([-1.0]) == lam.update([-1.0])  # the same window: the same next step
    for bad in ({"init": 0.0}, {"lr": -1.0}, {"max_value": 0.5}, {"window": 0}):
        with pytest.raises(ValueError):
            LagrangeMultiplier(**{"init": 1.0, "lr": 0.1, "threshold": 0.0, **bad})


def test_subset_pairs_matches_whole_words_of_the_subset_name():
    pairs = [
        PreferencePair("p", "a", "b", s)
        for s in ("harmless-base", "helpful-base", "helpful-online", "synthetic-harmless")
    ]
    assert [p.subset for p in subset_pairs(pairs, "harmless", "x")] == [
        "harmless-base",
        "synthetic-harmless",
    ]
    assert len(subset_pairs(pairs, "helpful", "x")) == 2
    with pytest.raises(DataError, match="harmlessness.*harmless-base, helpful-base"):
        subset_pairs(pairs, "harmlessness", "algo.rewards.h.subset=harmlessness")
