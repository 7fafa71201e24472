"""Read a sweep's runs back: one table row per run, PNG plots of the trade-offs, and one HTML
page with all of it.

``python -m mplus.analyze <multirun dir or run dirs> [--sort METRIC] [--columns COLS] [--out DIR]``

For every run (a directory with ``.hydra/``, ``summary.json`` or ``tb/``) it reads the TensorBoard
events with TensorBoard's own record reader, ``summary.json`` and the Hydra overrides, and writes
into ``--out`` (default ``<first dir>/analysis``):

- ``runs.csv``: one row per run, the overrides that differ between runs, ``steps``, then every
  metric column: ``train/reward``, ``train/gold_reward``, ``train/kl``, ``train/response_length``,
  ``train/stop_rate`` (the mean of the last ``--last`` logged training-batch values, not
  held-out numbers; the batch KL estimate can be negative), ``rm/val_accuracy`` (the reward
  model's) and the held-out evaluation ``heldout/*``, sorted by ``--sort``. The console shows
  the ``--columns`` of it (default: the held-out numbers, the RM accuracy and the steps, ~120
  characters wide; ``all``; or names, ``default,train/kl,rl/entropy``), prefixes such as
  ``heldout/`` on a line above their columns;
- ``runs_by_seed.csv`` and its table on the console, when the runs differ in ``seed``: one row per
  sweep point (the runs that share every other override), its varying overrides, ``n`` (the ok
  runs aggregated; runs not ok are left out and counted in ``failed``), then each metric's mean
  and sample std over the seeds (``<metric>``, ``<metric>_std``; ``0.612 ± 0.021`` on the
  console, for the ``--columns``), sorted by the mean of ``--sort``;
- ``curves.png``: each logged metric's curve, every run on the same axes (reward, KL and gold
  reward first, ``perf/*`` last);
- ``frontier.png``: reward and gold reward against KL across runs (held-out, and on the last
  training batches with the KL clamped at 0), with the Pareto frontier and a colour per run;
- ``response_length.png``: response length over training;
- ``report.html``: the tables, the PNGs embedded, the failed and incomplete runs with their
  issues and every run's overrides, in one self-contained page (no scripts, nothing fetched).

Runs that failed or are still running are listed with their status (``failed``,
``incomplete``; sweep points not started yet: ``pending``) and what is wrong (no event file, a
truncated event file, no summary.json), never dropped; a directory still being written to is
read as far as it goes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mplus.analyze.events import EventRead, read_events
from mplus.analyze.plots import (
    curve_order,
    pareto_front,
    place_labels,
    plot_curves,
    plot_frontier,
    plot_length,
)
from mplus.analyze.report import html_table, render_report, write_report
from mplus.analyze.runs import (
    EVAL_COLUMNS,
    RM_ACCURACY,
    TRAIN_COLUMNS,
    Run,
    collect_runs,
    final_metrics,
    find_runs,
    load_run,
    run_names,
    sweep_points,
)
from mplus.analyze.table import (
    ALL_COLUMNS,
    DEFAULT_COLUMNS,
    METRIC_COLUMNS,
    ColumnError,
    column_name,
    console_rows,
    format_table,
    mean_std,
    metric_value,
    seed_cells,
    seed_groups,
    seed_rows,
    seed_varies,
    select_columns,
    sort_runs,
    table_rows,
    varying_keys,
    write_csv,
)

__all__ = [
    "ALL_COLUMNS",
    "analyze",
    "collect_runs",
    "column_name",
    "ColumnError",
    "console_rows",
    "curve_order",
    "DEFAULT_COLUMNS",
    "EVAL_COLUMNS",
    "EventRead",
    "final_metrics",
    "find_runs",
    "format_table",
    "html_table",
    "load_run",
    "main",
    "mean_std",
    "METRIC_COLUMNS",
    "metric_value",
    "pareto_front",
    "place_labels",
    "plot_curves",
    "plot_frontier",
    "plot_length",
    "read_events",
    "render_report",
    "RM_ACCURACY",
    "Run",
    "run_names",
    "seed_cells",
    "seed_groups",
    "seed_rows",
    "seed_varies",
    "select_columns",
    "sort_runs",
    "sweep_points",
    "table_rows",
    "TRAIN_COLUMNS",
    "varying_keys",
    "write_csv",
    "write_report",
]

PNGS = ("frontier.png", "curves.png", "response_length.png")


def console_columns(runs: list[Run], columns: str | list[str] | None, sort: str) -> list[str]:
    """The ``--columns`` selection (:func:`select_columns`), with the ``--sort`` metric added
    at the end when it is a metric the selection leaves out."""
    cols = select_columns(columns, runs)
    key = column_name(sort)
    is_override = any(key in r.overrides for r in runs)
    if key not in cols and not is_override and any(metric_value(r, key) is not None for r in runs):
        cols.append(key)
    return cols


def analyze(
    paths: list[str | Path],
    out: Path | None = None,
    sort: str = "heldout/gold_reward",
    ascending: bool = False,
    last: int = 5,
    plots: bool = True,
    columns: str | list[str] | None = None,
) -> tuple[list[Run], Path]:
    """Read the runs, write ``runs.csv`` (and ``runs_by_seed.csv`` when the runs differ in
    ``seed``), the PNGs and ``report.html`` into ``out``; return (runs, out).

    ``columns``: the report's table columns (``--columns``); the CSVs have every column, and
    the columns named here that are not table columns (a summary key, a TensorBoard tag).

    Raises:
        FileNotFoundError: a path without runs.
        ColumnError: an unknown column in ``columns`` (a ValueError).
    """
    import matplotlib

    matplotlib.use("Agg")
    runs = sort_runs(collect_runs(paths, last), sort, ascending)
    cols = console_columns(runs, columns, sort)
    every = [*ALL_COLUMNS, *(c for c in cols if c not in ALL_COLUMNS)]
    out = Path(out) if out else Path(paths[0]) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "runs.csv", *table_rows(runs, every))
    seeds = seed_varies(runs)
    if seeds:
        metrics = [c for c in every if c in METRIC_COLUMNS or c not in ALL_COLUMNS]
        write_csv(out / "runs_by_seed.csv", *seed_rows(runs, sort, ascending, metrics))
    pngs = []
    if plots:
        plot_frontier(runs, out / "frontier.png")
        plot_curves(runs, out / "curves.png")
        plot_length(runs, out / "response_length.png")
        pngs = [out / p for p in PNGS]
    write_report(
        out / "report.html",
        runs,
        columns=cols,
        all_columns=every,
        sort=column_name(sort),
        ascending=ascending,
        last=last,
        sources=paths,
        pngs=pngs,
        seeds=seeds,
    )
    return runs, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mplus.analyze", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("paths", nargs="+", help="multirun dir(s) or run dir(s)")
    p.add_argument(
        "--sort",
        default="heldout/gold_reward",
        help="column, summary.json key or TensorBoard tag (default heldout/gold_reward)",
    )
    p.add_argument("--ascending", action="store_true", help="smallest first")
    p.add_argument(
        "--columns",
        default=None,
        help="the console's and report's table columns: default (the held-out numbers, "
        "rm/val_accuracy, steps), all, or names separated by commas (table columns, summary "
        "keys, TensorBoard tags; default and all expand: default,train/kl); the CSVs have all",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="where runs.csv (runs_by_seed.csv), the PNGs and report.html go "
        "(default <first path>/analysis)",
    )
    p.add_argument(
        "--last",
        type=int,
        default=5,
        help="train/* columns = mean of the last N logged training values (default 5)",
    )
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    try:
        runs, out = analyze(
            args.paths,
            args.out,
            args.sort,
            args.ascending,
            args.last,
            plots=not args.no_plots,
            columns=args.columns,
        )
    except (FileNotFoundError, ColumnError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cols = console_columns(runs, args.columns, args.sort)
    print(format_table(*console_rows(runs, cols)))
    by_seed = seed_varies(runs)
    if by_seed:
        print("\nmean ± std over seeds (n per row)")
        print(format_table(*seed_cells(*seed_rows(runs, args.sort, args.ascending, cols))))
    print("\nruns (in table order):")
    for i, r in enumerate(runs):
        print(f"  {i:>2}  {r.status:<10}  {r.name}  [{r.dir}]")
    bad = [r for r in runs if r.status != "ok" or r.issues]
    if bad:
        print("\nproblems:")
        for r in bad:
            print(f"  {r.name}: {r.status}; {'; '.join(r.issues) or 'no details'}  [{r.dir}]")
    if not any(metric_value(r, args.sort) is not None for r in runs):
        print(
            f"\nwarning: no run has {args.sort}; the rows are in the order found", file=sys.stderr
        )
    print(
        f"\nsorted by {column_name(args.sort)} ({'ascending' if args.ascending else 'descending'})"
    )
    print("heldout/*: the held-out evaluation; train/*: means of the last training batches")
    print(f"every column: --columns all, or {out / 'runs.csv'}")
    written = ["runs.csv", *(["runs_by_seed.csv"] if by_seed else [])]
    written += [*([] if args.no_plots else PNGS), "report.html"]
    print("wrote: " + ", ".join(str(out / w) for w in written))
    return 0
