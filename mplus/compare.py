"""Side-by-side table of the held-out ``heldout/...`` numbers of several runs: a view of
:mod:`mplus.analyze` (its run discovery, run names and evaluation columns) without curves or
plots.

``python -m mplus.compare <run dir or multirun dir> [...]`` prints one row per finished run (its
algorithm and the Hydra overrides that name it), so base, SFT, DPO and PPO read side by side.
``python -m mplus.analyze`` gives the fuller picture (training curves, failed runs, plots).
"""

from __future__ import annotations

import json
import sys

from mplus import rundir, tables
from mplus.analyze import find_runs, run_names
from mplus.analyze.runs import with_current_names

# the held-out numbers side by side (``python -m mplus.analyze --columns all`` has every one)
COLUMNS = (
    "heldout/reward",
    "heldout/gold_reward",
    "heldout/kl",
    "heldout/response_length",
    "heldout/stop_rate",
    "heldout/knowledge_acc",
    "heldout/corpus_nll",
    "heldout/harmful_refusal",
    "heldout/harmful_comply",
    "heldout/benign_correct",
    "heldout/benign_overrefusal",
)


def collect(paths: list[str]) -> list[tuple[str, dict]]:
    """(run name, summary) for each run with a ``summary.json`` under ``paths``, in path order.

    A run is named by its Hydra overrides, less those that every listed run shares.
    """
    runs = [r for r in find_runs(paths) if (r / rundir.SUMMARY).exists()]
    if not runs:
        raise FileNotFoundError(f"{' '.join(paths)}: no summary.json (no finished run)")
    names = run_names(runs)
    return [
        (name, with_current_names(json.loads((r / rundir.SUMMARY).read_text())))
        for r, name in zip(runs, names, strict=True)
    ]


def table(rows: list[tuple[str, dict]], columns=COLUMNS) -> str:
    header = ["run", *[c.removeprefix("heldout/") for c in columns]]
    return tables.format_table(
        header, [[name, *[s.get(c) for c in columns]] for name, s in rows], left=1
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        print(table(collect(argv)))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
