"""Advantage estimators behind one registry (PPO's GAE and the critic-free GRPO, RLOO, REINFORCE++)
and the loss aggregation modes they are used with.

Every estimator has the signature of :data:`AdvantageFn` and is looked up by name with
:func:`get_estimator` (modelled on verl's ``register_adv_est`` / ``get_adv_estimator_fn``), so the
training module picks one from the config and calls it the same way whatever it is.

Inputs: ``token_rewards`` (B, T) is built by :func:`mplus.algo.token_rewards` exactly as for PPO:
the sequence score on the last response token plus ``-kl_coef * kl`` on every response token
(``kl_coef=0`` when KL is a loss term). The estimators never build rewards themselves, so reward
shaping has one home.

How each reward term enters:

- **KL.** ``gae``, ``reinforce_pp`` and ``rloo``: in the reward, per token (PPO; OpenRLHF's
  REINFORCE++; TRL's RLOO, whose sequence reward is ``score - kl_coef * sum(kl)``). ``grpo``: as a
  loss term by default (DeepSeekMath, TRL, verl): ``kl_coef * aggregate_loss(kl_estimate(logp,
  ref_logp, "k3"), mask, mode)`` added to the policy loss, with ``kl_coef=0`` in the reward. See
  :data:`KL_IN_REWARD`; :mod:`mplus.algo.kl` explains why k3 (not k1) as a loss.
- **Length penalty and missing-stop penalty**: subtracted from the sequence score before
  ``token_rewards``, as for PPO, so every estimator sees them through the score on the last token.

Distributed: ``grpo`` and ``rloo`` compute group statistics on this process only and ignore
``reduce``; the caller must keep every group (all samples of one prompt) whole on one rank.
``reinforce_pp`` whitens over the global batch through ``reduce``. ``gae`` is per row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from mplus.algo.aggregation import LOSS_AGG_MODES, aggregate_loss  # noqa: F401  (re-exported)
from mplus.algo.core import Reduce, _keep, masked_sum, masked_whiten
from mplus.algo.ppo import gae as _gae


class AdvantageFn(Protocol):
    """``fn(*, token_rewards, mask, ...) -> (advantages, returns)``, all (B, T), detached."""

    def __call__(
        self,
        *,
        token_rewards: Tensor,
        mask: Tensor,
        values: Tensor | None = None,
        group_ids: Tensor | None = None,
        gamma: float = 1.0,
        lam: float = 1.0,
        norm_by_std: bool = True,
        eps: float = 1e-6,
        reduce: Reduce = None,
    ) -> tuple[Tensor, Tensor]: ...


_ESTIMATORS: dict[str, AdvantageFn] = {}

# Where the KL penalty goes by default for each estimator: True = per token in the reward
# (algo.kl.in_reward=true), False = a loss term (k3 by default).
KL_IN_REWARD: dict[str, bool] = {"gae": True, "grpo": False, "rloo": True, "reinforce_pp": True}


def register_estimator(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator registering an advantage estimator under ``name``.

    Raises:
        ValueError: If another function is already registered under ``name`` (two estimators
            silently sharing a config name would make runs irreproducible).
    """

    def decorator(fn: AdvantageFn) -> AdvantageFn:
        if name in _ESTIMATORS and _ESTIMATORS[name] is not fn:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        _ESTIMATORS[name] = fn
        return fn

    return decorator


def estimator_names() -> tuple[str, ...]:
    """Registered estimator names, sorted (for config validation and error messages)."""
    return tuple(sorted(_ESTIMATORS))


def get_estimator(name: str) -> AdvantageFn:
    """The estimator registered under ``name``.

    Raises:
        ValueError: On an unknown name, listing the known ones.
    """
    try:
        return _ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator {name!r}; expected one of {estimator_names()}"
        ) from None


# ------------------------------------------------------------------ group statistics


def _sequence_scores(token_rewards: Tensor, mask: Tensor) -> Tensor:
    """(B,) float64 sum of the token rewards over each response (padding may hold nan)."""
    return masked_sum(token_rewards.double(), mask, dim=1)


def _groups(group_ids: Tensor | None, batch: int) -> Tensor:
    """Dense group index in ``[0, G)`` for each row, from arbitrary (non-adjacent) prompt ids."""
    if group_ids is None:
        raise ValueError("group_ids is required: which prompt each row was sampled for")
    if group_ids.shape != (batch,) or group_ids.is_floating_point():
        raise ValueError(
            f"group_ids must be an integer tensor of shape ({batch},), got "
            f"{tuple(group_ids.shape)} {group_ids.dtype}"
        )
    return torch.unique(group_ids, return_inverse=True)[1]


