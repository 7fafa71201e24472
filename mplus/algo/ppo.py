"""PPO: generalised advantage estimation, clipped policy and value losses.

All per-token tensors are (B, T) over response tokens; ``mask`` is (B, T), nonzero for real
response tokens (right-padded, contiguous from index 0).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from mplus.algo.aggregation import aggregate_loss
from mplus.algo.core import Reduce, _keep, masked_mean, masked_var


class PolicyLoss(NamedTuple):
    """Clipped-surrogate loss and its detached stats (0-dim float tensors)."""

    loss: Tensor
    clipfrac: Tensor
    approx_kl: Tensor
    ratio_mean: Tensor


class ValueLoss(NamedTuple):
    """Clipped value loss and its detached stats (0-dim float tensors)."""

    loss: Tensor
    clipfrac: Tensor
    vpred_mean: Tensor


@torch.no_grad()
def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016).

    The episode ends at the last masked token of each row: the value after it is taken as 0, and
    rewards/values at masked-out positions are ignored.

    Args:
        rewards: (B, T) per-token rewards.
        values: (B, T) value predictions V(s_t).
        mask: (B, T) response mask.
        gamma: Discount factor.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, each (B, T), detached, with ``returns = advantages + values``
        and 0 at masked-out positions.
    """
    keep = mask.bool()
    rewards = _keep(rewards, keep)
    values = _keep(values, keep)
    advantages = torch.zeros_like(values)
    last_gae = torch.zeros_like(values[:, 0])  # (B,)
    next_value = torch.zeros_like(values[:, 0])  # (B,)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        # The mask keeps advantages 0 on masked-out positions whatever the padding side.
        last_gae = (delta + gamma * lam * last_gae) * keep[:, t]
        advantages[:, t] = last_gae
        next_value = values[:, t]
    returns = _keep(advantages + values, keep)
    return advantages, returns


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    dual_clip: float | None = None,
    loss_agg_mode: str = "token-mean",
    reduce: Reduce = None,
    max_len: int | None = None,
) -> PolicyLoss:
    """PPO clipped surrogate loss, reduced to one number by ``loss_agg_mode``.

    Per token, ``max(-A * r, -A * clip(r, 1 - eps, 1 + eps))`` with ``r = exp(logp - old_logp)``.
    With ``dual_clip = c`` (Ye et al. 2020), tokens with ``A < 0`` are further capped at
    ``-c * A`` so that a huge ratio cannot produce an unbounded loss.

    Args:
        logprobs: (B, T) log-probs under the current policy (with grad).
        old_logprobs: (B, T) log-probs under the rollout policy.
        advantages: (B, T) advantages, usually whitened.
        mask: (B, T) response mask.
        clip_eps: Ratio clip range.
        dual_clip: Dual-clip constant c > 1, or None to disable.
        loss_agg_mode, reduce, max_len: how the per-token losses become ``loss``
            (:func:`mplus.algo.aggregate_loss`; the default is the mean over all masked tokens of
            this process, and with ``reduce`` the loss is already this process's share of the
            global aggregate). The statistics are always this process's token means.

    Returns:
        ``PolicyLoss``: ``loss`` (0-dim, with grad); ``clipfrac``, share of masked tokens where
        the clipped term is strictly larger than the unclipped one (dual clipping not counted);
        ``approx_kl``, masked mean of ``0.5 * (logp - old_logp)^2`` (the k2 estimator of
        KL(old || new)); ``ratio_mean``, masked mean of ``r``.

    Raises:
        ValueError: If ``dual_clip`` is not greater than 1.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        capped = torch.minimum(per_token, -dual_clip * advantages)
        per_token = torch.where(advantages < 0, capped, per_token)
    loss = aggregate_loss(per_token, mask, loss_agg_mode, reduce=reduce, max_len=max_len)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(0.5 * log_ratio.float() ** 2, mask)
        ratio_mean = masked_mean(ratio.float(), mask)
    return PolicyLoss(loss, clipfrac, approx_kl, ratio_mean)


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_eps: float | None = 0.2,
) -> ValueLoss:
    """Clipped value loss ``0.5 * max((v - R)^2, (clip(v, old - eps, old + eps) - R)^2)``.

    Averaged over all masked tokens of the batch.

    Args:
        values: (B, T) current value predictions (with grad).
        old_values: (B, T) value predictions at rollout time.
        returns: (B, T) GAE returns.
        mask: (B, T) response mask.
        clip_eps: Clip range around ``old_values``; None disables clipping.

    Returns:
        ``ValueLoss``: ``loss`` (0-dim, with grad); ``clipfrac``, share of masked tokens where
        the clipped error is strictly larger (0 when clipping is off); ``vpred_mean``, masked
        mean of ``values``.
    """
    unclipped = (values - returns) ** 2
    if clip_eps is None:
        per_token = unclipped
        clipped_active = torch.zeros_like(unclipped, dtype=torch.bool)
    else:
        v_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        clipped = (v_clipped - returns) ** 2
        per_token = torch.maximum(unclipped, clipped)
        clipped_active = clipped > unclipped
    loss = 0.5 * masked_mean(per_token, mask)
    with torch.no_grad():
        clipfrac = masked_mean(clipped_active.float(), mask)
        vpred_mean = masked_mean(values.float(), mask)
    return ValueLoss(loss, clipfrac, vpred_mean)


@torch.no_grad()
def explained_variance(
    values: Tensor, returns: Tensor, mask: Tensor, reduce: Reduce = None
) -> float:
    """``1 - Var(R - V) / Var(R)`` over masked tokens: 1 is perfect, 0 no better than a constant.

    Zero-variance returns give nan, in one process and in N alike: the ratio is undefined, and a
    clamped denominator would log a huge negative number that looks like a broken critic. This
    is the convention of OpenAI baselines, Stable-Baselines3 and CleanRL (TRL and OpenRLHF do not
    log the quantity). Variances are biased (the n / (n - 1) factors cancel in the ratio anyway).

    Args:
        values: (B, T) value predictions.
        returns: (B, T) returns.
        mask: (B, T) response mask.
        reduce: Sums a tensor over data-parallel processes (see :func:`mplus.algo.masked_mean`):
            the statistic of every process's tokens, the same float on every process.

    Returns:
        A Python float; nan when the returns have zero variance.
    """
    var_returns = masked_var(returns.float(), mask, unbiased=False, reduce=reduce).item()
    # var_returns is the all-process value, so every process returns here or none does (and
    # none is left waiting in the next reduction)
    if var_returns == 0.0:
        return float("nan")
    residual = (returns - values).float()
    var_residual = masked_var(residual, mask, unbiased=False, reduce=reduce).item()
    return 1.0 - var_residual / var_returns
