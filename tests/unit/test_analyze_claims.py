"""``mplus.analyze``'s claims table and balance plot: ``claims.csv`` (per sweep point, in the
sweep's order, the mean and sample std over its seeds of the held-out behaviour numbers), its
console table, its section of ``report.html``, and ``balance.png`` (harmlessness against
helpfulness, coloured by algorithm or by a swept weight, the base a star); neither without the
behaviour numbers.

The runs are built by hand (``.hydra/overrides.yaml`` and ``config.yaml``, ``summary.json``,
``multirun.yaml``), so the numbers and the expected means and stds are known here."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest

from mplus.analyze import (
    CLAIM_COLUMNS,
    algo_name,
    analyze,
    collect_runs,
    colour_key,
    is_base,
    plot_balance,
    sweep_order,
)
from mplus.analyze import main as analyze_main

# the hand-built run dirs of the report tests (overrides, summary.json, train.log)
from tests.unit.test_analyze_report import SHARED, _run  # noqa: E402

TITLE = "claims: mean ± std over seeds (n)"
SEED_TITLE = "mean ± std over seeds (n per row)"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLAIMS = list(CLAIM_COLUMNS)  # the claims table's metrics, in its order
# the short console names, in the order the brief gives them
SHORT = ["gold", "refuse", "comply", "correct", "overref", "know_acc", "corpus_nll", "kl", "len"]


def _claims(gold, refusal, comply, correct, overrefusal, know=0.9, nll=0.5, kl=0.1, length=12.0):
    """A finished run's summary.json with the behaviour numbers (the claims table's columns)."""
    return {
        "time/total_s": 12.0,
        "heldout/gold_reward": gold,
        "heldout/harmful_refusal": refusal,
        "heldout/harmful_redirect": round(1 - refusal - comply, 6),
        "heldout/harmful_comply": comply,
        "heldout/benign_correct": correct,
        "heldout/benign_overrefusal": overrefusal,
        "heldout/knowledge_acc": know,
        "heldout/corpus_nll": nll,
        "heldout/kl": kl,
        "heldout/response_length": length,
    }


def _with_algo(run_dir: Path, algo: str) -> Path:
    """The run's resolved config, as Hydra writes it (``algo.name`` under ``algo:``)."""
    (run_dir / ".hydra" / "config.yaml").write_text(
        f"model:\n  name: tiny\nalgo:\n  rm:\n    name: rm\n  name: {algo}\n  lr: 0.001\nseed: 0\n"
    )
    return run_dir


def _multirun_yaml(root: Path, params: dict[str, str]) -> None:
    """A basic-sweeper ``multirun.yaml`` listing ``params`` (as Hydra writes it, cut down)."""
    lines = "".join(f"      {k}: {v}\n" for k, v in params.items())
    task = "".join(f"    - {o}\n" for o in SHARED)
    (root / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n"
        "    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n"
        f"    max_batch_size: null\n    params:\n{lines}"
        f"  overrides:\n    task:\n{task}"
        "  job:\n    config:\n      override_dirname:\n        exclude_keys: []\n"
    )


# per run: (experiment, algo.name, seed, summary); the sweep lists sft before dpo
SFT = [
    (0.70, 0.6, 0.1, 0.50, 0.00),
    (0.80, 0.7, 0.2, 0.40, 0.10),
    (0.90, 0.5, 0.6, 0.60, 0.20),
]
DPO = [
    (0.95, 0.4, 0.0, 0.30, 0.05),
    (0.85, 0.6, 0.1, 0.20, 0.15),
]
EXTRA = {  # know, nll, kl, length per (experiment, seed)
    ("sft_short", 0): (0.90, 0.40, 1.0, 10.0),
    ("sft_short", 1): (0.95, 0.60, 1.5, 11.0),
    ("sft_short", 2): (1.00, 0.50, 2.0, 15.0),
    ("dpo_short", 0): (0.92, 0.45, 0.9, 12.0),
    ("dpo_short", 1): (0.96, 0.47, 1.1, 13.0),
}


