"""The one plain-text table every console report uses (the run summary, ``mplus.analyze``,
``mplus.compare``, ``mplus.eval``): columns as wide as their widest cell, a dashed rule under
the header (and, with ``groups``, the ``group/`` prefixes of the column names on a line above),
a missing or NaN number shown as ``-`` (never as 0)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def cell(v, digits: int = 3, style: str = "f") -> str:
    """A value as a table cell: floats to ``digits`` (``style`` ``"f"`` fixed, ``"g"``
    significant), None and NaN as ``-``, anything else as ``str``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}{style}}" if math.isfinite(v) else str(v)
    return str(v)


def format_table(
    header: Sequence[str],
    rows: Sequence[Sequence],
    *,
    digits: int = 3,
    style: str = "f",
    left: int = 0,
    groups: bool = False,
) -> str:
    """``header`` and ``rows`` as aligned text; the first ``left`` columns are left-aligned
    (names), the rest right-aligned (numbers).

    ``groups``: a column named ``<group>/<name>`` shows as ``<name>``, with ``<group>/`` on a line
    above the first of each run of adjacent columns in that group (``heldout/`` over
    ``gold_reward  reward  kl``), so prefixed names do not widen every column.
    """
    head = [str(h) for h in header]
    group = [""] * len(head)
    if groups:
        group = [h.rpartition("/")[0] + "/" if "/" in h.strip("/") else "" for h in head]
        head = [h.rpartition("/")[2] if g else h for h, g in zip(head, group, strict=True)]
    body = [[v if isinstance(v, str) else cell(v, digits, style) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    spans = []  # (first column, last column, label) of each run of adjacent columns of a group
    for i, g in enumerate(group):
        if g and spans and spans[-1][2] == g and spans[-1][1] == i - 1:
            spans[-1] = (spans[-1][0], i, g)
        elif g:
            spans.append((i, i, g))
    for first, last, g in spans:  # a label wider than its columns widens the last one
        widths[last] += max(0, len(g) - sum(widths[first : last + 1]) - 2 * (last - first))

    def line(r):
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    lines = [line(head), line(["-" * w for w in widths]), *map(line, body)]
    if spans:
        top = ""
        for first, _, g in spans:
            top = top.ljust(sum(widths[:first]) + 2 * first) + g
        lines.insert(0, top)
    return "\n".join(lines)
