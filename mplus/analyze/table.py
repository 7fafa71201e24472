"""The runs as a table: override columns, the column selection, sorting, the rows, ``runs.csv``
and the console; the same runs aggregated over their seeds (``runs_by_seed.csv``), and the
claims table (``claims.csv``: the held-out behaviour numbers per sweep point, over its seeds)."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from mplus import tables
from mplus.analyze.runs import EVAL_COLUMNS, RM_ACCURACY, TRAIN_COLUMNS, Run, _last, sweep_points
from mplus.rundir import override_dict

STEPS = "steps"  # steps of the run's last stage
# The numeric metric columns of the per-run table (what the seed table aggregates):
# ``train/*`` (training-batch means), the RM's accuracy, ``heldout/*`` (the held-out evaluation).
METRIC_COLUMNS = (*(c for c, _ in TRAIN_COLUMNS), RM_ACCURACY, *EVAL_COLUMNS)
ALL_COLUMNS = (STEPS, *METRIC_COLUMNS)  # ``--columns all``; runs.csv always has them
# ``--columns default``: what fits a ~120-character console next to an override or two.
DEFAULT_COLUMNS = (
    STEPS,
    "heldout/gold_reward",
    "heldout/reward",
    "heldout/kl",
    "heldout/response_length",
    # the general-capability number (``all`` has stop_rate, corpus_nll and the rest: with them
    # the table outgrows 120 characters)
    "heldout/knowledge_acc",
    RM_ACCURACY,
)
# Column names before the ``train/`` prefix (runs.csv of older versions, ``--sort kl``).
OLD_NAMES = {
    **{c.removeprefix("train/"): c for c, _ in TRAIN_COLUMNS},
    "rm_accuracy": RM_ACCURACY,
}
SEED = "seed"  # the override key that repeats a sweep point
NO_COLUMN = ("run", "status", "issues", "dir")  # never a metric column


class ColumnError(ValueError):
    """A ``--columns`` name that is no column."""


def column_name(name: str) -> str:
    """A column as the table names it (an old name such as ``kl`` -> ``train/kl``)."""
    return OLD_NAMES.get(name, name)


def select_columns(spec: str | Sequence[str] | None, runs: Sequence[Run] = ()) -> list[str]:
    """The metric columns that ``--columns`` names: ``default`` (None; :data:`DEFAULT_COLUMNS`),
    ``all`` (:data:`ALL_COLUMNS`), or names separated by commas, in that order, where
    ``default`` and ``all`` expand in place (``default,train/kl``). A name is a table column, an
    old column name, or any summary key or TensorBoard tag that one of ``runs`` has
    (``rl/entropy``, ``eval/mmlu/accuracy``; its value as :func:`metric_value` reads it).

    Raises:
        ColumnError: a name that is none of these.
    """
    items = (spec.split(",") if isinstance(spec, str) else list(spec)) if spec else ["default"]
    out: list[str] = []
    for item in (i.strip() for i in items):
        if item in ("default", "all"):
            out += DEFAULT_COLUMNS if item == "default" else ALL_COLUMNS
            continue
        name = column_name(item)
        if not name:
            continue
        known = name in ALL_COLUMNS or any(name in r.summary or name in r.scalars for r in runs)
        if not known or name in NO_COLUMN:
            raise ColumnError(
                f"--columns: unknown column {item!r} (not a table column, and no run has such a"
                f" summary key or TensorBoard tag); table columns: {', '.join(ALL_COLUMNS)}"
            )
        out.append(name)
    return list(dict.fromkeys(out))


def varying_keys(runs: list[Run]) -> list[str]:
    """Override keys whose value is not the same in every run (absent counts as a value)."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def metric_value(run: Run, metric: str) -> float | None:
    """A table column, a summary key, the last value of a TensorBoard tag, or an override."""
    metric = column_name(metric)
    for source in (run.final, run.summary):
        if isinstance(source.get(metric), int | float):
            return float(source[metric])
    if metric in run.scalars:
        return _last(run.scalars[metric])
    try:
        return float(run.overrides[metric])
    except (KeyError, ValueError):
        return None


def _cell_value(run: Run, column: str):
    """A metric column's value in ``run``: its final number, else :func:`metric_value`."""
    if column in run.final:
        return run.final[column]
    return metric_value(run, column)