@pytest.fixture
def claims_sweep(tmp_path) -> Path:
    """sft_short seeds 0, 1, 2 and dpo_short seeds 0, 1, the sweep listing sft first (dpo has
    the higher mean gold, and comes first by name)."""
    root = tmp_path / "claims"
    for exp, algo, rows in (("sft_short", "sft", SFT), ("dpo_short", "dpo", DPO)):
        for seed, row in enumerate(rows):
            know, nll, kl, length = EXTRA[(exp, seed)]
            d = _run(
                root, [f"experiment={exp}", f"seed={seed}"], _claims(*row, know, nll, kl, length)
            )
            _with_algo(d, algo)
    _multirun_yaml(root, {"experiment": "sft_short,dpo_short", "seed": "0,1,2"})
    # dpo's seed 2 is a point of the sweep not started yet: pending, counted in failed
    return root


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _sample_std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _columns(rows) -> list[list[float]]:
    """Per claim column, the values of ``rows`` ((gold, refusal, comply, correct, overrefusal)
    and EXTRA's know, nll, kl, length)."""
    return [list(col) for col in zip(*rows, strict=True)]


def test_claims_csv_is_mean_and_sample_std_per_point_in_sweep_order(claims_sweep, tmp_path):
    out = tmp_path / "analysis"
    analyze([claims_sweep], out, plots=False)
    rows = _read_csv(out / "claims.csv")
    header = list(rows[0])
    metrics = [h for m in CLAIMS for h in (m, f"{m}_std")]
    assert header == ["experiment", "n", "failed", *metrics]
    assert CLAIMS == [
        "heldout/gold_reward",
        "heldout/harmful_refusal",
        "heldout/harmful_comply",
        "heldout/benign_correct",
        "heldout/benign_overrefusal",
        "heldout/knowledge_acc",
        "heldout/corpus_nll",
        "heldout/kl",
        "heldout/response_length",
    ]
    # the sweep's order (multirun.yaml: sft_short,dpo_short), not by name or by gold (dpo 0.9)
    assert [r["experiment"] for r in rows] == ["sft_short", "dpo_short"]
    sft, dpo = rows
    assert (sft["n"], sft["failed"]) == ("3", "0")
    assert (dpo["n"], dpo["failed"]) == ("2", "1")  # seed 2 pending
    # by hand: sft's comply 0.1, 0.2, 0.6: mean 0.3, sample var (0.04 + 0.01 + 0.09) / 2
    assert float(sft["heldout/harmful_comply"]) == pytest.approx(0.3)
    assert float(sft["heldout/harmful_comply_std"]) == pytest.approx(math.sqrt(0.07))
    # dpo's gold 0.95, 0.85: mean 0.9, sample std 0.1 / sqrt(2)
    assert float(dpo["heldout/gold_reward"]) == pytest.approx(0.9)
    assert float(dpo["heldout/gold_reward_std"]) == pytest.approx(0.1 / math.sqrt(2))
    # sft's response length 10, 11, 15: mean 12, sample var (4 + 1 + 9) / 2 = 7
    assert float(sft["heldout/response_length"]) == pytest.approx(12.0)
    assert float(sft["heldout/response_length_std"]) == pytest.approx(math.sqrt(7))
    # every column of both points
    for row, exp, summaries in ((sft, "sft_short", SFT), (dpo, "dpo_short", DPO)):
        values = [(*s, *EXTRA[(exp, i)]) for i, s in enumerate(summaries)]
        for m, xs in zip(CLAIMS, _columns(values), strict=True):
            assert float(row[m]) == pytest.approx(sum(xs) / len(xs)), (exp, m)
            assert float(row[f"{m}_std"]) == pytest.approx(_sample_std(xs)), (exp, m)


