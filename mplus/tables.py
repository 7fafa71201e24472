"""The one plain-text table every console report uses (the run summary, ``mplus.analyze``,
``mplus.compare``, ``mplus.eval``): columns as wide as their widest cell, a dashed rule under
the header, a missing or NaN number shown as ``-`` (never as 0)."""

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
) -> str:
    """``header`` and ``rows`` as aligned text; the first ``left`` columns are left-aligned
    (names), the rest right-aligned (numbers)."""
    head = [str(h) for h in header]
    body = [[v if isinstance(v, str) else cell(v, digits, style) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(r):
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])
