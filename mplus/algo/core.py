"""Masked statistics and per-token quantities computed from logits.

Shapes: ``B`` batch, ``T`` response tokens, ``V`` vocabulary. A ``mask`` is a (B, T) float or bool
tensor whose nonzero entries mark real response tokens; masked-out entries never reach a result,
even when they hold ``nan`` or ``inf``. Statistics over a data-parallel batch take a ``reduce``
callable, so one process and N processes run the same code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# Sums a tensor over data-parallel processes (e.g. ``mplus.distributed.all_reduce_sum``); None
# means a single process. Passed in rather than imported: this package stays torch-only.
Reduce = Callable[[Tensor], Tensor] | None


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


def _total_and_count(
    x: Tensor, mask: Tensor, dim: int | None, reduce: Reduce
) -> tuple[Tensor, Tensor]:
    """Masked sum of ``x`` and the number of masked entries, summed over processes by ``reduce``.

    One call of ``reduce`` carries both, in float64 so that a large count stays exact whatever
    ``x``'s dtype; the sum is rounded back to ``x``'s dtype, which leaves a single process's
    float32 sum unchanged.
    """
    total, count = masked_sum(x, mask, dim), mask.bool().sum(dim=dim)
    if reduce is not None:
        if dim is not None:
            raise ValueError("reduce needs dim=None: rows are not shared between processes")
        both = reduce(torch.stack([total.detach().double(), count.double()]))
        total, count = both[0].to(x.dtype), both[1].round().long()
    return total, count


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None, reduce: Reduce = None) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is nonzero.

    An empty mask (along ``dim``) gives 0 rather than nan, so a batch of empty responses does not
    turn the loss into nan.

    Args:
        x: Values, any shape.
        mask: Same shape as ``x``.
        dim: Dimension to reduce; ``None`` reduces everything to a scalar.
        reduce: Sums a tensor over data-parallel processes (``mplus.distributed.all_reduce_sum``)
            so the mean is over every process's entries; None for this process alone. Needs
            ``dim=None``; the result is then detached (a statistic, not a loss).

    Returns:
        The mean, with ``dim`` removed (a 0-dim tensor when ``dim`` is None).
    """
    total, count = _total_and_count(x, mask, dim, reduce)
    return total / count.clamp_min(1)


def masked_moments(
    x: Tensor, mask: Tensor, unbiased: bool = True, reduce: Reduce = None
) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``x`` over all entries where ``mask`` is nonzero.

    Two passes (the mean, then the mean squared deviation from it) rather than ``E[x^2] - E[x]^2``,
    which cancels catastrophically in float32 when the mean is large against the spread.

    Args:
        x: Values, any shape.
        mask: Same shape as ``x``.
        unbiased: Apply Bessel's correction n / (n - 1), n counted over every process. With a
            single masked entry the correction is skipped (the variance is then 0), not divided
            by zero.
        reduce: As in :func:`masked_mean`: statistics of every process's entries.

    Returns:
        ``(mean, var)``, 0-dim tensors of ``x``'s dtype.
    """
    total, count = _total_and_count(x, mask, None, reduce)
    mean = total / count.clamp_min(1)
    squares, _ = _total_and_count((x - mean) ** 2, mask, None, reduce)
    var = squares / count.clamp_min(1)
    if unbiased:
        n = count.to(var.dtype)
        var = var * n / (n - 1).clamp_min(1)
    return mean, var


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True, reduce: Reduce = None) -> Tensor:
    """Variance of ``x`` over all entries where ``mask`` is nonzero (see :func:`masked_moments`).

    Returns:
        A 0-dim tensor.
    """
    return masked_moments(x, mask, unbiased, reduce)[1]


def masked_whiten(
    x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8, reduce: Reduce = None
) -> Tensor:
    """Normalise ``x`` to mean 0 and variance 1 over the masked entries.

    Mean and (unbiased) variance are taken over all masked entries of the whole tensor, not per
    row, as in PPO advantage normalisation; with ``reduce``, over every process's entries, so N
    processes whiten as one process holding the whole batch would (up to float summation order).

    Args:
        x: Values, e.g. advantages of shape (B, T).
        mask: Same shape as ``x``.
        shift_mean: If False, add the mean back after scaling (only the scale changes), as is
            usual for rewards.
        eps: Added to the variance before the square root.
        reduce: As in :func:`masked_mean`.

    Returns:
        Same shape as ``x``; masked-out entries are 0.
    """
    mean, var = masked_moments(x, mask, reduce=reduce)
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
