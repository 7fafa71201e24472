"""HH-RLHF parsing, file reading, hub loading (monkeypatched) and subset mixing."""

from __future__ import annotations

import gzip
import json
import pickle
import warnings
from collections import Counter
from pathlib import Path

import pytest

from mplus.data.hh import (
    HH_SUBSETS,
    SKIP_REASONS,
    BadRow,
    DataFileError,
    load_hh_rows,
    mix_pairs,
    parse_hh_row,
    parse_rows,
    read_jsonl,
    split_prompt_response,
    subset_from_filename,
)
from mplus.data.types import PreferencePair

REAL_FILE = (
    Path(__file__).resolve().parents[2].parent
    / "shared/data/hh-rlhf/harmless-base-test.head1800.jsonl.gz"
)

SINGLE = {
    "chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water and yeast.",
    "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: I don't know.",
}
MULTI_PROMPT = (
    "\n\nHuman: Hi there.\n\nAssistant: Hello! How can I help?"
    "\n\nHuman: Tell me a joke.\n\nAssistant:"
)
MULTI = {
    "chosen": MULTI_PROMPT + " Why did the chicken cross the road?",
    "rejected": MULTI_PROMPT + "  No.\n",
}


# --- split_prompt_response / parse_hh_row ----------------------------------------------------


def test_split_single_turn():
    prompt, response = split_prompt_response(SINGLE["chosen"])
    assert prompt == "\n\nHuman: How do I bake bread?\n\nAssistant:"
    assert response == " Mix flour, water and yeast."


def test_split_multi_turn_keeps_earlier_turns():
    prompt, response = split_prompt_response(MULTI["chosen"])
    assert prompt == MULTI_PROMPT
    assert response == " Why did the chicken cross the road?"


def test_split_without_assistant_turn():
    with pytest.raises(BadRow) as info:
        split_prompt_response("\n\nHuman: anyone there?")
    assert info.value.reason == "no_assistant_turn"
    # "Assistant:" without the blank line before it is not a turn.
    with pytest.raises(BadRow):
        split_prompt_response("\n\nHuman: hi Assistant: hello")


def test_parse_single_turn():
    pair = parse_hh_row(SINGLE, "harmless-base")
    assert pair == PreferencePair(
        prompt="\n\nHuman: How do I bake bread?\n\nAssistant:",
        chosen=" Mix flour, water and yeast.",
        rejected=" I don't know.",
        subset="harmless-base",
    )


def test_parse_multi_turn_reconstructs_exactly():
    pair = parse_hh_row(MULTI)
    assert pair.prompt == MULTI_PROMPT
    assert pair.rejected == "  No.\n"  # whitespace kept as in the original
    assert pair.prompt + pair.chosen == MULTI["chosen"]
    assert pair.prompt + pair.rejected == MULTI["rejected"]
    assert pair.subset == "unknown"


def test_parse_splits_at_last_assistant_even_if_response_mentions_it():
    # A response that itself contains "Assistant:" without the blank line stays in the response.
    row = {
        "chosen": "\n\nHuman: Say it.\n\nAssistant: Assistant: said.",
        "rejected": "\n\nHuman: Say it.\n\nAssistant: No.",
    }
    pair = parse_hh_row(row)
    assert pair.prompt == "\n\nHuman: Say it.\n\nAssistant:"
    assert pair.chosen == " Assistant: said."


