"""``mplus.analyze`` over a sweep with several seeds per point: the seed table (mean ± sample std
per point, ``n``, ``failed``), ``runs_by_seed.csv``, its sort, and no seed table without seeds.

The runs are built by hand (``.hydra/overrides.yaml``, ``summary.json``, no TensorBoard events):
the numbers and the expected means and stds are known here."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from mplus.analyze import analyze, collect_runs, mean_std, seed_cells, seed_rows, seed_varies
from mplus.analyze import main as analyze_main

# the hand-built run dirs of the report tests (overrides, summary.json, train.log)
from tests.unit.test_analyze_report import _run  # noqa: E402

TITLE = "mean ± std over seeds (n per row)"
SQRT_002 = math.sqrt(0.02)  # sample std of 0.5, 0.7 (and of 0.1, 0.3)


def _done(gold: float, kl: float, acc: float | None = None) -> dict:
    out = {"time/total_s": 12.0, "heldout/gold_reward": gold, "heldout/kl": kl}
    return out if acc is None else {**out, "rm/val_accuracy": acc}


@pytest.fixture
def seed_sweep(tmp_path) -> Path:
    """experiment a, b, c; seeds 0, 1 (b also 2, which failed; c's seed 1 stopped early)."""
    root = tmp_path / "sweep"
    _run(root, ["experiment=a", "seed=0"], _done(0.5, 0.1, acc=0.8))
    _run(root, ["experiment=a", "seed=1"], _done(0.7, 0.3, acc=0.9))
    _run(root, ["experiment=b", "seed=0"], _done(0.9, 0.2))
    _run(root, ["experiment=b", "seed=1"], _done(0.1, 0.2))
    _run(root, ["experiment=b", "seed=2"], None, log="[mplus][ERROR] - boom\n")
    _run(root, ["experiment=c", "seed=0"], _done(0.2, 0.05))
    _run(root, ["experiment=c", "seed=1"], {"heldout/gold_reward": 99.0})  # no time/total_s
    return root


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_mean_std_is_the_sample_std():
    mean, sd = mean_std([0.5, None, 0.7])
    assert mean == pytest.approx(0.6) and sd == pytest.approx(SQRT_002)
    assert mean_std([0.3]) == (pytest.approx(0.3), None)
    assert mean_std([None, None]) == (None, None)
    assert mean_std([1, 2, 3, 4]) == (pytest.approx(2.5), pytest.approx(math.sqrt(5 / 3)))


def test_runs_by_seed_csv(seed_sweep, tmp_path):
    out = tmp_path / "analysis"
    runs, _ = analyze([seed_sweep], out, plots=False)
    assert {r.status for r in runs} == {"ok", "failed", "incomplete"}
    assert len(_read_csv(out / "runs.csv")) == 7  # the per-run table keeps every run
    rows = _read_csv(out / "runs_by_seed.csv")
    header = list(rows[0])
    assert header[:3] == ["experiment", "n", "failed"]
    assert "seed" not in header and "algo.steps" not in header and "steps" not in header
    for m in ("train/reward", "train/kl", "rm/val_accuracy", "heldout/gold_reward", "heldout/kl"):
        assert header.index(f"{m}_std") == header.index(m) + 1
    # sorted by the mean of heldout/gold_reward (a 0.6, b 0.5, c 0.2), not by the best seed
    # (b's seed 0, 0.9, heads the per-run table)
    assert [r["experiment"] for r in rows] == ["a", "b", "c"]
    a, b, c = rows
    assert (a["n"], a["failed"]) == ("2", "0")
    assert float(a["heldout/gold_reward"]) == pytest.approx(0.6)
    assert float(a["heldout/gold_reward_std"]) == pytest.approx(SQRT_002)
    assert float(a["heldout/kl"]) == pytest.approx(0.2)
    assert float(a["heldout/kl_std"]) == pytest.approx(SQRT_002)
    assert float(a["rm/val_accuracy"]) == pytest.approx(0.85)
    assert float(a["rm/val_accuracy_std"]) == pytest.approx(math.sqrt(0.005))
    # the failed seed 2 is left out of b's numbers and counted
    assert (b["n"], b["failed"]) == ("2", "1")
    assert float(b["heldout/gold_reward"]) == pytest.approx(0.5)
    assert float(b["heldout/gold_reward_std"]) == pytest.approx(math.sqrt(0.32))
    assert float(b["heldout/kl"]) == pytest.approx(0.2)
    assert float(b["heldout/kl_std"]) == pytest.approx(0.0, abs=1e-12)
    assert b["rm/val_accuracy"] == b["rm/val_accuracy_std"] == ""
    # one ok seed (the incomplete one is left out, its 99.0 too): a mean, no std
    assert (c["n"], c["failed"]) == ("1", "1")
    assert float(c["heldout/gold_reward"]) == pytest.approx(0.2)
    assert c["heldout/gold_reward_std"] == ""
    # no TensorBoard events: the training columns are empty, not 0
    assert a["train/reward"] == a["train/reward_std"] == ""


def test_seed_table_follows_the_sort(seed_sweep):
    runs = collect_runs([seed_sweep])
    _, rows = seed_rows(runs, "heldout/gold_reward", ascending=True)
    assert [r[0] for r in rows] == ["c", "b", "a"]
    _, rows = seed_rows(runs, "heldout/kl")
    assert [r[0] for r in rows] == ["a", "b", "c"]  # 0.2 (a, b: tie keeps run order), 0.05
    # a metric no run has: every group without a value, the order of the runs
    _, rows = seed_rows(runs, "no/such_metric")
    assert sorted(r[0] for r in rows) == ["a", "b", "c"]


def test_seed_cells_show_mean_plus_minus_std(seed_sweep):
    header, rows = seed_cells(*seed_rows(collect_runs([seed_sweep]), "heldout/gold_reward"))
    assert "heldout/gold_reward_std" not in header and "failed" in header
    col = header.index("heldout/gold_reward")
    assert [r[col] for r in rows] == ["0.600 ± 0.141", "0.500 ± 0.566", pytest.approx(0.2)]
    assert rows[0][header.index("train/reward")] is None  # shown as "-"


def test_console_prints_the_seed_table_after_the_run_table(seed_sweep, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert analyze_main([str(seed_sweep), "--no-plots", "--out", str(out)]) == 0
    console = capsys.readouterr().out
    before, after = console.split(TITLE)
    # under the column groups' line (heldout/, rm/), the column names
    assert before.splitlines()[1].split()[:3] == ["status", "experiment", "seed"]
    lines = after.split("\n\n")[0].strip("\n").splitlines()
    assert lines[0].split() == ["heldout/", "rm/"]
    assert lines[1].split()[:3] == ["experiment", "n", "failed"]
    assert set(lines[2]) <= {"-", " "}
    assert [ln.split()[:3] for ln in lines[3:]] == [
        ["a", "2", "0"],
        ["b", "2", "1"],
        ["c", "1", "1"],
    ]
    assert "0.600 ± 0.141" in lines[3] and "0.500 ± 0.566" in lines[4]
    assert "0.200" in lines[5] and "0.200 ±" not in lines[5]  # c: a lone mean
    assert str(out / "runs_by_seed.csv") in console


def test_two_varying_overrides_group_by_both(tmp_path):
    root = tmp_path / "grid"
    for exp, coef, seed, gold in [
        ("a", "0.1", "0", 0.4),
        ("a", "0.1", "1", 0.6),
        ("a", "0.2", "0", 0.1),
        ("b", "0.1", "0", 0.3),
        ("b", "0.1", "1", 0.3),
    ]:
        _run(root, [f"experiment={exp}", f"algo.kl.coef={coef}", f"seed={seed}"], _done(gold, 0.1))
    runs = collect_runs([root])
    assert seed_varies(runs)
    header, rows = seed_rows(runs, "heldout/gold_reward")
    assert header[:3] == ["experiment", "algo.kl.coef", "n"]  # no failed column: all ok
    gold = header.index("heldout/gold_reward")
    got = [(r[0], r[1], r[2], r[gold], r[gold + 1]) for r in rows]
    assert got == [
        ("a", "0.1", 2, pytest.approx(0.5), pytest.approx(math.sqrt(0.02))),
        ("b", "0.1", 2, pytest.approx(0.3), pytest.approx(0.0, abs=1e-12)),
        ("a", "0.2", 1, pytest.approx(0.1), None),
    ]


@pytest.mark.parametrize("seeds", [None, "0"], ids=["no seed", "one seed for all"])
def test_no_seed_table_without_seeds(tmp_path, capsys, seeds):
    root = tmp_path / "sweep"
    for exp, gold in (("a", 0.5), ("b", 0.7)):
        _run(root, [f"experiment={exp}", *([f"seed={seeds}"] if seeds else [])], _done(gold, 0.1))
    out = tmp_path / "analysis"
    assert analyze_main([str(root), "--no-plots", "--out", str(out)]) == 0
    console = capsys.readouterr().out
    assert (out / "runs.csv").exists() and not (out / "runs_by_seed.csv").exists()
    assert TITLE not in console and "runs_by_seed" not in console
    assert not seed_varies(collect_runs([root]))
