"""Per-token KL estimators and KL-coefficient controllers.

Estimators follow Schulman, "Approximating KL divergence" (2020): with tokens sampled from the
policy and ``log_ratio = logp - logp_ref``, each estimates KL(policy || ref).

Which one where:

- **In the reward** (``algo.kl.in_reward=true``, PPO's and REINFORCE++'s rule): the estimate is a
  per-token penalty that is not differentiated; k1 is the unbiased classic, k3 unbiased and
  non-negative.
- **As a loss term** (``in_reward=false``, GRPO's rule) the estimate is differentiated through
  ``logp`` with the samples held fixed. Then k1's expected gradient is ``E[grad log p] = 0``
  (it pushes nowhere on average: refused at start), k2's is exactly ``grad KL(policy || ref)``,
  and k3's is ``grad KL(ref || policy)``, the reverse KL, a good leash with lower variance.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

KL_KINDS = ("k1", "k2", "k3")


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(policy || ref) from sampled-token log-probs.

    Args:
        logprobs: (B, T) log-probs of the sampled tokens under the policy.
        ref_logprobs: (B, T) log-probs of the same tokens under the reference model.
        kind: ``"k1"``: ``logp - logp_ref`` (unbiased, can be negative);
            ``"k2"``: ``0.5 * (logp - logp_ref)^2`` (biased, non-negative, low variance);
            ``"k3"``: ``(exp(logp_ref - logp) - 1) - (logp_ref - logp)`` (unbiased,
            non-negative).

    Returns:
        (B, T) per-token estimates; mask them before summing.

    Raises:
        ValueError: If ``kind`` is not one of ``KL_KINDS``.
    """
    log_ratio = logprobs - ref_logprobs
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator kind {kind!r}; expected one of {KL_KINDS}")


class FixedKLController:
    """Constant KL coefficient; ``update`` does nothing.

    Args:
        coef: The KL coefficient (>= 0).
    """

    def __init__(self, coef: float) -> None:
        if coef < 0:
            raise ValueError(f"KL coefficient must be >= 0, got {coef}")
        self.value = float(coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op, so fixed and adaptive controllers are interchangeable."""

    def state_dict(self) -> dict[str, Any]:
        """Current coefficient, for checkpointing."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the coefficient saved by ``state_dict``."""
        self.value = float(state["value"])


class AdaptiveKLController:
    """Adaptive KL coefficient steering the observed KL towards a target (Ziegler et al. 2019).

    ``coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon``.

    Args:
        init_coef: Starting coefficient (>= 0).
        target: Target KL per sequence, in the same units as the ``current_kl`` passed to
            ``update`` (> 0).
        horizon: Number of samples over which the coefficient adapts (> 0).
    """

    def __init__(self, init_coef: float, target: float, horizon: int) -> None:
        if init_coef < 0:
            raise ValueError(f"init_coef must be >= 0, got {init_coef}")
        if target <= 0:
            raise ValueError(f"target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.value = float(init_coef)
        self.target = float(target)
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Adapt the coefficient after ``n_steps`` samples that showed KL ``current_kl``."""
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        """Current coefficient, for checkpointing (target and horizon come from the config)."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the coefficient saved by ``state_dict``."""
        self.value = float(state["value"])
