"""Masked statistics and per-token quantities computed from logits.

Shapes: ``B`` batch, ``T`` response tokens, ``V`` vocabulary. A ``mask`` is a (B, T) float or bool
tensor whose nonzero entries mark real response tokens; masked-out entries never reach a result,
even when they hold ``nan`` or ``inf``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _keep(x: Tensor, mask: Tensor) -> Tensor:
    # `where` rather than `x * mask`: padding may hold inf/nan (e.g. exp of a garbage log-ratio),
    # and inf * 0 would poison the sum.
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x`` over the entries where ``mask`` is nonzero.

    Args:
        x: Values, any shape.
        mask: Same shape as ``x``.
        dim: Dimension to reduce; ``None`` reduces everything to a scalar.

    Returns:
        The sum, with ``dim`` removed (a 0-dim tensor when ``dim`` is None).
    """
    return _keep(x, mask).sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is nonzero.

    An empty mask (along ``dim``) gives 0 rather than nan, so a batch of empty responses does not
    turn the loss into nan.

    Args:
        x: Values, any shape.
        mask: Same shape as ``x``.
        dim: Dimension to reduce; ``None`` reduces everything to a scalar.

    Returns:
        The mean, with ``dim`` removed (a 0-dim tensor when ``dim`` is None).
    """
    count = mask.bool().sum(dim=dim).clamp_min(1)
    return masked_sum(x, mask, dim) / count


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of ``x`` over all entries where ``mask`` is nonzero.

    Args:
        x: Values, any shape.
        mask: Same shape as ``x``.
        unbiased: Apply Bessel's correction n / (n - 1). With a single masked entry the
            correction is skipped (the variance is then 0), not divided by zero.

    Returns:
        A 0-dim tensor.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.bool().sum().to(var.dtype)
        var = var * n / (n - 1).clamp_min(1)
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise ``x`` to mean 0 and variance 1 over the masked entries.

    Mean and (unbiased) variance are taken over all masked entries of the whole tensor, not per
    row, as in PPO advantage normalisation.

    Args:
        x: Values, e.g. advantages of shape (B, T).
        mask: Same shape as ``x``.
        shift_mean: If False, add the mean back after scaling (only the scale changes), as is
            usual for rewards.
        eps: Added to the variance before the square root.

    Returns:
        Same shape as ``x``; masked-out entries are 0.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _keep(whitened, mask)


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """Log-probability of each label token under ``logits``, computed in float32.

    Args:
        logits: (B, T, V), already aligned with ``labels`` (logits at position t predict
            ``labels[:, t]``; shift before calling).
        labels: (B, T) token ids. Negative ids (such as -100) are read as token 0 so that padding
            does not crash the gather; mask those positions downstream.

    Returns:
        (B, T) float32 log-probabilities.
    """
    logits = logits.float()
    index = labels.clamp_min(0).unsqueeze(-1)
    # log_softmax(x)[y] = x[y] - logsumexp(x): avoids materialising a second (B, T, V) tensor.
    return logits.gather(-1, index).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution at each position, computed in float32.

    Args:
        logits: (B, T, V).

    Returns:
        (B, T) float32 entropies in nats.
    """
    logits = logits.float()
    # H = logsumexp(x) - sum_v softmax(x)_v * x_v
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(dim=-1)