def _group_sum(x: Tensor, index: Tensor, n_groups: int) -> Tensor:
    return torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, index, x)


def _group_stats(scores: Tensor, valid: Tensor, index: Tensor) -> tuple[Tensor, ...]:
    """Per row: its group's size, sum, mean, unbiased std, and whether all its scores are equal.

    Only ``valid`` rows (non-empty responses) count. "All equal" is tested with min == max, not
    std == 0: the mean of equal floats need not round back to them, and a deviation of 1e-17
    divided by a std of 1e-17 would give an advantage of order 1 where 0 is meant.
    """
    n_groups = int(index.max()) + 1 if index.numel() else 0
    v = valid.to(scores.dtype)
    count = _group_sum(v, index, n_groups)
    total = _group_sum(scores * v, index, n_groups)
    mean = total / count.clamp_min(1)
    dev = scores - mean[index]
    var = _group_sum(dev**2 * v, index, n_groups) / (count - 1).clamp_min(1)
    inf = torch.tensor(torch.inf, dtype=scores.dtype, device=scores.device)
    empty = torch.full((n_groups,), torch.nan, dtype=scores.dtype, device=scores.device)
    hi = empty.scatter_reduce(
        0, index, torch.where(valid, scores, -inf), "amax", include_self=False
    )
    lo = empty.scatter_reduce(0, index, torch.where(valid, scores, inf), "amin", include_self=False)
    constant = hi == lo
    return count[index], total[index], dev, var.sqrt()[index], constant[index]