P = "\n\nHuman: q\n\nAssistant:"
BAD_ROWS = [
    ({"chosen": P + " a"}, "malformed"),
    ({"rejected": P + " a"}, "malformed"),
    ({"chosen": P + " a", "rejected": None}, "malformed"),
    ({"chosen": ["x"], "rejected": P + " a"}, "malformed"),
    (["not", "a", "dict"], "malformed"),
    ({"chosen": "\n\nHuman: q", "rejected": P + " a"}, "no_assistant_turn"),
    ({"chosen": P + " a", "rejected": "\n\nHuman: q A: b"}, "no_assistant_turn"),
    ({"chosen": P + " a", "rejected": "\n\nHuman: other\n\nAssistant: b"}, "prompt_mismatch"),
    ({"chosen": P, "rejected": P + " b"}, "empty_response"),
    ({"chosen": P + " a", "rejected": P + " \n  "}, "empty_response"),
    ({"chosen": P + " same", "rejected": P + "same \n"}, "identical"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS)
def test_bad_rows_give_their_reason(row, reason):
    with pytest.raises(BadRow) as info:
        parse_hh_row(row)
    assert info.value.reason == reason


def test_all_skip_reasons_covered():
    reasons = {reason for _, reason in BAD_ROWS} | {"too_long"}
    assert reasons == set(SKIP_REASONS)


def test_too_long():
    row = {"chosen": P + " short", "rejected": P + " much longer answer"}
    full_rejected = len(row["rejected"])
    assert (
        parse_hh_row(row, length_fn=len, max_length=full_rejected).rejected == " much longer answer"
    )
    with pytest.raises(BadRow) as info:
        parse_hh_row(row, length_fn=len, max_length=full_rejected - 1)
    assert info.value.reason == "too_long"


def test_length_args_must_come_together():
    with pytest.raises(ValueError, match="together"):
        parse_hh_row(SINGLE, length_fn=len)
    with pytest.raises(ValueError, match="together"):
        parse_rows([SINGLE], "x", max_length=10)
    with pytest.raises(ValueError, match="positive"):
        parse_rows([SINGLE], "x", length_fn=len, max_length=0)


def test_bad_row_reason_checked_and_picklable():
    with pytest.raises(ValueError, match="unknown skip reason"):
        BadRow("nonsense")
    err = pickle.loads(pickle.dumps(BadRow("identical", "same text")))
    assert (err.reason, str(err)) == ("identical", "identical: same text")


def test_parse_rows_skips_and_counts():
    rows = [SINGLE, BAD_ROWS[0][0], MULTI, BAD_ROWS[-1][0], BAD_ROWS[-2][0], BAD_ROWS[-3][0], 7]
    pairs, skipped = parse_rows(rows, "helpful-base")
    assert [p.prompt for p in pairs] == [
        "\n\nHuman: How do I bake bread?\n\nAssistant:",
        MULTI_PROMPT,
    ]
    assert all(p.subset == "helpful-base" for p in pairs)
    assert skipped == Counter(malformed=2, identical=1, empty_response=2)


# --- read_jsonl ------------------------------------------------------------------------------


def test_read_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(SINGLE) + "\n\n   \n" + json.dumps(MULTI) + "\n", encoding="utf-8")
    assert read_jsonl(path) == [SINGLE, MULTI]


def test_read_jsonl_gz(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(
            json.dumps(SINGLE) + "\n" + json.dumps({"chosen": "é ü \u2019", "rejected": "x"}) + "\n"
        )
    assert read_jsonl(str(path)) == [SINGLE, {"chosen": "é ü \u2019", "rejected": "x"}]


def test_read_jsonl_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps(SINGLE) + "\n\n" + '{"chosen": "unterminated\n' + json.dumps(MULTI) + "\n"
    )
    with pytest.raises(DataFileError, match=r"bad\.jsonl:3: invalid JSON") as info:
        read_jsonl(path)
    assert str(info.value).startswith(f"{path}:3:")


def test_read_jsonl_non_object_line(tmp_path):
    path = tmp_path / "list.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(SINGLE) + "\n[1, 2]\n")
    with pytest.raises(DataFileError, match=r"list\.jsonl\.gz:2: expected a JSON object, got list"):
        read_jsonl(path)


def test_read_jsonl_missing_and_corrupt_files(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataFileError, match=r"nope\.jsonl: file not found"):
        read_jsonl(missing)
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_text(json.dumps(SINGLE) + "\n")
    with pytest.raises(DataFileError, match=r"plain\.jsonl\.gz: cannot read"):
        read_jsonl(not_gzip)


