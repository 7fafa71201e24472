"""``mplus.analyze``'s output: the ``train/*`` vs ``heldout/*`` columns, ``--columns`` (default,
all, a list) on the console, the CSVs and the seed table, the grouped console header, the plots
(curve order, KL axes that do not go below 0, labels that do not overlap) and ``report.html``
(its content without a browser, and a screenshot in headless Chromium when one is installed).

The runs are built by hand (``.hydra/overrides.yaml``, ``summary.json``; in memory for the
training curves), so the numbers are known here."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mplus import tables
from mplus.analyze import (
    ALL_COLUMNS,
    DEFAULT_COLUMNS,
    ColumnError,
    Run,
    analyze,
    collect_runs,
    curve_order,
    final_metrics,
    html_table,
    place_labels,
    plot_frontier,
    select_columns,
)
from mplus.analyze import main as analyze_main

SHARED = ["algo.steps=3"]  # an override every run shares: never a column
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _run(
    root: Path, overrides: list[str], summary: dict | None, log: str = "", curves=None
) -> Path:
    """A run dir: its overrides, summary.json (``None``: none), a train.log, and ``curves``
    ({tag: [values at steps 1, 2, ...]}) as a TensorBoard event file in ``tb/rl/``."""
    d = root / ",".join(overrides)
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in [*overrides, *SHARED]))
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    if log:
        (d / "train.log").write_text(log)
    if curves:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        (d / "tb" / "rl").mkdir(parents=True)
        writer = EventFileWriter(str(d / "tb" / "rl"))
        for tag, values in curves.items():
            for step, v in enumerate(values, 1):
                value = summary_pb2.Summary.Value(tag=tag, simple_value=v)
                writer.add_event(
                    event_pb2.Event(step=step, summary=summary_pb2.Summary(value=[value]))
                )
        writer.close()
    return d


def _curves(kl_end: float) -> dict:
    return {
        "rl/reward_mean": [0.0, 1.5, 3.0],
        "rl/kl": [0.0, -0.02, kl_end],
        "rl/gold_reward_mean": [0.4, 0.5, 0.6],
        "rl/response_length_mean": [12.0, 11.0, 11.5],
        "perf/step_s": [1.0, 1.1, 0.9],
    }


def _done(gold: float, kl: float, **more) -> dict:
    return {
        "time/total_s": 12.0,
        "heldout/gold_reward": gold,
        "heldout/reward": 2 * gold,
        "heldout/kl": kl,
        "heldout/response_length": 11.5,
        "heldout/stop_rate": 0.984,
        "heldout/knowledge_acc": 0.905,
        "heldout/corpus_nll": 0.466,
        "rm/val_accuracy": 0.913,
        "rl/steps": 60,
        "rl/entropy_end": 0.25,
        **more,
    }


@pytest.fixture
def sweep(tmp_path) -> Path:
    """algo ppo, grpo (seeds 0, 1 each) and a rloo seed that failed."""
    root = tmp_path / "sweep"
    _run(root, ["algo=ppo", "seed=0"], _done(0.619, 0.773), curves=_curves(0.8))
    _run(root, ["algo=ppo", "seed=1"], _done(0.601, 0.701), curves=_curves(0.7))
    _run(root, ["algo=grpo", "seed=0"], _done(0.623, 0.442), curves=_curves(-0.01))
    _run(root, ["algo=grpo", "seed=1"], _done(0.627, 0.458), curves=_curves(0.5))
    _run(root, ["algo=rloo", "seed=0"], None, log="[mplus][ERROR] - Invalid config: boom\n")
    return root


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _table_lines(console: str) -> list[str]:
    """The per-run table: the group line, the names, the rule and the rows."""
    return console.split("\n\n")[0].splitlines()


# ---------------------------------------------------------------- columns


def test_columns_name_training_batches_apart_from_held_out():
    train = [c for c in ALL_COLUMNS if c.startswith("train/")]
    assert train == [
        "train/reward",
        "train/gold_reward",
        "train/kl",
        "train/response_length",
        "train/stop_rate",
    ]
    assert {c.split("/")[0] for c in ALL_COLUMNS if "/" in c} == {"train", "rm", "heldout"}
    assert not any(c.startswith("train/") for c in DEFAULT_COLUMNS)


def test_train_columns_are_means_of_the_last_logged_batches(tmp_path):
    scalars = {
        "rl/kl": [(i, v) for i, v in enumerate([5.0, -0.3, -0.1, 0.1], 1)],
        "rl/reward_mean": [(1, 1.0), (2, 2.0), (3, 4.0)],
    }
    run = Run(tmp_path, "r", "ok", {}, {"heldout/kl": 0.2}, scalars, [])
    final = final_metrics(run, last=3)
    assert final["train/kl"] == pytest.approx(-0.1)  # the batch estimate, as logged (k1 < 0)
    assert final["train/reward"] == pytest.approx(7 / 3)
    assert final["train/gold_reward"] is None and final["heldout/kl"] == 0.2


def test_select_columns(sweep):
    runs = collect_runs([sweep])
    assert select_columns(None) == list(DEFAULT_COLUMNS) == select_columns("default")
    assert select_columns("all") == list(ALL_COLUMNS)
    assert select_columns("heldout/kl, train/kl ,steps") == ["heldout/kl", "train/kl", "steps"]
    assert select_columns("default,train/kl") == [*DEFAULT_COLUMNS, "train/kl"]
    assert select_columns("kl,rm_accuracy") == ["train/kl", "rm/val_accuracy"]  # old names
    assert select_columns("rl/entropy_end", runs) == ["rl/entropy_end"]  # a summary key
    with pytest.raises(ColumnError, match="unknown column 'nope'"):
        select_columns("heldout/kl,nope", runs)
    with pytest.raises(ColumnError):
        select_columns("dir")


def test_console_default_columns_fit_120_characters(sweep, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert analyze_main([str(sweep), "--no-plots", "--out", str(out)]) == 0
    lines = _table_lines(capsys.readouterr().out)
    assert max(map(len, lines)) <= 120, "\n".join(lines)
    assert lines[0].split() == ["heldout/", "rm/"]  # the group line
    assert lines[1].split() == [
        "status",
        "algo",
        "seed",
        "steps",
        "gold_reward",
        "reward",
        "kl",
        "response_length",
        "knowledge_acc",
        "val_accuracy",
    ]
    assert lines[0].index("heldout/") == lines[1].index("steps") + len("steps") + 2
    assert lines[3].split()[:5] == ["ok", "grpo", "1", "60", "0.627"]  # by heldout/gold_reward
    # the CSV keeps every column
    header = list(_read_csv(out / "runs.csv")[0])
    assert header == ["run", "status", "algo", "seed", *ALL_COLUMNS, "issues", "dir"]


def test_an_old_runs_probe_nll_reads_as_corpus_nll(tmp_path):
    old = {**_done(0.5, 0.1), "heldout/probe_nll": 0.512, "ppo/gold_reward_end": 0.5}
    del old["heldout/corpus_nll"], old["heldout/knowledge_acc"]
    d = _run(tmp_path, ["algo=ppo"], old, curves={"heldout/probe_nll": [0.49, 0.512]})
    (run,) = collect_runs([d])
    assert run.final["heldout/corpus_nll"] == 0.512  # summary.json's old key
    assert run.final["heldout/knowledge_acc"] is None  # an old run has no knowledge probe
    assert run.summary["rl/gold_reward_end"] == 0.5  # the ppo/ -> rl/ alias still holds
    assert run.scalars["heldout/corpus_nll"] == [
        (1, pytest.approx(0.49)),
        (2, pytest.approx(0.512)),
    ]
    # a run with both names keeps its own new value
    both = {**_done(0.5, 0.1), "heldout/probe_nll": 0.7}
    (run,) = collect_runs([_run(tmp_path / "both", ["algo=ppo"], both)])
    assert run.final["heldout/corpus_nll"] == 0.466


def test_console_columns_all_and_a_list(sweep, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert analyze_main([str(sweep), "--no-plots", "--out", str(out), "--columns", "all"]) == 0
    lines = _table_lines(capsys.readouterr().out)
    assert lines[0].split() == ["train/", "rm/", "heldout/"]
    assert lines[1].split()[3:6] == ["steps", "reward", "gold_reward"]

    cols = "heldout/kl,rl/entropy_end"
    assert analyze_main([str(sweep), "--no-plots", "--out", str(out), "--columns", cols]) == 0
    console = capsys.readouterr().out
    lines = _table_lines(console)
    # the sort metric (heldout/gold_reward) joins a selection that leaves it out
    assert lines[1].split() == ["status", "algo", "seed", "kl", "entropy_end", "gold_reward"]
    assert lines[3].split()[3:] == ["0.458", "0.250", "0.627"]
    # the seed table shows the same columns
    seed = console.split("mean ± std over seeds (n per row)\n")[1].split("\n\n")[0].splitlines()
    assert seed[1].split() == ["algo", "n", "failed", "kl", "entropy_end", "gold_reward"]
    assert seed[3].split()[:4] == ["grpo", "2", "0", "0.450"]
    # both CSVs keep every column, and the extra one
    assert "rl/entropy_end" in _read_csv(out / "runs.csv")[0]
    by_seed = list(_read_csv(out / "runs_by_seed.csv")[0])
    assert "train/kl_std" in by_seed and "rl/entropy_end_std" in by_seed

    assert analyze_main([str(sweep), "--no-plots", "--out", str(out), "--columns", "nope"]) == 2
    assert "unknown column 'nope'" in capsys.readouterr().err


def test_sort_by_an_old_column_name(sweep, tmp_path, capsys):
    runs, _ = analyze([sweep], tmp_path / "a", sort="kl", ascending=True, plots=False)
    # train/kl: the mean of the last 5 logged values (0, -0.02, end) / 3
    assert [r.name for r in runs] == [
        "algo=grpo seed=0",
        "algo=grpo seed=1",
        "algo=ppo seed=1",
        "algo=ppo seed=0",
        "algo=rloo seed=0",
    ]
    assert runs[0].final["train/kl"] == pytest.approx(-0.01, abs=1e-6)
    assert (
        analyze_main([str(sweep), "--no-plots", "--out", str(tmp_path / "a"), "--sort", "x"]) == 0
    )
    assert "warning: no run has x" in capsys.readouterr().err


def test_grouped_console_header():
    text = tables.format_table(
        ["status", "heldout/kl", "heldout/gold_reward", "rm/val_accuracy", "heldout/x"],
        [["ok", 0.5, 0.25, None, 1.0]],
        groups=True,
    )
    top, names, rule, row = text.splitlines()
    assert names.split() == ["status", "kl", "gold_reward", "val_accuracy", "x"]
    assert top.split() == ["heldout/", "rm/", "heldout/"]
    assert top.index("rm/") == names.index("val_accuracy")
    # a group label wider than its one column widens it
    assert len(rule.split()[-1]) == len("heldout/")
    assert row.split() == ["ok", "0.500", "0.250", "-", "1.000"]
    plain = tables.format_table(["heldout/kl"], [[0.5]])
    assert plain.splitlines()[0].strip() == "heldout/kl"  # no groups unless asked


# ---------------------------------------------------------------- plots


def test_curves_order_reward_kl_gold_first_perf_last():
    tags = ["perf/step_s", "epoch", "rm/val_loss", "rl/entropy", "rl/kl", "rl/gold_reward_mean"]
    tags += ["rl/reward_mean", "dpo/loss", "perf/train_tokens_per_s"]
    assert curve_order(tags) == [
        "rl/reward_mean",
        "rl/kl",
        "rl/gold_reward_mean",
        "rl/entropy",
        "dpo/loss",
        "rm/val_loss",
        "epoch",
        "perf/step_s",
        "perf/train_tokens_per_s",
    ]


def _curve_run(root: Path, name: str, kl: float, heldout_kl: float, status="ok") -> Run:
    scalars = {
        "rl/kl": [(1, 0.0), (2, kl)],
        "rl/reward_mean": [(1, 0.0), (2, 3.0 + kl)],
        "rl/gold_reward_mean": [(1, 0.4), (2, 0.6 + kl / 10)],
    }
    summary = {"heldout/kl": heldout_kl, "heldout/reward": 3.0, "heldout/gold_reward": 0.62}
    run = Run(root / name, name, status, {"algo": name}, summary, scalars, [])
    run.final = final_metrics(run, last=1)
    return run


def test_frontier_kl_axes_start_at_0_with_a_legend(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import mplus.analyze.plots as plots

    runs = [
        _curve_run(tmp_path, "ppo", -0.2, 0.30),  # k1 training estimate below 0
        _curve_run(tmp_path, "grpo", 0.4, -0.01),
        _curve_run(tmp_path, "rloo", 0.5, 0.50),
    ]
    seen, place = [], plots.place_labels

    def spy(ax, items, fontsize=7):
        seen.append((ax, items))
        return place(ax, items, fontsize)

    monkeypatch.setattr(plots, "place_labels", spy)
    plot_frontier(runs, tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
    assert len(seen) == 4
    for ax, items in seen:
        assert ax.get_xlim()[0] == 0
        assert min(x for x, _, _ in items) >= 0
        assert {t for *_, t in items} >= {"ppo", "grpo", "rloo"}
    xlabels = [ax.get_xlabel() for ax, _ in seen]
    assert "heldout/kl (clamped at 0: 1 below)" in xlabels[0]
    assert "train/kl (batch estimate, clamped at 0)" in xlabels[2]
    legend = seen[0][0].figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()][:3] == ["ppo", "grpo", "rloo"]


def test_point_labels_do_not_overlap():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    fig, ax = plt.subplots(figsize=(5, 4), dpi=90)
    pts = [(0.70, 0.62), (0.72, 0.62), (0.71, 0.618), (0.74, 0.621), (0.69, 0.619), (0.1, 0.4)]
    ax.scatter(*zip(*pts, strict=True))
    ax.set(xlim=(0, 1), ylim=(0.35, 0.7))
    fig.tight_layout()
    names = ["algo=ppo", "algo=grpo", "algo=rloo", "algo=reinforce_pp", "algo=dpo", "base"]
    anns = place_labels(ax, [(x, y, n) for (x, y), n in zip(pts, names, strict=True)])
    renderer = fig.canvas.get_renderer()
    for a in anns:
        a.update_positions(renderer)
    boxes = [Text.get_window_extent(a, renderer) for a in anns]  # the labels, no leader lines
    assert len(boxes) == len(names)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    plt.close(fig)


# ---------------------------------------------------------------- report.html


@pytest.fixture
def report(sweep, tmp_path) -> Path:
    out = tmp_path / "analysis"
    analyze([sweep], out)
    return out / "report.html"


def test_report_html_content(report, sweep):
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    # self-contained: nothing fetched, nothing run
    for ref in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert ref not in text, ref
    # the table: every run, its numbers, the grouped header
    for name in ("algo=ppo seed=0", "algo=grpo seed=1", "algo=rloo seed=0"):
        assert name in text
    assert '<th class="group" colspan="5">heldout/</th>' in text
    assert "0.627" in text and "0.773" in text and "0.913" in text
    # the seed table
    assert "0.625 ± 0.003" in text
    # the plots, embedded PNGs
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 3
    for data in images:
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    # the failed run with its issues
    problems = text.split('id="problems"')[1].split("<h2")[0]
    assert "algo=rloo seed=0" in problems and "st-failed" in problems
    assert "no summary.json" in problems and str(sweep / "algo=rloo,seed=0") in problems
    assert "algo=ppo seed=0" not in problems
    # every run's overrides, the shared one once on top
    overrides = text.split('id="overrides"')[1]
    assert "<code>algo.steps=3</code>" in overrides and "<code>seed=1</code>" in overrides


def test_report_without_plots_or_problems(tmp_path):
    root = tmp_path / "sweep"
    _run(root, ["algo=ppo"], _done(0.6, 0.7), curves=_curves(0.7))
    _run(root, ["algo=grpo"], _done(0.62, 0.4), curves=_curves(0.4))
    out = tmp_path / "analysis"
    analyze([root], out, plots=False)
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "<img" not in text and "mean ± std" not in text
    assert "None: every run finished" in text


def test_html_table_escapes_and_groups():
    text = html_table(["run", "heldout/kl", "x/a", "x/b"], [["<b>&", 0.5, None, 2]])
    assert "&lt;b&gt;&amp;" in text and "<b>&" not in text
    assert '<th class="group" colspan="1">heldout/</th>' in text
    assert '<th class="group" colspan="2">x/</th>' in text
    assert '<td class="num missing">-</td>' in text and '<td class="num">0.500</td>' in text


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)})")
    shot = tmp_path / "report.png"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",  # as root (CI containers) Chromium refuses to start without it
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,2000",
        report.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert shot.stat().st_size > 20_000
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(shot) as img:
        img = img.convert("RGB")
        assert img.size == (1280, 2000)
        w, h = img.size
        colours = {img.getpixel((x, y)) for x in range(0, w, 40) for y in range(0, h, 40)}
        assert len(colours) > 20, "the page rendered as (nearly) one colour"
        assert img.getpixel((2, 2)) == (255, 255, 255)  # the page's white background
