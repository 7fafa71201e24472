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
- ``claims.csv`` and its table on the console, when a run has the held-out behaviour numbers
  (``heldout/harmful_comply`` and the rest; the synthetic task): one row per sweep point in the
  sweep's order (``multirun.yaml``: ``experiment=base_short,sft_short,...``), one seed or
  several, its varying overrides, ``n``, then the mean and sample std over the seeds of
  ``heldout/gold_reward``, ``harmful_refusal``, ``harmful_comply``, ``benign_correct``,
  ``benign_overrefusal``, ``knowledge_acc``, ``corpus_nll``, ``kl`` and ``response_length``
  (short names on the console, a legend under it);
- ``curves.png``: each logged metric's curve, every run on the same axes (reward, KL and gold
  reward first, ``perf/*`` last);
- ``frontier.png``: reward and gold reward against KL across runs (held-out, and on the last
  training batches with the KL clamped at 0), with the Pareto frontier and a colour per run;
- ``balance.png``, when runs have ``heldout/harmful_comply`` and ``heldout/benign_correct``:
  the balance frontier, harmlessness (1 - compliance on harmful prompts) against helpfulness
  (correct answers on benign prompts), a marker per run, each point's mean ± seed std, coloured
  by algorithm (or by a swept numeric override), the base model a star;
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
    balance_points,
    colour_key,
    curve_order,
    pareto_front,
    place_labels,
    plot_balance,
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
    algo_name,
    collect_runs,
    final_metrics,
    find_runs,
    is_base,
    load_run,
    run_names,
    sweep_points,
)
from mplus.analyze.table import (
    ALL_COLUMNS,
    BEHAVIOUR_COLUMNS,
    CLAIM_COLUMNS,
    DEFAULT_COLUMNS,
    METRIC_COLUMNS,
    ColumnError,
    claims_cells,
    claims_legend,
    claims_rows,
    column_name,
    console_rows,
    format_table,
    has_claims,
    mean_std,
    metric_value,
    seed_cells,
    seed_groups,
    seed_rows,
    seed_varies,
    select_columns,
    sort_runs,
    sweep_order,
    table_rows,
    varying_keys,
    write_csv,
)

__all__ = [
    "algo_name",
    "ALL_COLUMNS",
    "analyze",
    "balance_points",
    "BEHAVIOUR_COLUMNS",
    "CLAIM_COLUMNS",
    "claims_cells",
    "claims_legend",
    "claims_rows",
    "collect_runs",
    "colour_key",
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
    "has_claims",
    "html_table",
    "is_base",
    "load_run",
    "main",
    "mean_std",
    "METRIC_COLUMNS",
    "metric_value",
    "pareto_front",
    "place_labels",
    "plot_balance",
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
    "sweep_order",
    "sweep_points",
    "table_rows",
    "TRAIN_COLUMNS",
    "varying_keys",
    "write_csv",
    "write_report",
]

PNGS = ("frontier.png", "curves.png", "response_length.png")
CLAIMS_CSV = "claims.csv"
BALANCE_PNG = "balance.png"  # after frontier.png in the report; only with the behaviour numbers
CLAIMS_TITLE = "claims: mean ± std over seeds (n)"


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
    """Read the runs, write ``runs.csv`` (``runs_by_seed.csv`` when the runs differ in ``seed``,
    ``claims.csv`` when they have the behaviour numbers), the PNGs (``balance.png`` with those
    numbers) and ``report.html`` into ``out``; return (runs, out). A ``claims.csv`` or
    ``balance.png`` left in ``out`` by an earlier analysis goes when this one has none.

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
    claims = has_claims(runs)
    if claims:
        write_csv(out / CLAIMS_CSV, *claims_rows(runs))
    else:
        (out / CLAIMS_CSV).unlink(missing_ok=True)
    pngs = []
    balance = False
    if plots:
        plot_frontier(runs, out / "frontier.png")
        balance = plot_balance(runs, out / BALANCE_PNG)
        plot_curves(runs, out / "curves.png")
        plot_length(runs, out / "response_length.png")
        pngs = [out / p for p in PNGS]
        if balance:
            pngs.insert(1, out / BALANCE_PNG)
    if not balance:
        (out / BALANCE_PNG).unlink(missing_ok=True)
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
        claims=claims,
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
        help="where runs.csv (runs_by_seed.csv, claims.csv), the PNGs and report.html go "
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
    claims = has_claims(runs)
    if claims:
        print(f"\n{CLAIMS_TITLE}, in the sweep's order")
        print(format_table(*claims_cells(*claims_rows(runs))))
        print(claims_legend())
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
    written += [CLAIMS_CSV] if claims else []
    pngs = [] if args.no_plots else list(PNGS)
    if (out / BALANCE_PNG).exists():
        pngs.insert(1, BALANCE_PNG)
    written += [*pngs, "report.html"]
    print("wrote: " + ", ".join(str(out / w) for w in written))
    return 0
