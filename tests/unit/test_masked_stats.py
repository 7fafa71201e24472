"""Masked batch statistics, one process and N: the ``reduce`` argument of mplus.algo.

N processes are simulated by N threads, each holding part of the batch, whose ``reduce`` sums
every thread's tensor (in rank order) as ``torch.distributed.all_reduce`` would.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from mplus.algo import explained_variance, masked_mean, masked_moments, masked_var, masked_whiten
from mplus.distributed import all_reduce_sum
from tests.unit.fake_ranks import Ranks

ALGO_DIR = Path(__file__).resolve().parents[2] / "mplus" / "algo"

# Masked entries 1, 2, 3 (row 0) and 5 (row 1); the padding holds nan and inf.
NAN, INF = math.nan, math.inf
X = torch.tensor([[1.0, 2.0, 3.0, NAN], [5.0, INF, -INF, NAN]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
# mean 11/4; squared deviations 3.0625 + 0.5625 + 0.0625 + 5.0625 = 8.75
MEAN, VAR_BIASED, VAR_UNBIASED = 2.75, 8.75 / 4, 8.75 / 3


def _rows(n_ranks: int, *tensors):
    """Rank r's rows of each tensor: contiguous blocks, as each process holds its own batch."""
    return [[t.tensor_split(n_ranks)[r] for t in tensors] for r in range(n_ranks)]


def _batch(seed=0, shape=(10, 13), shift=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) + shift
    lens = torch.randint(0, shape[1] + 1, (shape[0],), generator=g)
    lens[0] = shape[1]
    mask = torch.arange(shape[1])[None, :] < lens[:, None]
    return x.masked_fill(~mask, NAN), mask.float()


# ------------------------------------------------------------------ one process, by hand


def test_moments_by_hand_and_nan_padding_does_not_leak():
    mean, var = masked_moments(X, MASK)
    assert_close(mean, torch.tensor(MEAN))
    assert_close(var, torch.tensor(VAR_UNBIASED))
    assert_close(masked_moments(X, MASK, unbiased=False)[1], torch.tensor(VAR_BIASED))
    assert_close(masked_var(X, MASK.bool(), unbiased=False), torch.tensor(VAR_BIASED))
    out = masked_whiten(X, MASK)
    assert torch.isfinite(out).all() and (out[MASK == 0] == 0).all()
    std = math.sqrt(VAR_UNBIASED)
    assert_close(out[0, :3], torch.tensor([-1.75, -0.75, 0.25]) / std)


def test_an_empty_mask_gives_zeros_not_nan():
    empty = torch.zeros_like(MASK)
    mean, var = masked_moments(X, empty)
    assert mean.item() == 0.0 and var.item() == 0.0
    assert (masked_whiten(X, empty) == 0).all()


def test_a_reduce_that_only_copies_changes_no_bit():
    # what mplus.distributed.all_reduce_sum does in a single process
    x, mask = _batch(shift=3.0)
    for fn in (
        lambda red: masked_whiten(x, mask, reduce=red),
        lambda red: masked_whiten(x, mask, shift_mean=False, reduce=red),
        lambda red: torch.stack(masked_moments(x, mask, reduce=red)),
        lambda red: masked_var(x, mask, unbiased=False, reduce=red),
        lambda red: masked_mean(x, mask, reduce=red),
    ):
        assert torch.equal(fn(None), fn(all_reduce_sum))
    ev = explained_variance(x * 0.5, x, mask)
    assert ev == explained_variance(x * 0.5, x, mask, reduce=all_reduce_sum)


def test_reduce_needs_a_global_reduction():
    with pytest.raises(ValueError, match="dim=None"):
        masked_mean(X, MASK, dim=1, reduce=all_reduce_sum)


# ------------------------------------------------------------------ N processes = one process


