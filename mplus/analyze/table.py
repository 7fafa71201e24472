"""The runs as a table: override columns, sorting, the rows, ``runs.csv`` and the console."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from mplus import tables
from mplus.analyze.runs import EVAL_COLUMNS, TRAIN_COLUMNS, Run, _last


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
    """Console table: every column of the CSV except the issues and the directory (and the run
    name when override columns name the runs)."""
    varying = header[2] != "steps"  # override columns sit between status and steps
    drop = ("issues", "dir", "run") if varying else ("issues", "dir")
    keep = [i for i, h in enumerate(header) if h not in drop]
    return tables.format_table([header[i] for i in keep], [[row[i] for i in keep] for row in rows])
