"""Mixing HH-RLHF subsets in proportion to their weights, without replacement."""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Mapping, Sequence
from fractions import Fraction

from mplus.data.types import PreferencePair


def _exact(weight: float) -> Fraction:
    # Through the shortest decimal repr, so weights 0.1 and 0.3 are exactly 1:3, as written.
    return Fraction(str(float(weight)))


def _allocate(total: int, weights: dict[str, Fraction]) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` by largest remainder (sums to ``total``)."""
    weight_sum = sum(weights.values())
    quotas = {name: total * w / weight_sum for name, w in weights.items()}
    counts = {name: math.floor(q) for name, q in quotas.items()}
    left = total - sum(counts.values())
    # Ties go to the alphabetically first subset (weights is in sorted order; sort is stable).
    for name in sorted(quotas, key=lambda n: quotas[n] - counts[n], reverse=True)[:left]:
        counts[name] += 1
    return counts


def mix_pairs(
    pairs_by_subset: Mapping[str, Sequence[PreferencePair]],
    weights: Mapping[str, float],
    *,
    total: int | None,
    seed: int,
) -> tuple[list[PreferencePair], dict[str, int]]:
    """Draw a mix of subsets in proportion to their weights, without replacement.

    Per-subset counts split ``total`` by largest remainder. Subsets with weight 0 or without a
    weight are left out. The result depends only on the inputs and ``seed``, not on dict order.

    Args:
        pairs_by_subset: Pairs of each subset.
        weights: Relative weight of each subset (need not sum to 1).
        total: Pairs to draw; ``None`` draws as many as the proportions allow without repeating a
            pair, i.e. as limited by the scarcest subset relative to its weight.
        seed: Seed for ``random.Random``.

    Returns:
        ``(pairs, counts)``: the drawn pairs, shuffled, and how many were drawn from each weighted
        subset. If a subset has fewer pairs than its share of ``total``, all of them are used,
        a warning says so, and the mix comes out smaller than ``total``.

    Raises:
        ValueError: A weight is negative or not finite, a weight names a subset that is not in
            ``pairs_by_subset``, all weights are 0, or ``total`` is negative.
    """
    for name, weight in weights.items():
        if name not in pairs_by_subset:
            raise ValueError(
                f"weight given for subset {name!r}, which has no pairs; "
                f"subsets present: {sorted(pairs_by_subset)}"
            )
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of subset {name!r} must be finite and >= 0, got {weight!r}")
    active = {name: _exact(weights[name]) for name in sorted(weights) if weights[name] > 0}
    if not active:
        raise ValueError(f"all subset weights are 0: {dict(weights)}")
    if total is not None and (isinstance(total, bool) or total < 0):
        raise ValueError(f"total must be None or an int >= 0, got {total!r}")

    sizes = {name: len(pairs_by_subset[name]) for name in active}
    if total is None:
        weight_sum = sum(active.values())
        # n * w / W <= size for every subset; n * w / W is then at most size, so after the
        # rounding in _allocate no count exceeds its subset's size.
        total = min(math.floor(sizes[n] * weight_sum / w) for n, w in active.items())
        if total == 0:
            warnings.warn(
                f"mix is empty: a weighted subset has too few pairs ({sizes})", stacklevel=2
            )
    counts = _allocate(total, active)
    for name, count in counts.items():
        if count > sizes[name]:
            warnings.warn(
                f"subset {name!r} has {sizes[name]} pairs but its share of total={total} is "
                f"{count}; using all {sizes[name]} (no pair is drawn twice)",
                stacklevel=2,
            )
            counts[name] = sizes[name]

    rng = random.Random(seed)
    mixed: list[PreferencePair] = []
    for name, count in counts.items():
        mixed.extend(rng.sample(list(pairs_by_subset[name]), count))
    rng.shuffle(mixed)
    return mixed, counts
