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

from mplus.algo.core import Reduce, _keep, masked_mean, masked_sum, masked_whiten
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
