"""Pairwise preference losses: Bradley-Terry for reward models, DPO and its variants."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mplus.algo.core import masked_sum

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")


class PairwiseLoss(NamedTuple):
    """Bradley-Terry loss and its detached stats (0-dim float tensors)."""

    loss: Tensor
    accuracy: Tensor
    margin_mean: Tensor


class DPOLoss(NamedTuple):
    """DPO loss and its detached stats (0-dim float tensors)."""

    loss: Tensor
    reward_accuracy: Tensor
    margin: Tensor
    chosen_reward: Tensor
    rejected_reward: Tensor


def sequence_logps(logprobs: Tensor, mask: Tensor) -> Tensor:
    """Log-probability of each response: the sum of its masked token log-probs.

    Args:
        logprobs: (B, T) per-token log-probs.
        mask: (B, T) response mask.

    Returns:
        (B,) summed log-probs.
    """
    return masked_sum(logprobs, mask, dim=-1)


def bradley_terry_loss(
    r_chosen: Tensor, r_rejected: Tensor, margin: Tensor | float | None = None
) -> PairwiseLoss:
    """Reward-model loss ``mean(-logsigmoid(r_chosen - r_rejected - margin))``.

    Args:
        r_chosen: (B,) rewards of the chosen responses.
        r_rejected: (B,) rewards of the rejected responses.
        margin: Optional (B,) or scalar margin the chosen reward must exceed the rejected one by
            (Llama 2 style); None means 0.

    Returns:
        ``PairwiseLoss``: ``loss`` (0-dim, with grad); ``accuracy``, share of pairs with
        ``r_chosen > r_rejected`` (margin not applied); ``margin_mean``, mean of
        ``r_chosen - r_rejected``.
    """
    diff = r_chosen - r_rejected
    logits = diff if margin is None else diff - margin
    loss = -F.logsigmoid(logits).mean()
    with torch.no_grad():
        accuracy = (diff > 0).float().mean()
        margin_mean = diff.float().mean()
    return PairwiseLoss(loss, accuracy, margin_mean)


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> DPOLoss:
    """Direct Preference Optimisation loss (Rafailov et al. 2023), as in TRL.

    With ``h = (pc - rc) - (pr - rr)`` (the difference of policy/reference log-ratios):
    ``"sigmoid"``: ``-logsigmoid(beta * h) * (1 - ls) - logsigmoid(-beta * h) * ls``
    (conservative DPO when ``ls > 0``); ``"ipo"``: ``(h - 1 / (2 * beta))^2`` (Azar et al.
    2023); ``"hinge"``: ``relu(1 - beta * h)`` (SLiC). Averaged over the batch.

    Args:
        policy_chosen_logps: (B,) sequence log-probs of the chosen responses under the policy.
        policy_rejected_logps: (B,) same for the rejected responses.
        ref_chosen_logps: (B,) chosen sequence log-probs under the frozen reference.
        ref_rejected_logps: (B,) rejected sequence log-probs under the reference.
        beta: Inverse temperature (> 0); for IPO it is the regularisation tau.
        loss_type: One of ``DPO_LOSS_TYPES``.
        label_smoothing: Assumed label-flip probability in [0, 0.5]; sigmoid loss only.

    Returns:
        ``DPOLoss``: ``loss`` (0-dim, with grad); with implicit rewards
        ``chosen = beta * (pc - rc)`` and ``rejected = beta * (pr - rr)``: ``reward_accuracy``,
        share of pairs with ``chosen > rejected``; ``margin``, mean of ``chosen - rejected``;
        ``chosen_reward`` and ``rejected_reward``, their means.

    Raises:
        ValueError: On an unknown ``loss_type``, ``beta <= 0``, a ``label_smoothing`` outside
            [0, 0.5], or a nonzero ``label_smoothing`` with a loss other than sigmoid.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(
            f"label_smoothing is only defined for loss_type='sigmoid', not {loss_type!r}"
        )
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    h = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        losses = (
            -F.logsigmoid(beta * h) * (1 - label_smoothing)
            - F.logsigmoid(-beta * h) * label_smoothing
        )
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected one of {DPO_LOSS_TYPES}")
    with torch.no_grad():
        chosen_rewards = beta * chosen_logratios.float()
        rejected_rewards = beta * rejected_logratios.float()
        reward_accuracy = (chosen_rewards > rejected_rewards).float().mean()
        margin = (chosen_rewards - rejected_rewards).mean()
    return DPOLoss(
        losses.mean(), reward_accuracy, margin, chosen_rewards.mean(), rejected_rewards.mean()
    )
