"""``python -m mplus.plan`` against the arithmetic worked out by hand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.test_hardware import _compose

GIB = 1024**3
# Mistral-7B-v0.1: 32 layers, hidden 4096, MLP 14336, 32 heads / 8 KV heads of 128, vocab 32000
EMB = 32000 * 4096
LAYER = (4096 * 4096 * 2 + 4096 * 1024 * 2) + 3 * 4096 * 14336 + 2 * 4096  # attn + mlp + norms
P_LM = 2 * EMB + 32 * LAYER + 4096  # embeddings + lm_head + layers + final norm
P_SEQ = P_LM - EMB + 4096  # the value/reward model: a 4096 -> 1 score head instead of lm_head


def test_hand_parameter_counts_match_the_published_size():
    assert P_LM == 7_241_732_096


def test_mistral_7b_ppo_on_8xa100_matches_the_hand_arithmetic():
    from mplus.plan import plan

    p = plan(_compose("model=mistral-7b", "algo=ppo", "hardware=8xa100"))
    rows = {r.name: r for r in p.rows}
    assert list(rows) == ["policy", "value", "reference", "reward model"]
    assert rows["policy"].params == P_LM and rows["value"].params == P_SEQ
    # 16 B per trainable parameter (fp32 weights 4 + grads 4 + Adam 8), 2 B per frozen bf16
    # parameter, all divided by the 8 FSDP shards
    assert rows["policy"].per_gpu == pytest.approx(16 * P_LM / 8)
    assert rows["value"].per_gpu == pytest.approx(16 * P_SEQ / 8)
    assert rows["reference"].per_gpu == pytest.approx(2 * P_LM / 8)
    assert rows["reward model"].per_gpu == pytest.approx(2 * P_SEQ / 8)
    states = (16 * (P_LM + P_SEQ) + 2 * (P_LM + P_SEQ)) / 8
    assert p.states == pytest.approx(states)
    assert p.states / GIB == pytest.approx(30.08, abs=0.01)
    # rollout phase: the policy gathered in bf16 (2 B/param) + KV cache of 4 rows x 216 tokens
    kv = 2 * 32 * 4 * 216 * 1024 * 2
    assert p.rollout == pytest.approx(2 * P_LM + kv + 4 * 32000 * 8)
    assert p.fits is True and p.peak < 72 * GIB


@pytest.mark.parametrize("algo", ["grpo", "rloo", "reinforce_pp"])
def test_critic_free_rl_on_8xa100_holds_no_value_model(algo):
    """GRPO & co: PPO's plan less the value model's row, 16 B x P_SEQ / 8 = 13.24 GiB per GPU."""
    from mplus.plan import format_plan, plan

    ppo = plan(_compose("model=mistral-7b", "algo=ppo", "hardware=8xa100"))
    cfg = _compose("model=mistral-7b", f"algo={algo}", "hardware=8xa100")
    p = plan(cfg)
    assert [r.name for r in p.rows] == ["policy", "reference", "reward model"]
    value = 16 * P_SEQ / 8
    assert value / GIB == pytest.approx(13.24, abs=0.01)
    assert p.states == pytest.approx((16 * P_LM + 2 * (P_LM + P_SEQ)) / 8)
    assert ppo.peak - p.peak == pytest.approx(value)  # same activations and rollout phase
    assert p.peak / ppo.peak == pytest.approx(1 - 13.24 / 43.67, abs=0.01)  # ~30% less
    text = format_plan(p, cfg)
    assert not any(line.startswith("value ") for line in text.splitlines())
    assert "no value model" in text


def test_the_same_run_on_one_gpu_does_not_fit():
    from mplus.plan import plan

    p = plan(_compose("model=mistral-7b", "algo=ppo", "hardware=1xgpu"))
    assert p.states == pytest.approx(18 * (P_LM + P_SEQ))  # nothing sharded
    assert p.fits is False


def test_lora_trains_only_the_adapters():
    from mplus.plan import plan

    p = plan(
        _compose(
            "model=mistral-7b",
            "algo=dpo",
            "hardware=1xgpu",
            "model.lora.enabled=true",
            "model.lora.r=8",
        )
    )
    policy = p.rows[0]
    # q, k, v, o per layer: r x (in + out) = 8 x (4096+4096, 4096+1024, 4096+1024, 4096+4096)
    lora = 32 * 8 * (8192 + 5120 + 5120 + 8192)
    assert policy.trainable == lora and policy.params == P_LM + lora
    assert policy.per_gpu == pytest.approx(16 * lora + 2 * P_LM)


def test_cli_prints_the_table_and_a_verdict():
    proc = subprocess.run(
        [sys.executable, "-m", "mplus.plan", "model=mistral-7b", "algo=ppo", "hardware=8xa100"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "policy         7,241,732,096" in out and "verdict: FITS" in out
    assert "13.49" in out  # policy GiB per GPU: 16 x 7,241,732,096 / 8 / 2^30
    bad = subprocess.run(
        [sys.executable, "-m", "mplus.plan", "algo.kl.coef=-1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "algo.kl.coef" in bad.stderr
