"""The Lagrange multiplier of a safety constraint (Safe-RLHF, Dai et al. 2023, its PPO-Lag rule).

RL maximises the objective subject to ``E[cost] <= threshold``; the Lagrangian's multiplier
``lambda = exp(log_lambda)`` is updated every step by one SGD step on
``lambda_loss = -(J_c - threshold) * exp(log_lambda)``, where ``J_c`` is the mean cost over the
last ``window`` sequences:

    log_lambda <- log_lambda + lr * lambda * (J_c - threshold)

(clamped to ``log(max_value)`` when a maximum is given). A violated constraint (``J_c`` above
the threshold) raises ``lambda``, a satisfied one lowers it; in log space it never goes below 0.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any


class LagrangeMultiplier:
    """``lambda`` of ``objective - lambda * (cost - threshold)``, updated from the costs seen.

    Args:
        init: the initial multiplier (> 0).
        lr: the SGD step size on ``log lambda``.
        threshold: the constraint's bound on the expected cost.
        max_value: an upper bound on ``lambda``; None = none.
        window: how many of the latest sequences' costs ``J_c`` averages (Safe-RLHF: 128).
    """

    def __init__(
        self,
        init: float,
        lr: float,
        threshold: float,
        max_value: float | None = None,
        window: int = 128,
    ) -> None:
        if not init > 0:
            raise ValueError(f"the initial Lagrange multiplier must be > 0, got {init}")
        if lr < 0:
            raise ValueError(f"the multiplier's learning rate must be >= 0, got {lr}")
        if max_value is not None and not max_value >= init:
            raise ValueError(f"max_value={max_value} must be >= init={init}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.log_value = math.log(init)
        self.lr, self.threshold = float(lr), float(threshold)
        self.max_log = None if max_value is None else math.log(max_value)
        self.costs: deque[float] = deque(maxlen=window)

    @property
    def value(self) -> float:
        return math.exp(self.log_value)

    def window_cost(self) -> float:
        """``J_c``: the mean cost over the window (nan before any cost)."""
        return sum(self.costs) / len(self.costs) if self.costs else math.nan

    def update(self, costs: Iterable[float]) -> float:
        """Add this step's sequence costs to the window, take one step on ``log lambda`` from
        the window's mean; returns the new ``lambda``."""
        self.costs.extend(float(c) for c in costs)
        if not self.costs:
            return self.value
        self.log_value += self.lr * self.value * (self.window_cost() - self.threshold)
        if self.max_log is not None:
            self.log_value = min(self.log_value, self.max_log)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: log lambda and the window's costs."""
        return {"log_value": self.log_value, "costs": list(self.costs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.log_value = float(state["log_value"])
        self.costs.clear()
        self.costs.extend(float(c) for c in state["costs"])