# --- load_hh_rows / subset_from_filename -----------------------------------------------------


def test_load_hh_rows_from_files(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    a.write_text(json.dumps(SINGLE) + "\n")
    with gzip.open(b, "wt") as f:
        f.write(json.dumps(MULTI) + "\n" + json.dumps(SINGLE) + "\n")
    assert load_hh_rows("harmless-base", "test", files=a) == [SINGLE]
    assert load_hh_rows("harmless-base", "test", files=[a, str(b)]) == [SINGLE, MULTI, SINGLE]
    with pytest.raises(ValueError, match="empty"):
        load_hh_rows("harmless-base", "test", files=[])


def test_load_hh_rows_unknown_subset_lists_valid_ones():
    with pytest.raises(ValueError, match="harmles-base") as info:
        load_hh_rows("harmles-base", "train")
    for subset in HH_SUBSETS:
        assert subset in str(info.value)


def test_load_hh_rows_from_hub(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return datasets.Dataset.from_list([SINGLE, MULTI])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = load_hh_rows("helpful-online", "train")
    assert calls == [("Anthropic/hh-rlhf", {"data_dir": "helpful-online", "split": "train"})]
    assert rows == [SINGLE, MULTI]
    assert all(type(row) is dict for row in rows)
    load_hh_rows("harmless-base", "test", hub_path="me/hh-copy")
    assert calls[-1] == ("me/hh-copy", {"data_dir": "harmless-base", "split": "test"})


@pytest.mark.parametrize(
    ("path", "subset"),
    [
        ("harmless-base-test.head1800.jsonl.gz", "harmless-base"),
        ("/data/hh/helpful-rejection-sampled_train.jsonl", "helpful-rejection-sampled"),
        ("cache/helpful-online/test.jsonl.gz", "helpful-online"),  # the hub's own layout
        (Path("x/helpful-base-train.jsonl"), "helpful-base"),
        ("my_prefs.jsonl", "local"),
    ],
)
def test_subset_from_filename(path, subset):
    assert subset_from_filename(path) == subset


# --- mix_pairs -------------------------------------------------------------------------------


def _pairs(subset: str, n: int) -> list[PreferencePair]:
    return [PreferencePair(f"{subset} {i}\n\nAssistant:", " a", " b", subset) for i in range(n)]


def _by_subset(**sizes: int) -> dict[str, list[PreferencePair]]:
    return {name: _pairs(name, n) for name, n in sizes.items()}


def test_mix_proportions_and_no_repeats():
    pools = _by_subset(a=100, b=100, c=50)
    mixed, counts = mix_pairs(pools, {"a": 1, "b": 3, "c": 0}, total=40, seed=0)
    assert counts == {"a": 10, "b": 30}
    assert Counter(p.subset for p in mixed) == Counter(a=10, b=30)
    assert len(set(mixed)) == 40
    assert all(p in pools[p.subset] for p in mixed)


def test_mix_largest_remainder():
    pools = _by_subset(a=10, b=10, c=10)
    # 10 / 3 = 3.33 each; the one left over goes to the first name.
    assert mix_pairs(pools, {"c": 1, "b": 1, "a": 1}, total=10, seed=0)[1] == {
        "a": 4,
        "b": 3,
        "c": 3,
    }
    # 7 * 1/4 = 1.75 -> 2, 7 * 3/4 = 5.25 -> 5.
    assert mix_pairs(pools, {"a": 0.25, "b": 0.75}, total=7, seed=0)[1] == {"a": 2, "b": 5}


def test_mix_total_none_limited_by_scarcest():
    pools = _by_subset(a=10, b=15)
    # a allows 10 / (1/3) = 30, b allows 15 / (2/3) = 22.5 -> 22 = 7.33 + 14.67 -> 7 + 15.
    mixed, counts = mix_pairs(pools, {"a": 1, "b": 2}, total=None, seed=1)
    assert counts == {"a": 7, "b": 15}
    assert len(set(mixed)) == 22
    # Decimal weights are exact: 0.1 : 0.7 with 2 and 14 pairs uses all 16 (float math gives 15).
    _, counts = mix_pairs(_by_subset(a=2, b=14), {"a": 0.1, "b": 0.7}, total=None, seed=0)
    assert counts == {"a": 2, "b": 14}


def test_mix_reproducible_and_shuffled():
    pools = _by_subset(a=50, b=50)
    first, _ = mix_pairs(pools, {"a": 1, "b": 1}, total=40, seed=3)
    again, _ = mix_pairs(dict(reversed(pools.items())), {"b": 1, "a": 1}, total=40, seed=3)
    other, _ = mix_pairs(pools, {"a": 1, "b": 1}, total=40, seed=4)
    assert first == again
    assert first != other
    # Shuffled across subsets, not all of a followed by all of b.
    assert [p.subset for p in first] != sorted(p.subset for p in first)


def test_mix_total_beyond_a_subset_warns_and_caps():
    pools = _by_subset(a=5, b=100)
    with pytest.warns(UserWarning, match="subset 'a' has 5 pairs"):
        mixed, counts = mix_pairs(pools, {"a": 1, "b": 1}, total=30, seed=0)
    assert counts == {"a": 5, "b": 15}
    assert len(set(mixed)) == len(mixed) == 20


def test_mix_no_warning_when_it_fits():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mix_pairs(_by_subset(a=5, b=5), {"a": 1, "b": 1}, total=10, seed=0)
        mix_pairs(_by_subset(a=5, b=5), {"a": 1, "b": 1}, total=None, seed=0)


@pytest.mark.parametrize(
    ("weights", "total", "match"),
    [
        ({"a": -1.0, "b": 1.0}, 10, "'a'.*>= 0"),
        ({"a": 1.0, "zzz": 1.0}, 10, "'zzz'"),
        ({"a": float("nan")}, 10, "'a'"),
        ({"a": 0.0, "b": 0}, 10, "all subset weights are 0"),
        ({"a": 1.0}, -1, "total"),
    ],
)
def test_mix_errors(weights, total, match):
    with pytest.raises(ValueError, match=match):
        mix_pairs(_by_subset(a=5, b=5), weights, total=total, seed=0)


# --- the real file ---------------------------------------------------------------------------


def test_real_hh_file_parses():
    if not REAL_FILE.exists():
        pytest.skip(f"real HH-RLHF sample not found at {REAL_FILE}")
    subset = subset_from_filename(REAL_FILE)
    rows = load_hh_rows(subset, "test", files=REAL_FILE)
    pairs, skipped = parse_rows(rows, subset)
    print(f"\n{len(rows)} rows, {len(pairs)} pairs, skipped: {dict(skipped)}")
    assert subset == "harmless-base"
    assert len(rows) == 1800
    assert len(pairs) + sum(skipped.values()) == len(rows)
    assert len(pairs) > 0.95 * len(rows)
    assert set(skipped) <= set(SKIP_REASONS)
    # Checked by hand (0-based row indices): an empty chosen response, or one transcript lost the
    # "\n\n" before a "Human:" turn so the prompts differ.
    bad = {
        86: "empty_response",
        516: "empty_response",
        925: "empty_response",
        1103: "empty_response",
        1254: "prompt_mismatch",
        1688: "prompt_mismatch",
    }
    for index, reason in bad.items():
        with pytest.raises(BadRow) as info:
            parse_hh_row(rows[index])
        assert info.value.reason == reason
    assert skipped == Counter(bad.values())
    originals = {(row["chosen"], row["rejected"]) for row in rows}
    for pair in pairs:
        assert pair.prompt.startswith("\n\nHuman:")
        assert pair.prompt.endswith("\n\nAssistant:")
        assert (pair.prompt + pair.chosen, pair.prompt + pair.rejected) in originals
