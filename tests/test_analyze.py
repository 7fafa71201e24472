"""A real two-point multirun through ``python -m mplus.train -m`` on the tiny model, read back by
``mplus.analyze`` (table, CSV, PNGs, report.html) and by TensorBoard's HParams data; broken runs
are reported."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mplus.analyze import main as analyze_main
from mplus.analyze import pareto_front, read_events
from tests.conftest import REPO, TEST_MODEL

# A real multirun (~80 s on 2 cores) read back: CI's slow set runs it; the default run keeps the
# analysis checks on hand-built run dirs (tests/unit/test_analyze_report.py, test_analyze_seeds.py)
pytestmark = pytest.mark.slow

# Two KL points of the short KL sweep, cut to a few steps (each point trains a tiny RM).
TINY_SWEEP = [
    "algo.kl.coef=0.0,0.5",
    "algo.steps=3",
    "algo.rollout_batch_size=8",
    "algo.minibatch_size=8",
    "algo.rm.max_steps=10",
    "algo.rm.val_every=10",
    "data.num_train_pairs=256",
    "data.num_val_pairs=64",
    "data.num_eval_prompts=8",
    "evaluation.probe_docs=8",
]
PNGS = ("curves.png", "frontier.png", "response_length.png")


@pytest.fixture(scope="module")
def sweep_dir(cache_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("multirun") / "kl"
    cmd = [
        sys.executable,
        "-m",
        "mplus.train",
        "-m",
        "--config-dir",
        "sweeps",
        "--config-name",
        "kl_short",
        *TINY_SWEEP,
        *TEST_MODEL,
        f"cache_dir={cache_dir}",
        "progress_bar=false",
        f"hydra.sweep.dir={out}",
    ]
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return out


def _job(sweep_dir: Path, coef: str) -> Path:
    (job,) = sweep_dir.glob(f"algo.kl.coef={coef},*")
    return job


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _has_balance(run_dirs) -> bool:
    """Whether a run's summary.json has both numbers of balance.png (the synthetic task's
    behaviour rates; NaN where the held-out prompts hold no harmful or no benign one)."""
    for d in run_dirs:
        try:
            summary = json.loads((Path(d) / "summary.json").read_text())
        except (OSError, ValueError):  # none, or caught mid-write
            continue
        values = [summary.get(k) for k in ("heldout/harmful_comply", "heldout/benign_correct")]
        if all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return True
    return False


def _assert_pngs(out: Path, run_dirs) -> None:
    import matplotlib.image

    pngs = [*PNGS, *(["balance.png"] if _has_balance(run_dirs) else [])]
    assert (out / "balance.png").exists() == ("balance.png" in pngs)
    for name in pngs:
        img = matplotlib.image.imread(out / name)
        assert img.shape[0] > 200 and img.shape[1] > 300, (name, img.shape)
        assert img.std() > 0.01, f"{name} is blank"
    report = (out / "report.html").read_text(encoding="utf-8")
    assert report.count('<img src="data:image/png;base64,') == len(pngs)


def test_multirun_runs_are_named_by_their_overrides(sweep_dir):
    assert (sweep_dir / "multirun.yaml").exists()
    names = sorted(p.name for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
    # ${hydra.job.override_dirname}: every job override but paths and plumbing (cache_dir, ...)
    shared = ",".join(sorted(o for o in [*TINY_SWEEP[1:], *TEST_MODEL]))
    assert names == [f"algo.kl.coef=0.0,{shared}", f"algo.kl.coef=0.5,{shared}"]


def test_analyze_table_csv_and_plots(sweep_dir, tmp_path, capsys):
    out = tmp_path / "analysis"
    args = [str(sweep_dir), "--sort", "train/kl", "--ascending", "--out", str(out)]
    assert analyze_main(args) == 0
    console = capsys.readouterr().out
    rows = _read_csv(out / "runs.csv")
    assert len(rows) == 2
    for col in (
        "run",
        "status",
        "algo.kl.coef",
        "steps",
        "train/reward",
        "train/gold_reward",
        "train/kl",
        "train/response_length",
        "train/stop_rate",
        "rm/val_accuracy",
        "heldout/reward",
        "heldout/gold_reward",
        "heldout/kl",
        "heldout/response_length",
        "heldout/stop_rate",
        "issues",
        "dir",
    ):
        assert col in rows[0], col
    # overrides every run shares (the test model, the step counts) are not columns
    assert "algo.steps" not in rows[0] and "model.pretrain.steps" not in rows[0]
    assert {r["algo.kl.coef"] for r in rows} == {"0.0", "0.5"}
    assert {r["run"] for r in rows} == {"algo.kl.coef=0.0", "algo.kl.coef=0.5"}
    for r in rows:
        assert r["status"] == "ok" and r["issues"] == "" and r["steps"] == "3"
        for col in (
            "train/reward",
            "train/gold_reward",
            "train/kl",
            "train/response_length",
            "train/stop_rate",
            "rm/val_accuracy",
            "heldout/gold_reward",
            "heldout/kl",
            "heldout/response_length",
        ):
            float(r[col])  # present and numeric
        summary = json.loads((Path(r["dir"]) / "summary.json").read_text())
        assert float(r["rm/val_accuracy"]) == pytest.approx(summary["rm/val_accuracy"], abs=1e-6)
        assert 0 < float(r["train/response_length"]) <= 24
    kls = [float(r["train/kl"]) for r in rows]
    assert kls == sorted(kls), "not sorted by train/kl ascending"
    # the console table carries the same rows: the default columns, the sort column added
    lines = console.splitlines()
    assert lines[0].split() == ["heldout/", "rm/", "train/"]  # the column groups
    assert lines[1].split()[:4] == ["status", "algo.kl.coef", "steps", "gold_reward"]
    assert lines[1].split()[-1] == "kl"  # train/kl, the sort column
    assert [ln.split()[0] for ln in lines[3:5]] == ["ok", "ok"]
    assert max(len(ln) for ln in lines[:5]) <= 120
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "algo.kl.coef=0.0" in report and "algo.kl.coef=0.5" in report
    _assert_pngs(out, [r["dir"] for r in rows])
    # the synthetic task's behaviour numbers: a claims table, one row per KL point (one seed)
    claims = _read_csv(out / "claims.csv")
    assert [(c["algo.kl.coef"], c["n"]) for c in claims] == [("0.0", "1"), ("0.5", "1")]
    gold = {r["algo.kl.coef"]: float(r["heldout/gold_reward"]) for r in rows}
    for c in claims:  # one seed: its run's number, no std
        assert float(c["heldout/gold_reward"]) == pytest.approx(gold[c["algo.kl.coef"]])
        assert c["heldout/gold_reward_std"] == ""
    assert "claims: mean ± std over seeds (n)" in console


def test_runs_carry_hparams_linked_to_their_final_metrics(sweep_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    for coef in ("0.0", "0.5"):
        tb = _job(sweep_dir, coef) / "tb"
        acc = EventAccumulator(str(tb), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        content = acc.PluginTagToContent("hparams")
        data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hp = data.session_start_info.hparams
        assert hp["algo.kl.coef"].number_value == float(coef)
        assert hp["algo"].string_value == "ppo" and hp["experiment"].string_value == "ppo_short"
        experiment = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/experiment"]
        ).experiment
        metric_tags = {m.name.tag for m in experiment.metric_infos}
        assert {
            "final/rl/gold_reward_end",
            "final/heldout/kl",
            "final/rm/val_accuracy",
        } <= metric_tags
        # every linked metric is a scalar of the same run
        assert metric_tags <= set(acc.Tags()["scalars"])


def _copy_run(src: Path, dst: Path) -> Path:
    """A run's .hydra, tb, logs and summary (not the exported models)."""
    dst.mkdir(parents=True)
    for name in (".hydra", "tb"):
        shutil.copytree(src / name, dst / name)
    for f in (*src.glob("*.log"), src / "summary.json"):
        shutil.copy(f, dst / f.name)
    return dst