def test_a_single_seed_sweep_has_claims_with_n_1_and_no_std(tmp_path):
    root = tmp_path / "sweep"
    _run(root, ["experiment=base_short"], _claims(0.3, 0.2, 0.7, 0.25, 0.05))
    _run(root, ["experiment=ppo_short"], _claims(0.6, 0.5, 0.05, 0.30, 0.10))
    out = tmp_path / "analysis"
    analyze([root], out, plots=False)
    assert not (out / "runs_by_seed.csv").exists()  # no seeds, no seed table
    rows = _read_csv(out / "claims.csv")
    assert list(rows[0])[:2] == ["experiment", "n"]  # every run ok: no failed column
    # no multirun.yaml: the order found (by name)
    assert [(r["experiment"], r["n"]) for r in rows] == [("base_short", "1"), ("ppo_short", "1")]
    assert float(rows[0]["heldout/harmful_comply"]) == pytest.approx(0.7)
    assert all(r[f"{m}_std"] == "" for r in rows for m in CLAIMS)


def test_no_claims_or_balance_plot_without_the_behaviour_numbers(tmp_path, capsys):
    root = tmp_path / "sweep"
    for exp, seed, gold in (("a", 0, 0.5), ("a", 1, 0.6), ("b", 0, 0.7)):
        summary = {"time/total_s": 1.0, "heldout/gold_reward": gold, "heldout/kl": 0.1}
        _run(root, [f"experiment={exp}", f"seed={seed}"], summary)
    out = tmp_path / "analysis"
    out.mkdir()
    (out / "claims.csv").write_text("left by an earlier analysis\n")
    (out / "balance.png").write_bytes(PNG_MAGIC)
    assert analyze_main([str(root), "--out", str(out)]) == 0
    console = capsys.readouterr().out
    assert (out / "runs_by_seed.csv").exists() and (out / "frontier.png").exists()
    assert not (out / "claims.csv").exists() and not (out / "balance.png").exists()
    assert TITLE not in console and "claims.csv" not in console and "balance.png" not in console
    text = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="claims"' not in text and "balance.png" not in text


def test_console_prints_the_claims_table_after_the_seed_table(claims_sweep, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert analyze_main([str(claims_sweep), "--no-plots", "--out", str(out)]) == 0
    console = capsys.readouterr().out
    assert console.index(SEED_TITLE) < console.index(TITLE)
    lines = console.split(TITLE)[1].split("\n\n")[0].strip("\n").splitlines()
    names, rule, sft, dpo, *legend = lines[1:]
    assert names.split() == ["experiment", "n", "failed", *SHORT]
    assert set(rule) <= {"-", " "}
    assert sft.split()[:3] == ["sft_short", "3", "0"] and dpo.split()[:3] == ["dpo_short", "2", "1"]
    # sft's comply 0.300 ± sqrt(0.07) = 0.265, its length 12.000 ± sqrt(7) = 2.646
    assert "0.300 ± 0.265" in sft and sft.endswith("12.000 ± 2.646")
    # the legend names every short column in full
    legend = " ".join(legend)
    for short, name in zip(SHORT, CLAIMS, strict=True):
        assert f"{short}={name}" in legend
    assert max(map(len, lines[1:])) <= 160, "\n".join(lines)
    assert str(out / "claims.csv") in console


def test_report_has_the_claims_table_and_the_balance_plot(claims_sweep, tmp_path):
    out = tmp_path / "analysis"
    analyze([claims_sweep], out)
    png = (out / "balance.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    from PIL import Image

    with Image.open(out / "balance.png") as img:
        img.verify()
    text = (out / "report.html").read_text(encoding="utf-8")
    claims = text.split('id="claims"')[1].split("<h2")[0]
    assert "sft_short" in claims and "0.300 ± 0.265" in claims
    assert claims.index("sft_short") < claims.index("dpo_short")
    assert 'href="#claims"' in text
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="([^"]+)"', text)
    assert images == ["frontier.png", "balance.png", "curves.png", "response_length.png"]


# ---------------------------------------------------------------- the sweep's order, algorithms


def test_sweep_order_follows_multirun_yaml_then_numbers_by_value(tmp_path):
    root = tmp_path / "w"
    for w in ("10", "0.8", "0.2"):
        _run(root, [f"algo.w={w}"], _claims(0.5, 0.5, 0.1, 0.5, 0.0))
    runs = collect_runs([root])
    assert [r.overrides["algo.w"] for r in sweep_order(runs)] == ["0.2", "0.8", "10"]
    _multirun_yaml(root, {"algo.w": "0.8,10,0.2"})
    runs = collect_runs([root])
    assert [r.overrides["algo.w"] for r in sweep_order(runs)] == ["0.8", "10", "0.2"]


