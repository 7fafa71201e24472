"""Read a sweep's runs back: one table row per run, and PNG plots of the trade-offs.

``python -m mplus.analyze <multirun dir or run dirs> [--sort METRIC] [--out DIR]``

For every run (a directory with ``.hydra/``, ``summary.json`` or ``tb/``) it reads the TensorBoard
events with TensorBoard's own record reader, ``summary.json`` and the Hydra overrides, and writes
into ``--out`` (default ``<first dir>/analysis``):

- ``runs.csv`` and the same table on the console: one row per run, the overrides that differ
  between runs, then the final training numbers (mean of the last ``--last`` logged PPO values:
  ``reward``, ``gold_reward``, ``kl``, ``response_length``, ``stop_rate``), the reward model's
  validation accuracy and the held-out ``eval/*`` numbers, sorted by ``--sort``;
- ``curves.png``: each logged metric's curve, every run on the same axes;
- ``frontier.png``: reward and gold reward against KL across runs, with the Pareto frontier;
- ``response_length.png``: response length over training.

Runs that failed or are still running are listed with their status (``failed``,
``incomplete``; sweep points not started yet: ``pending``) and what is wrong (no event file, a
truncated event file, no summary.json), never dropped; a directory still being written to is
read as far as it goes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Overrides that never name a run (paths, plumbing); ``hydra.*`` overrides are not job overrides.
IGNORED_OVERRIDES = (
    "cache_dir",
    "progress_bar",
    "ckpt_path",
    "evaluation.reward_model",
    "algo.reward_model",
    "objective",
)

# Table columns: (column, TensorBoard tag averaged over the last logged values, summary key).
TRAIN_COLUMNS = (
    ("reward", "ppo/reward_mean", None),
    ("gold_reward", "ppo/gold_reward_mean", None),
    ("kl", "ppo/kl", None),
    ("response_length", "ppo/response_length_mean", None),
    ("stop_rate", "ppo/stop_rate", None),
    ("rm_accuracy", None, "rm/val_accuracy"),
)
EVAL_COLUMNS = (
    "eval/reward",
    "eval/gold_reward",
    "eval/kl",
    "eval/response_length",
    "eval/stop_rate",
    "eval/probe_nll",
)


# ---------------------------------------------------------------- overrides and run names


def run_overrides(run_dir: Path) -> list[str]:
    """The run's Hydra job overrides (``.hydra/overrides.yaml``), less paths and plumbing."""
    f = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not f.exists():
        return []
    lines = [ln[2:].strip() for ln in f.read_text().splitlines() if ln.startswith("- ")]
    return [
        ln
        for ln in lines
        if not ln.startswith("hydra.") and _override_key(ln) not in IGNORED_OVERRIDES
    ]


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def override_dict(overrides: list[str]) -> dict[str, str]:
    """``["a.b=1", "+c=x"]`` -> ``{"a.b": "1", "c": "x"}``."""
    return {_override_key(o): (o.split("=", 1)[1] if "=" in o else "") for o in overrides}


def run_names(run_dirs: list[Path]) -> list[str]:
    """Name each run by its overrides, less those that every listed run shares."""
    overrides = [run_overrides(d) for d in run_dirs]
    common = set.intersection(*map(set, overrides)) if overrides else set()
    return [
        " ".join(o for o in ov if o not in common) or Path(d).name
        for d, ov in zip(run_dirs, overrides, strict=True)
    ]


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run dirs under ``paths`` (a run dir itself, or a multirun dir holding job dirs).

    Raises:
        FileNotFoundError: a path that does not exist or holds no run.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such directory")
        if _is_run(p):
            found.append(p)
            continue
        runs = sorted(
            {d.parent for d in p.rglob(".hydra") if d.is_dir()}
            | {f.parent for f in p.rglob("summary.json")}
        )
        runs = [r for r in runs if not any(r != o and o in r.parents for o in runs)]
        if not runs:
            raise FileNotFoundError(f"{p}: no runs there (no .hydra/, summary.json or tb/)")
        found += runs
    return list(dict.fromkeys(found))


def _is_run(p: Path) -> bool:
    return (p / ".hydra").is_dir() or (p / "summary.json").exists() or (p / "tb").is_dir()


# ---------------------------------------------------------------- events


@dataclass
class EventRead:
    """Scalars of one run's event files: tag -> [(step, value)], and what went wrong."""

    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    issues: list[str] = field(default_factory=list)
    files: int = 0


