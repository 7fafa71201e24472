"""Loss aggregation: a (B, T) per-token loss to a scalar, with verl's ``loss_agg_mode`` names
(:data:`LOSS_AGG_MODES`), used with the advantage estimators of :mod:`mplus.algo.advantages`."""

from __future__ import annotations

import torch
from torch import Tensor

from mplus.algo.core import Reduce, masked_mean, masked_sum

# ------------------------------------------------------------------ loss aggregation

LOSS_AGG_MODES = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)


def aggregate_loss(
    loss_mat: Tensor,
    mask: Tensor,
    mode: str = "token-mean",
    reduce: Reduce = None,
    max_len: int | None = None,
) -> Tensor:
    """Reduce a (B, T) per-token loss to a scalar, with verl's ``loss_agg_mode`` names.

    Modes (only rows with at least one masked token count as sequences):

    - ``"token-mean"``: sum over all tokens / number of tokens. Every token weighs the same
      (PPO today, DAPO); without ``reduce`` bit-identical to :func:`mplus.algo.policy_loss`'s
      reduction (:func:`mplus.algo.masked_mean`).
    - ``"seq-mean-token-mean"``: mean over sequences of each sequence's token mean (original
      GRPO): a short response's tokens weigh more.
    - ``"seq-mean-token-sum"``: mean over sequences of each sequence's token sum (Dr. GRPO):
      no per-length normalisation, so length is not rewarded or punished through the loss.
    - ``"seq-mean-token-sum-norm"``: ``"seq-mean-token-sum"`` divided by the constant
      ``max_len`` (e.g. ``generation.max_new_tokens``; verl's ``loss_scale_factor``), which keeps
      Dr. GRPO's weighting with a loss of ``token-mean``'s scale.

    Data parallel: without ``reduce`` the result is this process's mean, and the caller reweights
    it by its share (``mplus.distributed.token_share`` for ``token-mean``, as the PPO module does
    today). With ``reduce`` (``mplus.distributed.all_reduce_sum``) the denominator is the global
    token (or sequence) count and the result is multiplied by the number of processes, so it is
    already that share: the mean over processes, which is what DDP's gradient averaging takes,
    equals one process holding the whole batch. Do not multiply it by ``token_share`` again.
    ``reduce`` sees only counts, so the gradient is untouched.

    Args:
        loss_mat: (B, T) per-token loss (with grad); padding may hold nan/inf.
        mask: (B, T) response mask.
        mode: One of :data:`LOSS_AGG_MODES`.
        reduce: Sums a tensor over data-parallel processes, or None for this process alone.
        max_len: The constant divisor of ``"seq-mean-token-sum-norm"``; ignored otherwise.

    Returns:
        0-dim loss; 0 when there is no token (or sequence) at all.

    Raises:
        ValueError: On an unknown ``mode``, or ``"seq-mean-token-sum-norm"`` without a positive
            ``max_len``.
    """
    if mode not in LOSS_AGG_MODES:
        raise ValueError(
            f"unknown loss aggregation mode {mode!r}; expected one of {LOSS_AGG_MODES}"
        )
    if mode == "seq-mean-token-sum-norm" and (max_len is None or max_len <= 0):
        raise ValueError(f"loss aggregation {mode!r} needs max_len > 0, got {max_len}")
    keep = mask.bool()
    if mode == "token-mean":
        if reduce is None:
            return masked_mean(loss_mat, keep)
        total, count = masked_sum(loss_mat, keep), keep.sum()
    else:
        n_tokens = keep.sum(dim=1)
        seq = masked_sum(loss_mat, keep, dim=1)
        if mode == "seq-mean-token-mean":
            seq = seq / n_tokens.clamp_min(1)
        elif mode == "seq-mean-token-sum-norm":
            seq = seq / max_len
        valid = n_tokens > 0
        total, count = masked_sum(seq, valid), valid.sum()
    if reduce is None:
        return total / count.clamp_min(1)
    # one reduction for both: the global count and the number of processes
    one = torch.ones((), dtype=torch.float64, device=count.device)
    counts = reduce(torch.stack([count.double(), one]))
    scale = counts[1] / counts[0].clamp_min(1)
    return total * scale.to(total.dtype)