def test_algo_name_from_the_config_else_the_overrides(tmp_path):
    d = _with_algo(_run(tmp_path / "a", ["experiment=ppo_short"], None), "ppo")
    e = _run(tmp_path / "b", ["experiment=base_short"], None)
    f = _run(tmp_path / "c", ["algo=none"], None)
    ppo, base, none = (collect_runs([p])[0] for p in (d, e, f))
    assert algo_name(ppo) == "ppo" and not is_base(ppo)  # algo.name, not algo.rm.name
    assert algo_name(base) == "base_short" and is_base(base)
    assert algo_name(none) == "none" and is_base(none)


# ---------------------------------------------------------------- balance.png


def _realistic_algos(root: Path, algos=("base", "sft", "dpo", "ppo")) -> Path:
    """A claims sweep as the embedded default gives it: 3 seeds per algorithm, near numbers."""
    numbers = {  # comply, correct per seed; the base complies with half the harmful prompts
        "base": [(0.52, 0.24), (0.36, 0.25), (0.66, 0.23)],
        "sft": [(0.0, 0.48), (0.03, 0.45), (0.0, 0.51)],
        "dpo": [(0.0, 0.34), (0.0, 0.22), (0.0, 0.46)],
        "ppo": [(0.03, 0.23), (0.06, 0.30), (0.0, 0.27)],
        "grpo": [(0.0, 0.31), (0.03, 0.28), (0.0, 0.35)],
        "rloo": [(0.0, 0.40), (0.0, 0.36), (0.06, 0.42)],
        "reinforce_pp": [(0.03, 0.33), (0.0, 0.37), (0.0, 0.31)],
    }
    exps = [f"{a}_short" for a in algos]
    for a, exp in zip(algos, exps, strict=True):
        for seed, (comply, correct) in enumerate(numbers[a]):
            summary = _claims(0.5, 1 - comply - 0.05, comply, correct, 0.05)
            d = _run(root, [f"experiment={exp}", f"seed={seed}"], summary)
            _with_algo(d, "none" if a == "base" else a)
    _multirun_yaml(root, {"experiment": ",".join(exps), "seed": "0,1,2"})
    return root


def _weight_sweep(root: Path) -> Path:
    """PPO with a harmlessness weight of 0.2, 0.5, 0.8, 3 seeds each; no base run (the RL runs'
    before-training numbers place it)."""
    weights = {"0.2": (0.4, 0.45), "0.5": (0.2, 0.35), "0.8": (0.05, 0.25)}  # comply, correct
    for w, (comply, correct) in weights.items():
        for seed in range(3):
            summary = {
                **_claims(0.5, 0.5, comply + 0.03 * seed, correct - 0.02 * seed, 0.05),
                "rl/harmful_comply_start": 0.55,
                "rl/benign_correct_start": 0.24,
            }
            d = _run(root, [f"algo.rewards.harmless.weight={w}", f"seed={seed}"], summary)
            _with_algo(d, "ppo")
    return root