def read_events(tb_dir: Path) -> EventRead:
    """Every scalar in ``tb_dir``'s event files, read with TensorBoard's record reader.

    A missing directory, no event file, or a truncated/corrupt record (a file cut short, or one
    still being written) is recorded in ``issues``; the records before it are kept.
    """
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
    from tensorboard.util import tensor_util

    out = EventRead()
    files = sorted(Path(tb_dir).glob("events.out.tfevents.*")) if Path(tb_dir).is_dir() else []
    out.files = len(files)
    if not files:
        out.issues.append(f"no event file in {tb_dir}")
        return out
    for f in files:
        reader = pywrap_tensorflow.PyRecordReader_New(str(f), 0, None, None)
        n = 0
        while True:
            try:
                reader.GetNext()
            except errors.OutOfRangeError:
                break
            except errors.DataLossError as e:
                what = "truncated" if "truncated" in str(e).lower() else "corrupt"
                out.issues.append(f"{what} event file {f.name} after {n} records")
                break
            n += 1
            try:
                event = event_pb2.Event.FromString(reader.record())
            except Exception:  # noqa: BLE001  (a record that is not an Event)
                out.issues.append(f"corrupt event file {f.name} at record {n}")
                break
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    value = float(v.simple_value)
                elif v.HasField("tensor") and v.metadata.plugin_data.plugin_name == "scalars":
                    value = float(tensor_util.make_ndarray(v.tensor))
                else:
                    continue
                out.scalars.setdefault(v.tag, []).append((int(event.step), value))
        if n == 0 and not any(i.startswith(("truncated", "corrupt")) for i in out.issues):
            out.issues.append(f"empty event file {f.name}")
    for tag, points in out.scalars.items():
        # a resumed run writes a second file: keep the last value logged for each step
        out.scalars[tag] = sorted(dict(points).items())
    return out


# ---------------------------------------------------------------- runs


@dataclass
class Run:
    dir: Path
    name: str
    status: str  # ok | failed | incomplete | pending
    overrides: dict[str, str]
    summary: dict
    scalars: dict[str, list[tuple[int, float]]]
    issues: list[str]
    final: dict[str, float | None] = field(default_factory=dict)


def load_run(run_dir: Path, name: str, last: int = 5) -> Run:
    """Read one run: its summary.json (if complete), events, overrides and status."""
    run_dir = Path(run_dir)
    issues: list[str] = []
    summary: dict = {}
    f = run_dir / "summary.json"
    if f.exists():
        try:
            summary = json.loads(f.read_text())
        except (json.JSONDecodeError, OSError):
            issues.append("summary.json unreadable (being written?)")
    else:
        issues.append("no summary.json")
    events = read_events(run_dir / _tb_subdir(run_dir))
    issues += events.issues
    done = "time/total_s" in summary
    if done:
        status = "ok"
    else:
        status = "failed" if _log_has_error(run_dir) else "incomplete"
        if summary:
            issues.append("summary.json without time/total_s (run stopped before its end)")
    run = Run(
        run_dir,
        name,
        status,
        override_dict(run_overrides(run_dir)),
        summary,
        events.scalars,
        issues,
    )
    run.final = final_metrics(run, last)
    return run


def _tb_subdir(run_dir: Path) -> str:
    f = run_dir / ".hydra" / "config.yaml"
    if f.exists():
        m = re.search(r"^logger:\n(?:  .*\n)*?  subdir: (\S+)", f.read_text(), re.M)
        if m:
            return m.group(1)
    return "tb"


def _log_has_error(run_dir: Path) -> bool:
    for log in run_dir.glob("*.log"):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        if "[ERROR]" in text or "Traceback (most recent call last)" in text:
            return True
    return False


def final_metrics(run: Run, last: int = 5) -> dict[str, float | None]:
    """Table values: last-``last``-point means of PPO curves, then summary (or last event)."""
    out: dict[str, float | None] = {}
    for col, tag, key in TRAIN_COLUMNS:
        value = None
        if key is not None:
            value = run.summary.get(key, _last(run.scalars.get(key)))
            if value is None and key == "rm/val_accuracy":
                value = _given_rm_accuracy(run.dir)
        elif run.scalars.get(tag):
            tail = [v for _, v in run.scalars[tag][-last:]]
            value = sum(tail) / len(tail)
        out[col] = value
    for key in EVAL_COLUMNS:
        out[key] = run.summary.get(key, _last(run.scalars.get(key)))
    out["steps"] = _steps(run)
    return out


