"""KL estimators and KL controllers against values worked out by hand."""

import math

import pytest
import torch
from torch.testing import assert_close

from mplus.algo import AdaptiveKLController, FixedKLController, kl_estimate

LN2 = math.log(2.0)
# Token 0: p = 0.5, p_ref = 0.25; token 1: p = 0.25, p_ref = 0.5.
LOGP = torch.log(torch.tensor([[0.5, 0.25]]))
REF = torch.log(torch.tensor([[0.25, 0.5]]))


def test_k1():
    # logp - logp_ref = ln 2, -ln 2
    assert_close(kl_estimate(LOGP, REF, "k1"), torch.tensor([[LN2, -LN2]]))
    assert_close(kl_estimate(LOGP, REF), torch.tensor([[LN2, -LN2]]))


def test_k2():
    # 0.5 * (+-ln 2)^2
    assert_close(kl_estimate(LOGP, REF, "k2"), torch.tensor([[0.5 * LN2**2, 0.5 * LN2**2]]))


def test_k3():
    # d = logp_ref - logp. Token 0: d = -ln 2, e^d = 0.5: (0.5 - 1) + ln 2 = ln 2 - 0.5 ~ 0.1931
    # Token 1: d = ln 2, e^d = 2: (2 - 1) - ln 2 = 1 - ln 2 ~ 0.3069
    assert_close(kl_estimate(LOGP, REF, "k3"), torch.tensor([[LN2 - 0.5, 1.0 - LN2]]))
    # Equal log-probs: exactly 0.
    assert_close(kl_estimate(LOGP, LOGP, "k3"), torch.zeros(1, 2))


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(LOGP, REF, "k4")


def test_fixed_controller():
    ctl = FixedKLController(0.05)
    ctl.update(current_kl=100.0, n_steps=1000)
    assert ctl.value == 0.05
    assert ctl.state_dict() == {"value": 0.05}
    with pytest.raises(ValueError):
        FixedKLController(-0.1)


def test_adaptive_controller_updates():
    ctl = AdaptiveKLController(init_coef=0.2, target=6.0, horizon=10000)
    # KL 9 vs target 6: error 9/6 - 1 = 0.5, clipped to 0.2; factor 1 + 0.2 * 256/10000 = 1.00512
    ctl.update(current_kl=9.0, n_steps=256)
    assert ctl.value == pytest.approx(0.2 * 1.00512)  # 0.201024
    # KL 5.4: error 0.9 - 1 = -0.1 (inside the clip); factor 1 - 0.1 * 1000/10000 = 0.99
    ctl.update(current_kl=5.4, n_steps=1000)
    assert ctl.value == pytest.approx(0.201024 * 0.99)  # 0.19901376
    # KL 0: error -1 clipped to -0.2; factor 1 - 0.2 * 10000/10000 = 0.8
    ctl.update(current_kl=0.0, n_steps=10000)
    assert ctl.value == pytest.approx(0.19901376 * 0.8)


def test_adaptive_controller_state_round_trip():
    ctl = AdaptiveKLController(init_coef=0.2, target=6.0, horizon=10000)
    ctl.update(current_kl=9.0, n_steps=256)
    restored = AdaptiveKLController(init_coef=1.0, target=6.0, horizon=10000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value


@pytest.mark.parametrize("kwargs", [{"init_coef": -1.0}, {"target": 0.0}, {"horizon": 0}], ids=str)
def test_adaptive_controller_rejects_bad_settings(kwargs):
    settings = {"init_coef": 0.1, "target": 6.0, "horizon": 10000} | kwargs
    with pytest.raises(ValueError):
        AdaptiveKLController(**settings)


def _expected_loss_gradient(kind: str, theta: torch.Tensor, ref_logp: torch.Tensor):
    """E_{x~pi}[grad_theta k(x)] with the samples' weights pi(x) held fixed, exactly.

    That is what a sampled loss term ``mean(k(logp(x), logp_ref(x)))`` follows on average.
    """
    theta = theta.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    weights = logp.exp().detach()
    per_x = kl_estimate(logp[None], ref_logp[None], kind)[0]
    (grad,) = torch.autograd.grad((weights * per_x).sum(), theta)
    return grad


def test_kl_loss_term_gradients_on_a_categorical():
    # A 5-way categorical pi = softmax(theta) against a fixed reference.
    theta = torch.tensor([0.3, -1.2, 0.8, 0.0, 2.0], dtype=torch.float64)
    ref_logp = torch.log(torch.tensor([0.1, 0.3, 0.2, 0.25, 0.15], dtype=torch.float64))
    # grad KL(pi || ref) by hand: dKL/dtheta_j = pi_j * (lr_j - sum_i pi_i lr_i), lr = log pi - ref
    pi = torch.softmax(theta, -1)
    lr = torch.log(pi) - ref_logp
    true = pi * (lr - (pi * lr).sum())
    # grad KL(ref || pi) = -sum_x ref(x) grad log pi(x) = pi - ref
    reverse = pi - ref_logp.exp()

    assert_close(_expected_loss_gradient("k2", theta, ref_logp), true)
    assert_close(_expected_loss_gradient("k3", theta, ref_logp), reverse)
    assert_close(
        _expected_loss_gradient("k1", theta, ref_logp), torch.zeros(5, dtype=torch.float64)
    )
    assert float(true @ reverse) > 0  # k3 pushes the same way as the true gradient


def test_k1_as_a_loss_term_is_refused_at_start():
    from mplus.config import ConfigError, KLConfig

    with pytest.raises(ConfigError, match="algo.kl.estimator: k1 has zero expected gradient"):
        KLConfig(estimator="k1", in_reward=False)
    KLConfig(estimator="k3", in_reward=False)
    KLConfig(estimator="k1", in_reward=True)