@torch.no_grad()
def group_score_stats(scores: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Per group of ``group_ids``: the unbiased std of its ``scores`` (B,), and whether they are
    all equal (a group GRPO and RLOO learn nothing from). Groups of one count as all-equal.

    Returns:
        ``(std, constant)``, each (G,) in the order of ``torch.unique(group_ids)``.
    """
    index = _groups(group_ids, scores.shape[0])
    scores = scores.double()
    valid = torch.ones_like(scores, dtype=torch.bool)
    count, _, _, std, constant = _group_stats(scores, valid, index)
    n_groups = int(index.max()) + 1
    # every row of a group carries the same value: scatter them back to one per group
    per_group = torch.zeros(n_groups, dtype=scores.dtype, device=scores.device)
    flat = torch.zeros(n_groups, dtype=torch.bool, device=scores.device)
    return per_group.scatter(0, index, std), flat.scatter(0, index, constant | (count == 1))


def _broadcast(seq_adv: Tensor, keep: Tensor, dtype: torch.dtype) -> Tensor:
    """(B,) sequence advantages -> (B, T) on every response token, 0 on padding."""
    return _keep(seq_adv.to(dtype).unsqueeze(1).expand(keep.shape), keep)


# ------------------------------------------------------------------ estimators


@register_estimator("gae")
@torch.no_grad()
def gae_advantages(
    *,
    token_rewards: Tensor,
    mask: Tensor,
    values: Tensor | None = None,
    group_ids: Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    norm_by_std: bool = True,
    eps: float = 1e-6,
    reduce: Reduce = None,
) -> tuple[Tensor, Tensor]:
    """PPO's GAE: :func:`mplus.algo.gae` unchanged.

    Uses ``token_rewards``, ``values``, ``mask``, ``gamma``, ``lam``. Advantages are not
    whitened here: the caller whitens them over the global batch as today
    (``algo.whiten_advantages``). Returns are ``advantages + values``, the critic's target.

    Raises:
        ValueError: If ``values`` is None (GAE needs a critic).
    """
    if values is None:
        raise ValueError("the gae estimator needs values (a critic)")
    return _gae(token_rewards, values, mask, gamma, lam)


@register_estimator("grpo")
@torch.no_grad()
def grpo_advantages(
    *,
    token_rewards: Tensor,
    mask: Tensor,
    values: Tensor | None = None,
    group_ids: Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    norm_by_std: bool = True,
    eps: float = 1e-6,
    reduce: Reduce = None,
) -> tuple[Tensor, Tensor]:
    """GRPO (Shao et al. 2024): each response scored against the other samples of its prompt.

    ``score_i = sum_t token_rewards[i, t]`` over the response; ``A_i = (score_i - mean_g) /
    (std_g + eps)`` with the mean and the unbiased (n - 1) std of the group, as ``torch.std`` in
    TRL and verl; ``norm_by_std=False`` gives Dr. GRPO (Liu et al. 2025), ``A_i = score_i -
    mean_g``, which does not up-weight prompts whose samples barely differ. ``A_i`` is put on
    every response token.

    Uses ``token_rewards``, ``mask``, ``group_ids``, ``norm_by_std``, ``eps``; ignores
    ``values``, ``gamma``, ``lam`` and ``reduce`` (groups must be whole on this rank).

    Edge cases: a group of one has no baseline and gets advantage 0 (verl would give it
    ``score / (1 + eps)``, a signal with no comparison behind it); a group whose scores are all
    equal gets exactly 0; rows with an empty mask are left out of their group's statistics
    (``token_rewards`` cannot carry their score).

    Returns:
        ``(advantages, advantages)``: with no critic, the returns are the advantages, as in verl.
    """
    index = _groups(group_ids, mask.shape[0])
    keep = mask.bool()
    valid = keep.any(dim=1)
    scores = _sequence_scores(token_rewards, keep)
    count, _, dev, std, constant = _group_stats(scores, valid, index)
    adv = dev / (std + eps) if norm_by_std else dev
    adv = torch.where(valid & (count > 1) & ~constant, adv, 0.0)
    adv = _broadcast(adv, keep, token_rewards.dtype)
    return adv, adv


@register_estimator("rloo")
@torch.no_grad()
def rloo_advantages(
    *,
    token_rewards: Tensor,
    mask: Tensor,
    values: Tensor | None = None,
    group_ids: Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    norm_by_std: bool = True,
    eps: float = 1e-6,
    reduce: Reduce = None,
) -> tuple[Tensor, Tensor]:
    """RLOO (Ahmadian et al. 2024): the baseline is the mean score of the *other* samples.

    ``A_i = score_i - mean_{j != i in i's group} score_j`` (an unbiased baseline, since it does
    not depend on sample i), with ``score_i`` the sum of the token rewards; put on every response
    token. No std normalisation, as in TRL and verl.

    Uses ``token_rewards``, ``mask``, ``group_ids``; ignores ``values``, ``gamma``, ``lam``,
    ``norm_by_std``, ``eps`` and ``reduce`` (groups must be whole on this rank).

    Edge cases as for :func:`grpo_advantages`: a group of one (no other sample) gets 0, a group
    of equal scores exactly 0, empty rows are left out of their group.

    Returns:
        ``(advantages, advantages)``, as verl.
    """
    index = _groups(group_ids, mask.shape[0])
    keep = mask.bool()
    valid = keep.any(dim=1)
    scores = _sequence_scores(token_rewards, keep)
    count, total, _, _, constant = _group_stats(scores, valid, index)
    adv = scores - (total - scores) / (count - 1).clamp_min(1)
    adv = torch.where(valid & (count > 1) & ~constant, adv, 0.0)
    adv = _broadcast(adv, keep, token_rewards.dtype)
    return adv, adv


@register_estimator("reinforce_pp")
@torch.no_grad()
def reinforce_pp_advantages(
    *,
    token_rewards: Tensor,
    mask: Tensor,
    values: Tensor | None = None,
    group_ids: Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    norm_by_std: bool = True,
    eps: float = 1e-6,
    reduce: Reduce = None,
) -> tuple[Tensor, Tensor]:
    """REINFORCE++ (Hu 2025, OpenRLHF): discounted returns, whitened over the global batch.

    ``G_t = sum_{k >= t} gamma^(k - t) r_k`` within the response (computed as GAE with V = 0 and
    lambda = 1, which is the same recursion), then advantages = :func:`mplus.algo.masked_whiten`
    of ``G`` over every response token of every process: the batch mean is the baseline that
    replaces the critic, and the std keeps the step size independent of the reward scale.

    Uses ``token_rewards``, ``mask``, ``gamma``, ``eps`` (added to the variance before the square
    root) and ``reduce`` (pass ``mplus.distributed.all_reduce_sum`` so N processes whiten as one
    holding the whole batch); ignores ``values``, ``group_ids``, ``lam``, ``norm_by_std``.

    Returns:
        ``(advantages, returns)``: the whitened advantages and the raw discounted returns ``G``
        (as OpenRLHF and verl), both 0 on padding.
    """
    keep = mask.bool()
    returns, _ = _gae(token_rewards, torch.zeros_like(token_rewards), keep, gamma, 1.0)
    advantages = masked_whiten(returns, keep, eps=eps, reduce=reduce)
    return advantages, returns
