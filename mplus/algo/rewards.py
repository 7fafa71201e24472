"""Reward shaping for PPO: the response-length penalty and per-token rewards."""

from __future__ import annotations

import torch
from torch import Tensor

LENGTH_PENALTY_KINDS = ("linear", "overlong")


def length_penalty(
    lengths: Tensor,
    max_new_tokens: int,
    coef: float,
    kind: str = "linear",
    threshold: float | None = None,
) -> Tensor:
    """Non-negative length penalty, to be subtracted from the sequence score.

    Args:
        lengths: (B,) response lengths in tokens.
        max_new_tokens: Generation budget (> 0).
        coef: Penalty at ``max_new_tokens`` (>= 0).
        kind: ``"linear"``: ``coef * length / max_new_tokens``. ``"overlong"``: 0 up to
            ``threshold`` tokens, then a linear ramp that reaches ``coef`` at ``max_new_tokens``
            and stays there.
        threshold: Start of the ``"overlong"`` ramp, in tokens; None means
            ``0.75 * max_new_tokens``. Ignored by ``"linear"``.

    Returns:
        (B,) float32 penalties.

    Raises:
        ValueError: On an unknown ``kind``, ``max_new_tokens <= 0``, ``coef < 0``, or an
            ``"overlong"`` threshold outside ``[0, max_new_tokens)``.
    """
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be > 0, got {max_new_tokens}")
    if coef < 0:
        raise ValueError(f"length penalty coef must be >= 0, got {coef}")
    lengths = lengths.float()
    if kind == "linear":
        return coef * lengths / max_new_tokens
    if kind == "overlong":
        if threshold is None:
            threshold = 0.75 * max_new_tokens
        if not 0 <= threshold < max_new_tokens:
            raise ValueError(
                f"overlong threshold must be in [0, max_new_tokens={max_new_tokens}), "
                f"got {threshold}"
            )
        ramp = (lengths - threshold) / (max_new_tokens - threshold)
        return coef * ramp.clamp(0.0, 1.0)
    raise ValueError(
        f"unknown length penalty kind {kind!r}; expected one of {LENGTH_PENALTY_KINDS}"
    )


def token_rewards(scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Per-token PPO rewards: a KL penalty on every token plus the score on the last one.

    Args:
        scores: (B,) sequence-level scores (reward model output, minus any length penalty).
        kl: (B, T) per-token KL estimates (see ``kl_estimate``).
        mask: (B, T) response mask.
        kl_coef: KL penalty coefficient.

    Returns:
        (B, T): ``-kl_coef * kl`` on masked tokens, 0 elsewhere, with ``scores[i]`` added at the
        last masked token of row i. Rows with an empty mask are all 0.
    """
    keep = mask.bool()
    dtype = torch.promote_types(kl.dtype, scores.dtype)
    rewards = torch.where(
        keep, -kl_coef * kl.to(dtype), torch.zeros((), dtype=dtype, device=kl.device)
    )
    positions = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)
    last = torch.where(keep, positions, -1).amax(dim=1)  # (B,), -1 for empty rows
    bonus = torch.where(last >= 0, scores.to(dtype), 0.0)
    return rewards.scatter_add(1, last.clamp_min(0).unsqueeze(1), bonus.unsqueeze(1))


def normalized_score(
    raw: Tensor, mean: float, std: float, *, normalize: bool = True, clip: float | None = None
) -> Tensor:
    """A reward model's score as PPO uses it: ``(raw - mean) / std`` with the model's own
    validation statistics (``normalize``; ``std`` floored at 1e-6), then clipped to
    ``[-clip, clip]`` (``clip``: None = no clip)."""
    out = raw.float()
    if normalize:
        out = (out - mean) / max(float(std), 1e-6)
    if clip is not None:
        out = out.clamp(-clip, clip)
    return out


def weighted_scores(scores: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """The weighted sum ``sum_i weights[i] * scores[i]`` of several reward models' (B,) scores
    (normalised first: :func:`normalized_score`), over the names in ``weights``.

    Raises:
        ValueError: ``weights`` is empty or names a score that is not in ``scores``.
    """
    if not weights:
        raise ValueError("weighted_scores: no weights")
    if missing := sorted(set(weights) - set(scores)):
        raise ValueError(f"weighted_scores: no scores for {missing}; have {sorted(scores)}")
    return sum(float(w) * scores[name].float() for name, w in weights.items())


def lagrangian_score(objective: Tensor, cost: Tensor, lam: float) -> Tensor:
    """The constrained objective's per-sequence score (Safe-RLHF's combination, Dai et al.
    2023): ``(objective - lam * cost) / (1 + lam)``. The division keeps its scale that of the
    objective's whatever ``lam`` (>= 0) has grown to."""
    if lam < 0:
        raise ValueError(f"the Lagrange multiplier must be >= 0, got {lam}")
    return (objective.float() - lam * cost.float()) / (1.0 + lam)