@pytest.mark.parametrize("n_ranks", [2, 3])
def test_ranks_together_match_one_process_on_the_whole_batch(n_ranks):
    x, mask = _batch(seed=n_ranks, shift=3.0)  # mean far from 0: no E[x^2] - E[x]^2 cancellation
    values = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    parts = _rows(n_ranks, x, mask, values)

    def on_rank(r, reduce):
        xs, ms, vs = parts[r]
        mean, var = masked_moments(xs, ms, reduce=reduce)
        return (
            masked_whiten(xs, ms, reduce=reduce),
            mean,
            var,
            masked_var(xs, ms, unbiased=False, reduce=reduce),
            explained_variance(vs, xs, ms, reduce=reduce),
        )

    ranks = Ranks(n_ranks)
    out = ranks.run(on_rank)
    mean, var = masked_moments(x, mask)
    assert_close(torch.cat([o[0] for o in out]), masked_whiten(x, mask), atol=1e-6, rtol=0)
    ev = explained_variance(values, x, mask)
    for o in out:  # every rank holds the global statistics
        assert_close(o[1], mean, atol=1e-6, rtol=0)
        assert_close(o[2], var, atol=1e-6, rtol=1e-6)
        assert_close(o[3], masked_var(x, mask, unbiased=False), atol=1e-6, rtol=1e-6)
        assert o[4] == pytest.approx(ev, abs=1e-6)
    # two reductions (sum and count, then squared deviations) per moments: moments, whiten,
    # biased var, and the two variances of the explained variance
    assert ranks.calls == 2 + 2 + 2 + 4


def test_exact_data_gives_bit_identical_results_on_two_ranks():
    # small integers and halves: every partial sum is exact, so no rounding differs
    x = torch.tensor([[1.0, 2.0, 3.0, NAN], [5.0, 0.5, NAN, NAN], [4.0, 6.0, 1.5, 2.0]])
    mask = ~torch.isnan(x)
    parts = _rows(2, x, mask)
    out = Ranks(2).run(lambda r, red: masked_moments(*parts[r], reduce=red))
    mean, var = masked_moments(x, mask)
    for m, v in out:
        assert torch.equal(m, mean) and torch.equal(v, var)


def test_a_rank_without_tokens_still_takes_part():
    x, mask = _batch(seed=4)
    mask[:5] = 0  # rank 0's rows are all padding
    parts = _rows(2, x, mask)
    out = Ranks(2).run(lambda r, red: masked_whiten(*parts[r], reduce=red))
    assert (out[0] == 0).all()
    assert_close(torch.cat(out), masked_whiten(x, mask), atol=1e-6, rtol=0)


# ------------------------------------------------------------------ explained variance


def test_explained_variance_by_hand():
    returns = torch.tensor([[1.0, 2.0, 3.0, NAN], [5.0, NAN, NAN, NAN]])
    values = torch.tensor([[1.0, 2.0, 3.0, INF], [4.0, 0.0, 0.0, 0.0]])
    # residuals 0, 0, 0, 1: biased var 3/16; returns' biased var 8.75/4
    assert explained_variance(values, returns, MASK) == pytest.approx(1 - (3 / 16) / (8.75 / 4))


def test_zero_variance_returns_give_nan_in_one_process_and_in_two():
    returns = torch.full((4, 5), 1.5)
    values = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(4, 5)
    assert math.isnan(explained_variance(values, returns, mask))
    parts = _rows(2, values, returns, mask)
    ranks = Ranks(2)
    out = ranks.run(lambda r, red: explained_variance(*parts[r], reduce=red))
    assert all(math.isnan(v) for v in out)
    assert ranks.calls == 2  # both ranks stopped after the returns' variance, together


# ------------------------------------------------------------------ the package boundary


def test_algo_imports_no_process_group_wrappers():
    """mplus.algo stays torch-only: distributed reductions come in through ``reduce``."""
    for path in sorted(ALGO_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                assert parts[0] != "mplus" or parts[:2] == ["mplus", "algo"], (path.name, name)
                assert parts[:2] != ["torch", "distributed"], (path.name, name)