def sort_runs(runs: list[Run], metric: str, ascending: bool = False) -> list[Run]:
    """Sorted by ``metric``; runs without it (failed, incomplete) go last."""

    def key(r: Run):
        v = metric_value(r, metric)
        if v is None or math.isnan(v):
            return (1, 0.0)
        return (0, v if ascending else -v)

    return sorted(runs, key=key)


def table_rows(
    runs: list[Run], columns: Sequence[str] = ALL_COLUMNS
) -> tuple[list[str], list[list]]:
    """``runs.csv``: per run its name, status, the varying overrides, ``columns`` (default every
    table column), the issues and the directory."""
    keys = varying_keys(runs)
    header = ["run", "status", *keys, *columns, "issues", "dir"]
    rows = [
        [
            r.name,
            r.status,
            *[r.overrides.get(k, "") for k in keys],
            *[_cell_value(r, c) for c in columns],
            "; ".join(r.issues),
            str(r.dir),
        ]
        for r in runs
    ]
    return header, rows


def console_rows(
    runs: list[Run], columns: Sequence[str] = DEFAULT_COLUMNS
) -> tuple[list[str], list[list]]:
    """The console's per-run table: the status, the varying overrides (or the run name when no
    override varies) and ``columns``; no issues or directories (the problems list has them)."""
    header, rows = table_rows(runs, columns)
    start = 1 if varying_keys(runs) else 0  # header: run, status, keys, columns, issues, dir
    return header[start:-2], [row[start:-2] for row in rows]


# ---------------------------------------------------------------- aggregated over seeds


def seed_varies(runs: list[Run]) -> bool:
    """Whether the runs differ in their ``seed`` override (then they have a seed table)."""
    return SEED in varying_keys(runs)


def seed_groups(
    runs: list[Run], sort: str | None, ascending: bool = False
) -> tuple[list[str], list[list[Run]]]:
    """The non-seed varying override keys, and the runs grouped by their values of those keys.

    Groups are sorted by the mean of ``sort`` over their ok runs (:func:`metric_value`), groups
    without a value last; ties keep the order of ``runs``. ``sort`` None: in the order of
    ``runs`` (of each group's first run).
    """
    keys = [k for k in varying_keys(runs) if k != SEED]
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(tuple(r.overrides.get(k) for k in keys), []).append(r)
    if sort is None:
        return keys, list(groups.values())

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


def seed_rows(
    runs: list[Run],
    sort: str | None,
    ascending: bool = False,
    columns: Sequence[str] = METRIC_COLUMNS,
) -> tuple[list[str], list[list]]:
    """``runs_by_seed.csv``: one row per sweep point (the runs sharing every override but
    ``seed``), sorted as :func:`seed_groups` (``sort`` None: in the order of ``runs``): its non-seed varying overrides, ``n`` (the ok runs
    aggregated), ``failed`` (runs not ok: failed, incomplete or pending; a column only if any
    are), then ``<metric>`` (the mean) and ``<metric>_std`` (sample std) of every metric in
    ``columns`` (default every metric column; ``steps`` is never aggregated).
    """
    metrics = [c for c in columns if c != STEPS]
    keys, groups = seed_groups(runs, sort, ascending)
    any_failed = any(r.status != "ok" for r in runs)
    header = [*keys, "n", *(["failed"] if any_failed else [])]
    header += [h for m in metrics for h in (m, f"{m}_std")]
    rows = []
    for group in groups:
        ok = [r for r in group if r.status == "ok"]
        row = [*(group[0].overrides.get(k, "") for k in keys), len(ok)]
        row += [len(group) - len(ok)] if any_failed else []
        for m in metrics:
            row += mean_std([_cell_value(r, m) for r in ok])
        rows.append(row)
    return header, rows


def seed_cells(header: list[str], rows: list[list]) -> tuple[list[str], list[list]]:
    """The console form of :func:`seed_rows`: each ``<metric>``, ``<metric>_std`` pair as one
    ``0.612 ± 0.021`` cell (the mean alone when there is no std, ``-`` without a mean)."""
    std = {h: header.index(f"{h}_std") for h in header if f"{h}_std" in header}
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


# ---------------------------------------------------------------- the claims table

