"""Read a sweep's runs back: one table row per run, and PNG plots of the trade-offs.

``python -m mplus.analyze <multirun dir or run dirs> [--sort METRIC] [--out DIR]``

For every run (a directory with ``.hydra/``, ``summary.json`` or ``tb/``) it reads the TensorBoard
events with TensorBoard's own record reader, ``summary.json`` and the Hydra overrides, and writes
into ``--out`` (default ``<first dir>/analysis``):

- ``runs.csv`` and the same table on the console: one row per run, the overrides that differ
  between runs, then the final training numbers (mean of the last ``--last`` logged PPO values:
  ``reward``, ``gold_reward``, ``kl``, ``response_length``, ``stop_rate``), the reward model's
  validation accuracy and the held-out ``heldout/*`` numbers, sorted by ``--sort``;
- ``runs_by_seed.csv`` and its table on the console, when the runs differ in ``seed``: one row per
  sweep point (the runs that share every other override), its varying overrides, ``n`` (the ok
  runs aggregated; runs not ok are left out and counted in ``failed``), then each metric's mean
  and sample std over the seeds (``<metric>``, ``<metric>_std``; ``0.612 ± 0.021`` on the
  console), sorted by the mean of ``--sort``;
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
import sys
from pathlib import Path

from mplus.analyze.events import EventRead, read_events
from mplus.analyze.plots import pareto_front, plot_curves, plot_frontier, plot_length
from mplus.analyze.runs import (
    EVAL_COLUMNS,
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
    format_table,
    mean_std,
    metric_value,
    seed_cells,
    seed_groups,
    seed_rows,
    seed_varies,
    sort_runs,
    table_rows,
    varying_keys,
    write_csv,
)

__all__ = [
    "analyze",
    "collect_runs",
    "EVAL_COLUMNS",
    "EventRead",
    "final_metrics",
    "find_runs",
    "format_table",
    "load_run",
    "main",
    "mean_std",
    "metric_value",
    "pareto_front",
    "plot_curves",
    "plot_frontier",
    "plot_length",
    "read_events",
    "Run",
    "run_names",
    "seed_cells",
    "seed_groups",
    "seed_rows",
    "seed_varies",
    "sort_runs",
    "sweep_points",
    "table_rows",
    "TRAIN_COLUMNS",
    "varying_keys",
    "write_csv",
]


def analyze(
    paths: list[str | Path],
    out: Path | None = None,
    sort: str = "heldout/gold_reward",
    ascending: bool = False,
    last: int = 5,
    plots: bool = True,
) -> tuple[list[Run], Path]:
    """Read the runs, write ``runs.csv`` (and ``runs_by_seed.csv`` when the runs differ in
    ``seed``) and the PNGs into ``out``; return (runs, out)."""
    import matplotlib

    matplotlib.use("Agg")
    runs = sort_runs(collect_runs(paths, last), sort, ascending)
    out = Path(out) if out else Path(paths[0]) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    header, rows = table_rows(runs)
    write_csv(out / "runs.csv", header, rows)
    if seed_varies(runs):
        write_csv(out / "runs_by_seed.csv", *seed_rows(runs, sort, ascending))
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
        default="heldout/gold_reward",
        help="column, summary.json key or TensorBoard tag (default heldout/gold_reward)",
    )
    p.add_argument("--ascending", action="store_true", help="smallest first")
    p.add_argument(
        "--out",
        type=Path,
        help="where runs.csv (runs_by_seed.csv) and the PNGs go (default <first path>/analysis)",
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
    by_seed = seed_varies(runs)
    if by_seed:
        print("\nmean ± std over seeds (n per row)")
        print(format_table(*seed_cells(*seed_rows(runs, args.sort, args.ascending))))
    print("\nruns (in table order):")
    for i, r in enumerate(runs):
        print(f"  {i:>2}  {r.status:<10}  {r.name}  [{r.dir}]")
    bad = [r for r in runs if r.status != "ok" or r.issues]
    if bad:
        print("\nproblems:")
        for r in bad:
            print(f"  {r.name}: {r.status}; {'; '.join(r.issues) or 'no details'}  [{r.dir}]")
    print(f"\nsorted by {args.sort} ({'ascending' if args.ascending else 'descending'})")
    written = ["runs.csv", *(["runs_by_seed.csv"] if by_seed else [])] + (
        [] if args.no_plots else ["curves.png", "frontier.png", "response_length.png"]
    )
    print("wrote: " + ", ".join(str(out / w) for w in written))
    return 0
