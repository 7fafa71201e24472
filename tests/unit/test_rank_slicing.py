"""One rank-slicing rule (mplus.distributed.shard_of) for PPO prompts and the batch samplers."""

from __future__ import annotations

import pytest
import torch

import mplus.distributed as D
from mplus.data.collate import LengthGroupedBatchSampler, SequentialBatchSampler
from mplus.distributed import shard_of


def _old_rank_slice(batch, r, n):
    """The samplers' former private rule, kept here as the specification."""
    return batch[r::n] if len(batch) >= n else None


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 8])
def test_shard_of_is_the_old_rank_slice(n, size):
    items = list(range(10, 10 + size))
    for r in range(n):
        assert shard_of(items, r, n, skip_short=True) == _old_rank_slice(items, r, n)
        assert shard_of(items, r, n) == items[r::n]  # PPO's prompts: never None


def test_shard_of_literal():
    assert shard_of([0, 1, 2, 3, 4], 0, 2) == [0, 2, 4]
    assert shard_of([0, 1, 2, 3, 4], 1, 2) == [1, 3]
    assert shard_of([7], 1, 2) == [] and shard_of([7], 1, 2, skip_short=True) is None
    assert shard_of([7], 0, 2, skip_short=True) is None  # every rank skips it, rank 0 too


def _as_rank(monkeypatch, r, n):
    monkeypatch.setattr(D, "rank", lambda: r)
    monkeypatch.setattr(D, "world_size", lambda: n)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_two_ranks_draw_the_batches_of_one_process(monkeypatch, batch_size):
    lengths = [
        int(x) for x in torch.randint(1, 50, (23,), generator=torch.Generator().manual_seed(0))
    ]

    def draw(r, n):
        _as_rank(monkeypatch, r, n)
        lg = LengthGroupedBatchSampler(lengths, batch_size, seed=2, group=3)
        lg.pin(1, 2)
        return list(SequentialBatchSampler(23, batch_size)), list(lg)

    one_seq, one_lg = draw(0, 1)
    assert [i for b in one_seq for i in b] == list(range(23))
    (s0, l0), (s1, l1) = draw(0, 2), draw(1, 2)
    for one, r0, r1 in ((one_seq, s0, s1), (one_lg, l0, l1)):
        # batches of one item cannot be split over two ranks: both ranks skip them
        kept = [b for b in one if len(b) >= 2]
        assert len(r0) == len(r1) == len(kept)
        assert [b[0::2] for b in kept] == r0 and [b[1::2] for b in kept] == r1
