"""Collators and samplers against literal examples."""

from __future__ import annotations

import pytest
import torch

from mplus.data.collate import LengthGroupedBatchSampler, PairCollator, pad_right
from mplus.modules.causal_lm import pack_documents
from mplus.modules.optim import check_finite


def test_pad_right_literal():
    ids, mask = pad_right([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_pair_collator_stacks_chosen_then_rejected():
    batch = [
        {"chosen": [1, 2, 9], "rejected": [1, 2, 3, 9], "prompt_len": 2},
        {"chosen": [4, 9], "rejected": [4, 5, 9], "prompt_len": 1},
    ]
    out = PairCollator(pad_id=0)(batch)
    assert out["input_ids"].tolist() == [
        [1, 2, 9, 0],
        [4, 9, 0, 0],  # chosen rows
        [1, 2, 3, 9],
        [4, 5, 9, 0],  # rejected rows
    ]
    assert out["attention_mask"].sum(1).tolist() == [3, 2, 4, 3]
    assert out["prompt_lens"].tolist() == [2, 1]


def test_pack_documents_separates_with_eos_and_drops_the_tail():
    rows = pack_documents([[1, 2], [3, 4, 5], [6]], eos_id=0, seq_len=4)
    # stream: 1 2 0 3 | 4 5 0 6 | 0 (tail dropped)
    assert rows.tolist() == [[1, 2, 0, 3], [4, 5, 0, 6]]


def test_length_grouped_sampler_covers_every_item_once_with_similar_lengths():
    lengths = [
        int(x) for x in torch.randint(1, 200, (1000,), generator=torch.Generator().manual_seed(0))
    ]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=10, seed=3, group=8)
    batches = list(sampler)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000)) and len(batches) == len(sampler) == 100
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / 100
    assert spread < 40  # sorted mega-batches of 80 give ~200/8; random batches of 10 give ~160
    assert list(LengthGroupedBatchSampler(lengths, 10, seed=3, group=8)) == batches  # by seed
    assert list(sampler) != batches  # next epoch reshuffles


def test_check_finite_stops_on_nan_and_inf():
    check_finite(torch.tensor(1.5), "x", 3)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(FloatingPointError, match="x is .* at step 7"):
            check_finite(torch.tensor(bad), "x", 7)


def test_compare_table_formats_rows_and_reports_missing_runs(tmp_path):
    import json

    from mplus.compare import collect, main, table

    for name, gold in (("a", 0.25), ("b", 0.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"heldout/gold_reward": gold}))
    lines = table(collect([str(tmp_path)])).splitlines()
    assert lines[0].split()[:3] == ["run", "reward", "gold_reward"]
    # no reward model: shown as missing, not as 0
    assert [ln.split()[:3] for ln in lines[2:]] == [["a", "-", "0.250"], ["b", "-", "0.500"]]
    assert main([str(tmp_path / "nope")]) == 2