def test_missing_truncated_failed_and_incomplete_runs_are_reported(sweep_dir, tmp_path, capsys):
    root = tmp_path / "broken"
    good = _copy_run(_job(sweep_dir, "0.0"), root / "algo.kl.coef=0.0")
    # a run whose event files are gone
    missing = _copy_run(_job(sweep_dir, "0.5"), root / "algo.kl.coef=0.5")
    for f in (missing / "tb").rglob("events.out.tfevents.*"):
        f.unlink()
    # a run whose (largest) event file was cut mid-record, and which never finished
    truncated = _copy_run(_job(sweep_dir, "0.0"), root / "algo.kl.coef=0.2")
    (truncated / "summary.json").unlink()
    events = max((truncated / "tb").rglob("events.out.tfevents.*"), key=lambda f: f.stat().st_size)
    events.write_bytes(events.read_bytes()[: events.stat().st_size // 2])
    # a run that failed at start (its log has the error; no events, no summary)
    failed = root / "algo.kl.coef=9"
    shutil.copytree(_job(sweep_dir, "0.0") / ".hydra", failed / ".hydra")
    (failed / "train.log").write_text("[2026-01-01][mplus][ERROR] - Invalid config: boom\n")
    # a summary.json caught mid-write
    partial = _copy_run(_job(sweep_dir, "0.0"), root / "algo.kl.coef=0.01")
    (partial / "summary.json").write_text('{"rm/val_accuracy": 0.9, "ppo/')

    out = tmp_path / "analysis"
    assert analyze_main([str(root), "--out", str(out)]) == 0
    console = capsys.readouterr().out
    rows = {r["dir"]: r for r in _read_csv(out / "runs.csv")}
    assert len(rows) == 5
    r = rows[str(good)]
    assert r["status"] == "ok" and r["issues"] == ""
    r = rows[str(missing)]
    assert r["status"] == "ok" and "no event file" in r["issues"] and r["train/kl"] == ""
    assert r["heldout/kl"] != ""  # the summary still gives the held-out numbers
    r = rows[str(truncated)]
    assert r["status"] == "incomplete"
    assert "truncated event file" in r["issues"] and "no summary.json" in r["issues"]
    assert r["train/kl"] != ""  # the records before the cut are read
    r = rows[str(failed)]
    assert r["status"] == "failed" and "no event file" in r["issues"]
    r = rows[str(partial)]
    assert r["status"] == "incomplete" and "summary.json unreadable" in r["issues"]
    assert "problems:" in console
    for d in (missing, truncated, failed, partial):
        assert str(d) in console.split("problems:")[1]
    problems = (out / "report.html").read_text(encoding="utf-8").split('id="problems"')[1]
    for d in (missing, truncated, failed, partial):
        assert str(d) in problems.split("<h2")[0]
    assert "truncated event file" in problems and "st-failed" in problems
    _assert_pngs(out, [good, missing, truncated, failed, partial])


def test_sweep_points_not_started_yet_are_listed_as_pending(sweep_dir, tmp_path, capsys):
    root = tmp_path / "running"
    _copy_run(_job(sweep_dir, "0.0"), root / "algo.kl.coef=0.0")
    shutil.copy(sweep_dir / "multirun.yaml", root / "multirun.yaml")
    assert analyze_main([str(root), "--no-plots", "--sort", "algo.kl.coef", "--ascending"]) == 0
    rows = _read_csv(root / "analysis" / "runs.csv")
    assert [(r["algo.kl.coef"], r["status"]) for r in rows] == [("0.0", "ok"), ("0.5", "pending")]
    assert "algo.kl.coef=0.5: pending" in capsys.readouterr().out


def test_read_events_on_a_file_being_written(sweep_dir, tmp_path):
    src = max(
        (_job(sweep_dir, "0.0") / "tb").rglob("events.out.tfevents.*"),
        key=lambda f: f.stat().st_size,
    )
    full = read_events(src.parent)
    assert full.issues == [] and len(full.scalars["rl/kl"]) == 3
    tb = tmp_path / "tb"
    tb.mkdir()
    data = src.read_bytes()
    (tb / src.name).write_bytes(data[:-3])  # the last record's CRC not yet on disk
    part = read_events(tb)
    assert len(part.issues) == 1 and part.issues[0].startswith("truncated event file")
    assert 0 < sum(map(len, part.scalars.values())) <= sum(map(len, full.scalars.values()))


def test_analyze_errors_on_a_path_without_runs(tmp_path, capsys):
    assert analyze_main([str(tmp_path / "nope")]) == 2
    (tmp_path / "empty").mkdir()
    assert analyze_main([str(tmp_path / "empty")]) == 2
    assert "no runs there" in capsys.readouterr().err


def test_pareto_front():
    pts = [(0.0, 0.1), (1.0, 0.5), (0.5, 0.05), (2.0, 0.4), (3.0, 0.9), (1.0, 0.3)]
    assert pareto_front(pts) == [(0.0, 0.1), (1.0, 0.5), (3.0, 0.9)]
