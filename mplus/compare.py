"""Side-by-side table of the held-out ``eval/...`` numbers of several runs.

``python -m mplus.compare <run dir or multirun dir> [...]`` reads every ``summary.json`` below the
given directories and prints one row per run (its algorithm and the Hydra overrides that name
it), so base, SFT, DPO and PPO read side by side. ``python -m mplus.analyze`` gives the fuller
picture (training curves, failed runs, plots).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from mplus.analyze import run_names

COLUMNS = (
    "eval/gold_reward",
    "eval/reward",
    "eval/kl",
    "eval/response_length",
    "eval/stop_rate",
    "eval/probe_nll",
)


def collect(paths: list[str]) -> list[tuple[str, dict]]:
    """(run name, summary) for each ``summary.json`` under ``paths``, in path order.

    A run is named by its Hydra overrides, less those that every listed run shares.
    """
    files = []
    for p in map(Path, paths):
        found = (
            [p / "summary.json"]
            if (p / "summary.json").exists()
            else sorted(p.rglob("summary.json"))
        )
        if not found:
            raise FileNotFoundError(f"{p}: no summary.json (not a run dir or multirun dir)")
        files += found
    names = run_names([f.parent for f in files])
    return [(name, json.loads(f.read_text())) for f, name in zip(files, names, strict=True)]


def table(rows: list[tuple[str, dict]], columns=COLUMNS) -> str:
    def fmt(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    header = ["run", *[c.removeprefix("eval/") for c in columns]]
    body = [[name, *[fmt(s.get(c)) for c in columns]] for name, s in rows]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(r):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


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