def _steps(run: Run) -> int | None:
    """Steps of the run's last stage (PPO after its reward model), done or so far logged."""
    for stage in ("ppo", "dpo", "sft", "rm"):
        if isinstance(run.summary.get(f"{stage}/steps"), int | float):
            return int(run.summary[f"{stage}/steps"])
        logged = [
            pts[-1][0] for tag, pts in run.scalars.items() if tag.startswith(f"{stage}/") and pts
        ]
        if logged:
            return max(logged)
    return None


def _given_rm_accuracy(run_dir: Path) -> float | None:
    """Validation accuracy of a reward model the run was given (its ``reward_stats.json``)."""
    import yaml

    f = run_dir / ".hydra" / "config.yaml"
    try:
        cfg = yaml.safe_load(f.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    for path in (
        (cfg.get("algo") or {}).get("reward_model"),
        (cfg.get("evaluation") or {}).get("reward_model"),
    ):
        if isinstance(path, str) and not path.startswith("${"):
            try:
                return float(
                    json.loads((Path(path) / "reward_stats.json").read_text())["val_accuracy"]
                )
            except (OSError, ValueError, KeyError):
                continue
    return None


def _last(points):
    return points[-1][1] if points else None


def collect_runs(paths: list[str | Path], last: int = 5) -> list[Run]:
    """Every run under ``paths``, plus the points of a sweep that have not started yet."""
    dirs = find_runs(paths)
    runs = [load_run(d, n, last) for d, n in zip(dirs, run_names(dirs), strict=True)]
    started = [set(run_overrides(d)) for d in dirs]
    pending = [pt for p in map(Path, paths) for pt in sweep_points(p) if set(pt[1]) not in started]
    if pending:
        all_ov = [*(run_overrides(d) for d in dirs), *(ov for _, ov in pending)]
        common = set.intersection(*map(set, all_ov))
        for root, ov in pending:
            name = " ".join(o for o in ov if o not in common)
            runs.append(
                Run(
                    root / "(not started)",
                    name,
                    "pending",
                    override_dict(ov),
                    {},
                    {},
                    ["not started yet"],
                )
            )
        # names are relative to every run, pending ones included
        for r, d in zip(runs, dirs, strict=False):
            r.name = " ".join(o for o in run_overrides(d) if o not in common) or d.name
    return runs


def sweep_points(sweep_dir: Path) -> list[tuple[Path, list[str]]]:
    """The points of a basic-sweeper multirun (from its ``multirun.yaml``), as job overrides.

    Empty for a directory without ``multirun.yaml`` or for other sweepers (Optuna picks its
    points as it goes).
    """
    f = Path(sweep_dir) / "multirun.yaml"
    if not f.exists():
        return []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        hydra = OmegaConf.load(f).hydra
        if not str(hydra.sweeper._target_).endswith("BasicSweeper"):
            return []
        params = [f"{k}={v}" for k, v in (hydra.sweeper.get("params") or {}).items()]
        parsed = OverridesParser.create().parse_overrides([*params, *hydra.overrides.task])
        (points,) = BasicSweeper.split_arguments(parsed, None)
    except Exception:  # noqa: BLE001  (a multirun.yaml being written, or from another version)
        return []
    keep = lambda o: not o.startswith("hydra.") and _override_key(o) not in IGNORED_OVERRIDES  # noqa: E731
    return [(Path(sweep_dir), [o for o in pt if keep(o)]) for pt in points]


# ---------------------------------------------------------------- table


def varying_keys(runs: list[Run]) -> list[str]:
    """Override keys whose value is not the same in every run (absent counts as a value)."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def metric_value(run: Run, metric: str) -> float | None:
    """A table column, a summary key, the last value of a TensorBoard tag, or an override."""
    for source in (run.final, run.summary):
        if isinstance(source.get(metric), int | float):
            return float(source[metric])
    if metric in run.scalars:
        return _last(run.scalars[metric])
    try:
        return float(run.overrides[metric])
    except (KeyError, ValueError):
        return None


def sort_runs(runs: list[Run], metric: str, ascending: bool = False) -> list[Run]:
    """Sorted by ``metric``; runs without it (failed, incomplete) go last."""

    def key(r: Run):
        v = metric_value(r, metric)
        if v is None or math.isnan(v):
            return (1, 0.0)
        return (0, v if ascending else -v)

    return sorted(runs, key=key)


def table_rows(runs: list[Run]) -> tuple[list[str], list[list]]:
    keys = varying_keys(runs)
    metric_cols = [c for c, _, _ in TRAIN_COLUMNS] + list(EVAL_COLUMNS)
    header = ["run", "status", *keys, "steps", *metric_cols, "issues", "dir"]
    rows = [
        [
            r.name,
            r.status,
            *[r.overrides.get(k, "") for k in keys],
            r.final.get("steps"),
            *[r.final.get(c) for c in metric_cols],
            "; ".join(r.issues),
            str(r.dir),
        ]
        for r in runs
    ]
    return header, rows


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows([["" if v is None else v for v in row] for row in rows])


def format_table(header: list[str], rows: list[list]) -> str:
    """Console table: every column of the CSV except the issues and the directory."""

    def fmt(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    varying = header[2] != "steps"  # override columns sit between status and steps
    drop = ("issues", "dir", "run") if varying else ("issues", "dir")
    keep = [i for i, h in enumerate(header) if h not in drop]
    head = [header[i] for i in keep]
    body = [[fmt(row[i]) for i in keep] for row in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


# ---------------------------------------------------------------- plots


def _style(runs: list[Run]):
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(runs) <= 10 else "tab20"]
    return {
        id(r): {"color": cmap(i % cmap.N), "ls": "-" if r.status == "ok" else "--"}
        for i, r in enumerate(runs)
    }


def _label(r: Run) -> str:
    return r.name if r.status == "ok" else f"{r.name} ({r.status})"


def plot_curves(runs: list[Run], path: Path) -> None:
    """One panel per logged metric (curves with 2+ points), every run on the same axes."""
    import matplotlib.pyplot as plt

    tags = sorted({t for r in runs for t, pts in r.scalars.items() if len(pts) > 1})
    style = _style(runs)
    ncols = min(4, max(1, len(tags)))
    nrows = max(1, math.ceil(len(tags) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows + 0.6), squeeze=False)
    for ax, tag in zip(axes.flat, tags, strict=False):
        for r in runs:
            pts = r.scalars.get(tag)
            if pts:
                ax.plot(*zip(*pts, strict=True), lw=1.2, **style[id(r)])
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(tags) :]:
        ax.axis("off")
    if not tags:
        axes.flat[0].text(0.5, 0.5, "no curves logged yet", ha="center", va="center")
    handles = [plt.Line2D([], [], **style[id(r)]) for r in runs]
    fig.legend(
        handles,
        [_label(r) for r in runs],
        loc="upper center",
        ncol=min(len(runs), 4),
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout(
        rect=(0, 0, 1, 1 - 0.5 / (3.0 * nrows + 0.6) - 0.02 * math.ceil(len(runs) / 4))
    )
    fig.savefig(path, dpi=90)
    plt.close(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by one with lower-or-equal KL and higher reward, by KL."""
    front, best = [], -math.inf
    for kl, reward in sorted(points, key=lambda p: (p[0], -p[1])):
        if reward > best:
            front.append((kl, reward))
            best = reward
    return front


def _xy(runs, xs, ys):
    """(run, x, y) for runs that have one of each key (first found), e.g. eval/kl else kl."""
    out = []
    for r in runs:
        x = next((v for k in xs if (v := metric_value(r, k)) is not None), None)
        y = next((v for k in ys if (v := metric_value(r, k)) is not None), None)
        if x is not None and y is not None:
            out.append((r, x, y))
    return out


def _base_point(runs: list[Run], ykey: str) -> tuple[float, float] | None:
    """(KL, value) of the base on the held-out prompts, from a PPO run's ``*_start`` numbers."""
    name = ykey.removeprefix("eval/")
    for r in runs:
        kl, y = r.summary.get("ppo/kl_start"), r.summary.get(f"ppo/{name}_start")
        if isinstance(kl, int | float) and isinstance(y, int | float):
            return float(kl), float(y)
    return None


def plot_frontier(runs: list[Run], path: Path) -> None:
    """Reward (RM and gold) against KL to the base across runs, with the Pareto frontier."""
    import matplotlib.pyplot as plt

    style = _style(runs)
    panels = [
        ("held-out eval", ["eval/kl"], "eval/reward", "eval/gold_reward"),
        ("end of training", ["kl"], "reward", "gold_reward"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5), squeeze=False)
    for row, (title, xs, rkey, gkey) in enumerate(panels):
        for col, ykey in enumerate((rkey, gkey)):
            ax = axes[row][col]
            pts = _xy(runs, xs, [ykey])
            for r, x, y in pts:
                ax.scatter(
                    [x],
                    [y],
                    color=style[id(r)]["color"],
                    s=40,
                    marker="o" if r.status == "ok" else "x",
                )
                ax.annotate(r.name, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
            xy = [(x, y) for _, x, y in pts]
            base = _base_point(runs, ykey) if row == 0 else None
            if base is not None:  # the policy before PPO: the frontier's start
                ax.scatter([base[0]], [base[1]], color="black", marker="*", s=90, zorder=3)
                ax.annotate(
                    "base (before PPO)",
                    base,
                    fontsize=7,
                    xytext=(4, -10),
                    textcoords="offset points",
                )
                xy.append(base)
            front = pareto_front(xy)
            if len(front) > 1:
                ax.plot(*zip(*front, strict=True), color="gray", lw=1, ls=":", label="frontier")
                ax.legend(fontsize=7)
            if not pts:
                ax.text(
                    0.5,
                    0.5,
                    "no runs with both numbers",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
            ax.set_xlabel(f"KL to the base ({xs[0]})", fontsize=8)
            ax.set_ylabel(ykey, fontsize=8)
            ax.set_title(f"{ykey} vs KL ({title})", fontsize=9)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_length(runs: list[Run], path: Path) -> None:
    """Response length over training per run (held-out eval length as a marker at the end)."""
    import matplotlib.pyplot as plt

    style = _style(runs)
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in runs:
        pts = r.scalars.get("ppo/response_length_mean")
        if pts:
            ax.plot(*zip(*pts, strict=True), lw=1.2, label=_label(r), **style[id(r)])
        ev = r.scalars.get("eval/response_length")
        if ev:
            ax.scatter(
                [ev[-1][0]],
                [ev[-1][1]],
                color=style[id(r)]["color"],
                marker="*",
                s=80,
                zorder=3,
                **({} if pts else {"label": _label(r)}),
            )
    ax.set_xlabel("PPO step")
    ax.set_ylabel("response length (tokens)")
    ax.set_title("Response length over training (* = held-out eval at the end)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(
            0.5, 0.5, "no response lengths logged", ha="center", va="center", transform=ax.transAxes
        )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------- entry point


def analyze(
    paths: list[str | Path],
    out: Path | None = None,
    sort: str = "eval/gold_reward",
    ascending: bool = False,
    last: int = 5,
    plots: bool = True,
) -> tuple[list[Run], Path]:
    """Read the runs, write ``runs.csv`` and the PNGs into ``out``; return (runs, out)."""
    import matplotlib

    matplotlib.use("Agg")
    runs = sort_runs(collect_runs(paths, last), sort, ascending)
    out = Path(out) if out else Path(paths[0]) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    header, rows = table_rows(runs)
    write_csv(out / "runs.csv", header, rows)
    if plots:
        plot_curves(runs, out / "curves.png")
        plot_frontier(runs, out / "frontier.png")
        plot_length(runs, out / "response_length.png")
    return runs, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mplus.analyze", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("paths", nargs="+", help="multirun dir(s) or run dir(s)")
    p.add_argument(
        "--sort",
        default="eval/gold_reward",
        help="column, summary.json key or TensorBoard tag (default eval/gold_reward)",
    )
    p.add_argument("--ascending", action="store_true", help="smallest first")
    p.add_argument(
        "--out", type=Path, help="where runs.csv and the PNGs go (default <first path>/analysis)"
    )
    p.add_argument(
        "--last",
        type=int,
        default=5,
        help="final training numbers = mean of the last N logged values (default 5)",
    )
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    try:
        runs, out = analyze(
            args.paths, args.out, args.sort, args.ascending, args.last, plots=not args.no_plots
        )
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    header, rows = table_rows(runs)
    print(format_table(header, rows))
    print("\nruns (in table order):")
    for i, r in enumerate(runs):
        print(f"  {i:>2}  {r.status:<10}  {r.name}  [{r.dir}]")
    bad = [r for r in runs if r.status != "ok" or r.issues]
    if bad:
        print("\nproblems:")
        for r in bad:
            print(f"  {r.name}: {r.status}; {'; '.join(r.issues) or 'no details'}  [{r.dir}]")
    print(f"\nsorted by {args.sort} ({'ascending' if args.ascending else 'descending'})")
    written = ["runs.csv"] + (
        [] if args.no_plots else ["curves.png", "frontier.png", "response_length.png"]
    )
    print("wrote: " + ", ".join(str(out / w) for w in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