# what the held-out samples do (synthetic task: mplus.data.synthetic.behaviour_rates); a run with
# any of them has a claims table
BEHAVIOUR_COLUMNS = tuple(
    c for c in EVAL_COLUMNS if c.startswith(("heldout/harmful_", "heldout/benign_"))
)
# claims.csv: per sweep point the mean and std over seeds of these, in this order; the console's
# short name of each (its legend line names them in full)
CLAIM_COLUMNS = {
    "heldout/gold_reward": "gold",
    "heldout/harmful_refusal": "refuse",
    "heldout/harmful_comply": "comply",
    "heldout/benign_correct": "correct",
    "heldout/benign_overrefusal": "overref",
    "heldout/knowledge_acc": "know_acc",
    "heldout/corpus_nll": "corpus_nll",
    "heldout/kl": "kl",
    "heldout/response_length": "len",
}


def has_claims(runs: list[Run]) -> bool:
    """Whether a run has a number for one of :data:`BEHAVIOUR_COLUMNS` (then there is a claims
    table, and a balance plot when the numbers are there for it)."""
    return any(
        isinstance(v := r.final.get(c), int | float) and not math.isnan(v)
        for r in runs
        for c in BEHAVIOUR_COLUMNS
    )


def sweep_order(runs: list[Run]) -> list[Run]:
    """The runs in their sweep's order: by the values of each varying non-seed override in the
    order the sweep lists them (the ``multirun.yaml`` of the run's sweep dir: ``experiment=
    base_short,sft_short,...``), values it does not list after them, numbers by value, other
    values by name (the order :func:`~mplus.analyze.runs.find_runs` finds their dirs in); a run
    without the override last. Runs of one point keep their order."""
    keys = [k for k in varying_keys(runs) if k != SEED]
    order: dict[str, list[str]] = {k: [] for k in keys}
    for sweep_dir in dict.fromkeys(r.dir.parent for r in runs):
        for _, point in sweep_points(sweep_dir):
            for k, v in override_dict(point).items():
                if k in order and v not in order[k]:
                    order[k].append(v)
    for k in keys:
        rest = [v for v in dict.fromkeys(r.overrides.get(k) for r in runs) if v is not None]
        rest = [v for v in rest if v not in order[k]]
        try:
            rest.sort(key=float)
        except ValueError:
            rest.sort()
        order[k] += rest

    def rank(r: Run) -> tuple:
        return tuple(
            order[k].index(r.overrides[k]) if k in r.overrides else len(order[k]) for k in keys
        )

    return sorted(runs, key=rank)


def claims_rows(runs: list[Run]) -> tuple[list[str], list[list]]:
    """``claims.csv``: :func:`seed_rows` of the :data:`CLAIM_COLUMNS`, one row per sweep point in
    the sweep's order (:func:`sweep_order`): its non-seed varying overrides, ``n`` (``failed``),
    then ``<metric>`` and ``<metric>_std`` of each claim column."""
    return seed_rows(sweep_order(runs), None, columns=list(CLAIM_COLUMNS))


def claims_cells(header: list[str], rows: list[list]) -> tuple[list[str], list[list]]:
    """The console form of :func:`claims_rows`: ``0.612 ± 0.021`` cells (:func:`seed_cells`)
    under the short names of :data:`CLAIM_COLUMNS`."""
    header, rows = seed_cells(header, rows)
    return [CLAIM_COLUMNS.get(h, h) for h in header], rows


def claims_legend(width: int = 120) -> str:
    """The console's key to the short claim column names (``gold=heldout/gold_reward, ...``),
    wrapped at ``width`` between names."""
    import textwrap

    text = ", ".join(f"{short}={name}" for name, short in CLAIM_COLUMNS.items())
    return textwrap.fill(text, width, break_on_hyphens=False)


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows([["" if v is None else v for v in row] for row in rows])


def format_table(header: list[str], rows: list[list]) -> str:
    """Console table with grouped column names: ``heldout/gold_reward``, ``heldout/kl`` show as
    ``gold_reward``, ``kl`` under one ``heldout/`` label (:func:`mplus.tables.format_table`'s
    ``groups``); an ``issues`` or ``dir`` column (:func:`table_rows`) is left out."""
    keep = [i for i, h in enumerate(header) if h not in ("issues", "dir")]
    return tables.format_table(
        [header[i] for i in keep], [[row[i] for i in keep] for row in rows], groups=True
    )