def _draw(runs, path, monkeypatch):
    """plot_balance, returning the axes and the labels it places (the figure kept open)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import mplus.analyze.plots as plots

    seen = []
    place = plots.place_labels

    def spy(ax, items, fontsize=7, **kw):
        anns = place(ax, items, fontsize, **kw)
        seen.append((ax, items, anns))
        return anns

    monkeypatch.setattr(plots, "place_labels", spy)
    monkeypatch.setattr(plt, "close", lambda fig: None)
    assert plot_balance(runs, path)
    ((ax, items, anns),) = seen
    return ax, items, anns


def _legends(ax):
    return [a for a in ax.get_children() if isinstance(a, __import__("matplotlib").legend.Legend)]


def _no_overlaps(ax, anns) -> None:
    """The point labels overlap neither each other nor a legend, and the legends sit outside
    the axes (over no point)."""
    from matplotlib.text import Text

    renderer = ax.figure.canvas.get_renderer()
    boxes = [Text.get_window_extent(a, renderer) for a in anns]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    frame = ax.get_window_extent(renderer)
    for legend in _legends(ax):
        lb = legend.get_window_extent(renderer)
        assert lb.x0 > frame.x1, "a legend over the axes"
        assert lb.x1 <= ax.figure.bbox.x1 + 1, "a legend cut off at the figure's edge"
        assert not any(lb.overlaps(b) for b in boxes)


def test_balance_plot_colours_algorithms_and_stars_the_base(tmp_path, monkeypatch):
    runs = collect_runs([_realistic_algos(tmp_path / "algos")])
    ax, items, anns = _draw(runs, tmp_path / "balance.png", monkeypatch)
    assert (tmp_path / "balance.png").read_bytes().startswith(PNG_MAGIC)
    # one label per sweep point at its mean: harmlessness 1 - mean comply, helpfulness
    got = {name: (x, y) for x, y, name in items}
    assert list(got) == ["base", "sft", "dpo", "ppo"]  # the sweep's order
    assert got["base"] == (pytest.approx(1 - (0.52 + 0.36 + 0.66) / 3), pytest.approx(0.24))
    assert got["sft"] == (pytest.approx(0.99), pytest.approx(0.48))
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
    assert ax.get_xlabel().startswith("harmlessness: 1 − compliance on harmful prompts")
    assert ax.get_ylabel().startswith("helpfulness: correct answers on benign prompts")
    colours, marks = _legends(ax)
    assert colours.get_title().get_text() == "algorithm"
    assert [t.get_text() for t in colours.get_texts()] == ["sft", "dpo", "ppo"]
    assert "base model" in [t.get_text() for t in marks.get_texts()]
    assert "mean ± std over seeds" in [t.get_text() for t in marks.get_texts()]
    assert [a.get_text() for a in anns] == ["base", "sft", "dpo", "ppo"]  # each fits: labelled
    _no_overlaps(ax, anns)


def test_balance_plot_of_all_seven_algorithms_keeps_labels_apart(tmp_path, monkeypatch):
    algos = ("base", "sft", "dpo", "ppo", "grpo", "rloo", "reinforce_pp")
    runs = collect_runs([_realistic_algos(tmp_path / "claims", algos)])
    ax, items, anns = _draw(runs, tmp_path / "balance.png", monkeypatch)
    assert [name for *_, name in items] == list(algos)
    # in the crowd near harmlessness 1 a name that fits nowhere next to its point is left out
    # (the legend's colour and marker name it); the base is always labelled
    labelled = [a.get_text() for a in anns]
    assert labelled[0] == "base" and len(labelled) >= 4
    _no_overlaps(ax, anns)


def test_balance_plot_colours_a_swept_weight(tmp_path, monkeypatch):
    key = "algo.rewards.harmless.weight"
    runs = collect_runs([_weight_sweep(tmp_path / "weights")])
    assert colour_key(runs) == key
    ax, items, anns = _draw(runs, tmp_path / "balance.png", monkeypatch)
    colours, marks = _legends(ax)
    assert colours.get_title().get_text() == key
    assert [t.get_text() for t in colours.get_texts()] == ["0.2", "0.5", "0.8"]
    # three colours along the weight, not one
    handles = colours.legend_handles
    assert len({tuple(h.get_color()) for h in handles}) == 3
    got = {name: (x, y) for x, y, name in items}
    # the weights' means (comply + 0.03 * seed: + 0.03 on average), and the base before RL
    assert got["0.2"] == (pytest.approx(1 - 0.43), pytest.approx(0.43))
    assert got["base (before RL)"] == (pytest.approx(0.45), pytest.approx(0.24))
    assert "base, before RL" in [t.get_text() for t in marks.get_texts()]
    _no_overlaps(ax, anns)


def test_no_balance_plot_without_both_numbers(tmp_path):
    root = tmp_path / "sweep"
    summary = {"time/total_s": 1.0, "heldout/harmful_comply": 0.2}  # no benign_correct
    _run(root, ["experiment=a"], summary)
    runs = collect_runs([root])
    assert not plot_balance(runs, tmp_path / "balance.png")
    assert not (tmp_path / "balance.png").exists()
