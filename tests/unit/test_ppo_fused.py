"""The lean RL step: with one minibatch per epoch the first update pass reuses the log-prob and
value forward of ``advantages()`` (graph kept) instead of running the models again. It must give
the same old log-probs, values, advantages, losses and gradients as the two-pass step."""

from __future__ import annotations

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM, MistralForSequenceClassification

from mplus.config import AdvantageConfig, RLConfig
from mplus.models.value import ValueModel
from mplus.modules.ppo import PPOModule
from mplus.rollout import Rollout

CFG = dict(
    vocab_size=40,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    pad_token_id=0,
)


def _module(estimator: str, minibatch: int) -> PPOModule:
    torch.manual_seed(0)
    policy = MistralForCausalLM(MistralConfig(**CFG))
    torch.manual_seed(0)
    ref = MistralForCausalLM(MistralConfig(**CFG))
    torch.manual_seed(1)
    value = MistralForSequenceClassification(MistralConfig(**CFG, num_labels=1))
    cfg = RLConfig(
        rollout_batch_size=4,
        minibatch_size=minibatch,
        ppo_epochs=1,
        samples_per_prompt=2 if estimator == "grpo" else 1,
        advantage=AdvantageConfig(estimator=estimator),
    )
    m = PPOModule(
        policy=policy,
        value_model=ValueModel(value) if cfg.critic else None,
        ref_model=ref,
        rewards=None,
        tokenizer=None,
        engine=None,
        cfg=cfg,
        prompts=["p"],
    )
    m.manual_backward = lambda loss: loss.backward()  # no trainer here
    return m


def _rollout() -> Rollout:
    g = torch.Generator().manual_seed(3)
    q = torch.randint(3, 40, (4, 5), generator=g)
    qm = torch.ones_like(q)
    q[0, :2], qm[0, :2] = 0, 0  # left padding
    r = torch.randint(3, 40, (4, 6), generator=g)
    rm = torch.ones(4, 6)
    r[1, 4:], rm[1, 4:] = 0, 0.0  # a shorter response
    return Rollout(q, qm, r, rm, torch.ones(4, dtype=torch.bool), rm.sum(-1).long(), [], [])


def _step(estimator: str, fused: bool):
    m = _module(estimator, minibatch=4)
    m.fuse_first_minibatch = fused
    scores = {"score": torch.tensor([1.0, -0.5, 0.25, 2.0])}
    group_ids = torch.tensor([0, 0, 1, 1]) if estimator == "grpo" else torch.arange(4)
    exp = m.advantages(_rollout(), scores, group_ids)
    assert (exp.first_pass is not None) == fused
    first, exp.first_pass = exp.first_pass, None
    stats = m._minibatch_step(exp, torch.arange(4), first)
    models = [m.policy] + ([m.value_model] if m.value_model is not None else [])
    grads = [p.grad.clone() for model in models for p in model.parameters() if p.grad is not None]
    return exp, stats, grads


@pytest.mark.parametrize("estimator", ["gae", "grpo"])
def test_fused_first_minibatch_equals_two_passes(estimator):
    (e1, s1, g1), (e2, s2, g2) = _step(estimator, True), _step(estimator, False)
    assert torch.equal(e1.old_logprobs, e2.old_logprobs)
    for a, b in [(e1.advantages, e2.advantages), (e1.returns, e2.returns)]:
        assert torch.allclose(a, b, atol=1e-6)
    if estimator == "gae":
        assert torch.equal(e1.values, e2.values)
        assert "value_loss" in s1
    assert s1.keys() == s2.keys()
    for k in s1:
        assert s1[k] == pytest.approx(s2[k], abs=1e-6), k
    assert len(g1) == len(g2) > 0
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_several_minibatches_do_not_fuse():
    m = _module("gae", minibatch=2)
    assert m.fuses_first_minibatch(4) is False
    assert _module("gae", minibatch=4).fuses_first_minibatch(4) is True


def test_dropout_on_does_not_fuse():
    """Old log-probs must be eval-mode ones: a train-mode forward with dropout differs."""
    m = _module("gae", minibatch=4)
    m.policy.config.attention_dropout = 0.1
    for layer in m.policy.model.layers:
        layer.self_attn.attention_dropout = 0.1
    assert m.fuses_first_minibatch(4) is False
