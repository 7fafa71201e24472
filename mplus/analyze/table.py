"""The runs as a table: override columns, sorting, the rows, ``runs.csv`` and the console; and
the same runs aggregated over their seeds (``runs_by_seed.csv``)."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

from mplus import tables
from mplus.analyze.runs import EVAL_COLUMNS, TRAIN_COLUMNS, Run, _last

# The numeric metric columns of the per-run table (what the seed table aggregates).
METRIC_COLUMNS = (*(c for c, _, _ in TRAIN_COLUMNS), *EVAL_COLUMNS)
SEED = "seed"  # the override key that repeats a sweep point


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
    metric_cols = list(METRIC_COLUMNS)
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


# ---------------------------------------------------------------- aggregated over seeds


def seed_varies(runs: list[Run]) -> bool:
    """Whether the runs differ in their ``seed`` override (then they have a seed table)."""
    return SEED in varying_keys(runs)


def seed_groups(
    runs: list[Run], sort: str, ascending: bool = False
) -> tuple[list[str], list[list[Run]]]:
    """The non-seed varying override keys, and the runs grouped by their values of those keys.

    Groups are sorted by the mean of ``sort`` over their ok runs (:func:`metric_value`), groups
    without a value last; ties keep the order of ``runs``.
    """
    keys = [k for k in varying_keys(runs) if k != SEED]
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(tuple(r.overrides.get(k) for k in keys), []).append(r)

    def key(group: list[Run]):
        mean, _ = mean_std([metric_value(r, sort) for r in group if r.status == "ok"])
        if mean is None or math.isnan(mean):
            return (1, 0.0)
        return (0, mean if ascending else -mean)

    return keys, sorted(groups.values(), key=key)


def mean_std(values: list) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of the numbers in ``values`` (None and other
    non-numbers skipped); the std is None for fewer than two numbers, both for none."""
    xs = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def seed_rows(runs: list[Run], sort: str, ascending: bool = False) -> tuple[list[str], list[list]]:
    """``runs_by_seed.csv``: one row per sweep point (the runs sharing every override but
    ``seed``), sorted as :func:`seed_groups`: its non-seed varying overrides, ``n`` (the ok runs
    aggregated), ``failed`` (runs not ok: failed, incomplete or pending; a column only if any
    are), then ``<metric>`` (the mean) and ``<metric>_std`` (sample std) of every metric column.
    """
    keys, groups = seed_groups(runs, sort, ascending)
    any_failed = any(r.status != "ok" for r in runs)
    header = [*keys, "n", *(["failed"] if any_failed else [])]
    header += [h for m in METRIC_COLUMNS for h in (m, f"{m}_std")]
    rows = []
    for group in groups:
        ok = [r for r in group if r.status == "ok"]
        row = [*(group[0].overrides.get(k, "") for k in keys), len(ok)]
        row += [len(group) - len(ok)] if any_failed else []
        for m in METRIC_COLUMNS:
            row += mean_std([r.final.get(m) for r in ok])
        rows.append(row)
    return header, rows


def seed_cells(header: list[str], rows: list[list]) -> tuple[list[str], list[list]]:
    """The console form of :func:`seed_rows`: each ``<metric>``, ``<metric>_std`` pair as one
    ``0.612 ± 0.021`` cell (the mean alone when there is no std, ``-`` without a mean)."""
    std = {m: header.index(f"{m}_std") for m in METRIC_COLUMNS if f"{m}_std" in header}
    keep = [i for i, h in enumerate(header) if i not in std.values()]
    out = [
        [_mean_std_cell(row[i], row[std[header[i]]]) if header[i] in std else row[i] for i in keep]
        for row in rows
    ]
    return [header[i] for i in keep], out


def _mean_std_cell(mean: float | None, sd: float | None):
    if mean is None or sd is None:
        return mean  # the table shows a lone mean as a number, no mean as ``-``
    return f"{tables.cell(mean)} ± {tables.cell(sd)}"


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows([["" if v is None else v for v in row] for row in rows])


def format_table(header: list[str], rows: list[list]) -> str:
    """Console table: every column of the CSV except the issues and the directory (and the run
    name when override columns name the runs); the seed table (:func:`seed_cells`) has none of
    them and shows as it is."""
    varying = header[2] != "steps"  # override columns sit between status and steps
    drop = ("issues", "dir", "run") if varying else ("issues", "dir")
    keep = [i for i, h in enumerate(header) if h not in drop]
    return tables.format_table([header[i] for i in keep], [[row[i] for i in keep] for row in rows])
