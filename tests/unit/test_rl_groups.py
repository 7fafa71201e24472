"""Group sampling for the critic-free estimators: the step's prompt draw, its split over ranks,
group statistics and keyed sampling, checked by hand."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from mplus import distributed as D
from mplus.algo import estimator_names, group_score_stats
from mplus.config import ADVANTAGE_ESTIMATORS, LOSS_AGG_MODES, AdvantageConfig, RLConfig
from mplus.modules.ppo import PPOModule


def test_config_choices_are_the_registries():
    """mplus.config lists them without importing torch; they must be what mplus.algo has."""
    from mplus.algo import LOSS_AGG_MODES as algo_modes

    assert tuple(sorted(ADVANTAGE_ESTIMATORS)) == estimator_names()
    assert LOSS_AGG_MODES == algo_modes


def test_group_score_stats_by_hand():
    # group 7: 1, 3 -> unbiased std sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2); group 3: 2, 2 -> 0;
    # group 9: one sample -> std 0 and counted as all-equal (no comparison, no signal)
    std, constant = group_score_stats(
        torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0]), torch.tensor([7, 7, 3, 3, 9])
    )
    assert torch.allclose(std, torch.tensor([0.0, 2**0.5, 0.0], dtype=torch.float64))
    assert constant.tolist() == [True, False, True]  # groups in sorted id order: 3, 7, 9


def _module(n: int, batch: int, seed: int = 0, prompts=None):
    cfg = RLConfig(
        rollout_batch_size=batch,
        samples_per_prompt=n,
        minibatch_size=n,
        advantage=AdvantageConfig(estimator="grpo" if n > 1 else "gae"),
    )
    return SimpleNamespace(cfg=cfg, seed=seed, prompts=prompts or [f"p{i}" for i in range(50)])


def _draw(m, step, rank=0, world=1, monkeypatch=None):
    monkeypatch.setattr(D, "rank", lambda: rank)
    monkeypatch.setattr(D, "world_size", lambda: world)
    return PPOModule.draw_prompts(m, step)


def test_one_sample_per_prompt_draws_what_ppo_always_drew(monkeypatch):
    """samples_per_prompt=1 keeps PPO's draw: rollout_batch_size prompts from Random(seed-step)."""
    m = _module(1, 8, seed=3)
    prompts, ids = _draw(m, 5, monkeypatch=monkeypatch)
    rng = random.Random("3-5")
    assert prompts == [m.prompts[rng.randrange(50)] for _ in range(8)]
    assert ids.tolist() == list(range(8))


def test_groups_are_repeated_prompts_and_stay_whole_on_one_rank(monkeypatch):
    m = _module(4, 16)  # 4 prompts x 4 samples
    one, one_ids = _draw(m, 2, monkeypatch=monkeypatch)
    assert len(one) == 16 and one_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    for g in range(4):
        assert len(set(one[4 * g : 4 * g + 4])) == 1  # one prompt per group
    # two ranks: prompts split before the repetition, so each rank holds whole groups
    r0, ids0 = _draw(m, 2, rank=0, world=2, monkeypatch=monkeypatch)
    r1, ids1 = _draw(m, 2, rank=1, world=2, monkeypatch=monkeypatch)
    assert ids0.tolist() == [0] * 4 + [2] * 4 and ids1.tolist() == [1] * 4 + [3] * 4
    assert set(ids0.tolist()).isdisjoint(ids1.tolist())
    by_id = {int(g): p for g, p in zip(one_ids, one, strict=True)}
    for rows, ids in ((r0, ids0), (r1, ids1)):
        assert all(by_id[int(g)] == p for g, p in zip(ids, rows, strict=True))


def test_sample_keys_do_not_depend_on_the_split(monkeypatch):
    m = _module(4, 16, seed=11)
    m.cfg.generation.seed_per_sample = True
    _, ids = _draw(m, 2, monkeypatch=monkeypatch)
    keys = PPOModule.sample_keys(m, 2, ids)
    assert len(set(keys)) == 16  # every sample its own stream
    _, ids1 = _draw(m, 2, rank=1, world=2, monkeypatch=monkeypatch)
    keys1 = PPOModule.sample_keys(m, 2, ids1)
    assert keys1 == keys[4:8] + keys[12:16]  # rank 1 holds groups 1 and 3, same keys
    m.cfg.generation.seed_per_sample = False
    assert PPOModule.sample_keys(m, 2, ids) is None


def test_keyed_sampling_is_exact_and_batch_invariant():
    from mplus.rollout.keyed import KeyedSampler, sample_key

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    picks = torch.zeros(4)
    for i in range(4000):
        picks[int(KeyedSampler([sample_key(i)], 1.0)(None, logits.clone()).argmax())] += 1
    # the Gumbel-max sample follows softmax(logits): 0.644 0.237 0.087 0.032 (4000 draws:
    # standard error <= 0.008, so 0.03 is ~4 sigma)
    assert torch.allclose(picks / 4000, torch.softmax(logits, -1)[0], atol=0.03)
    # a row's noise depends on its key only, not on the other rows of the batch
    batch = torch.randn(3, 10)
    together = KeyedSampler([5, 6, 7], 0.7)(None, batch.clone())
    alone = KeyedSampler([6], 0.7)(None, batch[1:2].clone())
    assert torch.equal(together[1:2], alone)
    with pytest.raises(ValueError, match="temperature"):
        KeyedSampler([1], 0.0)
