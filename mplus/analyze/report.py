"""``report.html``: the analysis as one self-contained page to open in a browser.

The tables (the chosen columns, every column, the seed table, the claims table), the PNGs embedded as base64
``data:`` images, the failed, incomplete and pending runs with their issues, and every run's
overrides. No script, no stylesheet or font from elsewhere: it reads the same offline, without
JavaScript, and as a file mailed around.
"""

from __future__ import annotations

import base64
import datetime
import html
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from mplus import tables
from mplus.analyze.runs import Run
from mplus.analyze.table import claims_rows, console_rows, seed_cells, seed_rows, table_rows

STATUS_ORDER = ("ok", "incomplete", "failed", "pending")
# what each PNG shows (its caption)
PLOTS = {
    "frontier.png": "Reward and gold reward against KL to the base, held-out (top) and on the "
    "last training batches (bottom, KL clamped at 0), with the Pareto frontier.",
    "balance.png": "The balance frontier: harmlessness (1 − the share of harmful held-out "
    "prompts complied with) against helpfulness (the share of benign ones answered correctly); "
    "a small marker per run, each sweep point's mean with its seed std as error bars, the base "
    "model a star, the dotted line through the points no other beats on both.",
    "curves.png": "Every logged curve, all runs on shared axes: reward, KL and gold reward "
    "first, throughput (perf/*) last.",
    "response_length.png": "Response length over training; a star marks the held-out "
    "evaluation at the end.",
}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
  margin: 0 auto; padding: 16px 28px 48px; max-width: 1500px; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 3px; border-bottom: 1px solid #ddd; }
p.meta, p.note { color: #555; margin: 4px 0 8px; }
nav a { margin-right: 14px; }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e6e6e6; text-align: left;
  vertical-align: baseline; }
th { background: #f3f4f6; font-weight: 600; white-space: nowrap; }
th.group { text-align: center; border-bottom: 1px solid #bbb; color: #333; }
th.sorted { background: #e1e9f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
td.missing { color: #aaa; }
tbody tr:nth-child(even) { background: #fafafa; }
.status { font-weight: 600; padding: 0 6px; border-radius: 3px; white-space: nowrap; }
.st-ok { color: #11632a; background: #dcf3e2; }
.st-failed { color: #8b1111; background: #fbdcdc; }
.st-incomplete { color: #7a4b00; background: #fbecc8; }
.st-pending { color: #444; background: #e8e8e8; }
ul.issues { margin: 0; padding-left: 18px; }
td.run { white-space: nowrap; }
td code { overflow-wrap: anywhere; }
details { margin: 6px 0; }
summary { cursor: pointer; color: #0b57d0; }
figure { margin: 10px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
figcaption { color: #555; margin-top: 4px; }
"""


def _group(h: str) -> tuple[str, str]:
    """(``group/``, name) of a column name, ("", name) without a group."""
    if "/" in h.strip("/"):
        g, _, name = h.rpartition("/")
        return g + "/", name
    return "", h


def _cell(v, col: str) -> str:
    if col == "status" and isinstance(v, str):
        return f'<td><span class="status st-{html.escape(v)}">{html.escape(v)}</span></td>'
    if isinstance(v, list | tuple):  # overrides
        return "<td>" + " ".join(f"<code>{html.escape(str(x))}</code>" for x in v) + "</td>"
    if col == "issues" and isinstance(v, str):
        items = "".join(f"<li>{html.escape(i)}</li>" for i in v.split("; ") if i)
        return f'<td><ul class="issues">{items}</ul></td>' if items else "<td></td>"
    if col == "dir" and isinstance(v, str):
        return f"<td><code>{html.escape(v)}</code></td>"
    if col == "run" and isinstance(v, str):
        return f'<td class="run">{html.escape(v)}</td>'
    if v is None or (v == "" and col != "run"):
        return '<td class="num missing">-</td>'
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return f"<td>{html.escape(str(v))}</td>"
    if isinstance(v, int | float):
        return f'<td class="num">{html.escape(tables.cell(v))}</td>'
    if "±" in v:  # a seed-table cell
        return f'<td class="num">{html.escape(v)}</td>'
    return f"<td>{html.escape(v)}</td>"


def html_table(header: Sequence[str], rows: Sequence[Sequence], sort: str | None = None) -> str:
    """A table with grouped column names: ``heldout/kl`` under one ``heldout/`` heading spanning
    its run of adjacent ``heldout/*`` columns (a two-row header), the column sorted by marked."""
    split = [_group(h) for h in header]
    grouped = any(g for g, _ in split)
    top, second = [], []
    i = 0
    while i < len(header):
        g, name = split[i]
        j = i
        while g and j + 1 < len(header) and split[j + 1][0] == g:
            j += 1
        if not g:
            cls = ' class="sorted"' if header[i] == sort else ""
            attr = ' rowspan="2"' if grouped else ""
            top.append(f"<th{attr}{cls}>{html.escape(name)}</th>")
        else:
            top.append(f'<th class="group" colspan="{j - i + 1}">{html.escape(g)}</th>')
            for k in range(i, j + 1):
                cls = ' class="sorted"' if header[k] == sort else ""
                second.append(f"<th{cls}>{html.escape(split[k][1])}</th>")
        i = j + 1
    head = "<tr>" + "".join(top) + "</tr>"
    if grouped:
        head += "<tr>" + "".join(second) + "</tr>"
    body = "\n".join(
        "<tr>" + "".join(_cell(v, h) for v, h in zip(row, header, strict=True)) + "</tr>"
        for row in rows
    )
    return (
        f'<div class="scroll"><table>\n<thead>{head}</thead>\n<tbody>\n{body}\n</tbody>'
        "</table></div>"
    )


def _png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_report(
    runs: list[Run],
    *,
    columns: Sequence[str],
    all_columns: Sequence[str],
    sort: str,
    ascending: bool = False,
    last: int = 5,
    sources: Sequence[str | Path] = (),
    pngs: Sequence[Path] = (),
    seeds: bool = False,
    claims: bool = False,
) -> str:
    """The page as a string (see the module docstring); ``pngs``: the plots drawn, embedded in
    this order; ``claims``: with the claims table (:func:`claims_rows`)."""
    esc = html.escape
    counts = Counter(r.status for r in runs)
    count_text = ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s])
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    order = "ascending" if ascending else "descending"
    src = ", ".join(f"<code>{esc(str(p))}</code>" for p in sources)
    problems = [r for r in runs if r.status != "ok" or r.issues]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>mplus.analyze: {len(runs)} runs</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>mplus.analyze report</h1>",
        f'<p class="meta">{len(runs)} runs ({count_text}) from {src}; sorted by'
        f" <code>{esc(sort)}</code> ({order}); written {when}.</p>",
        '<nav><a href="#runs">Runs</a>'
        + ('<a href="#seeds">Over seeds</a>' if seeds else "")
        + ('<a href="#claims">Claims</a>' if claims else "")
        + f'<a href="#problems">Failed and incomplete ({len(problems)})</a>'
        + ('<a href="#plots">Plots</a>' if pngs else "")
        + '<a href="#overrides">Overrides</a></nav>',
        '<h2 id="runs">Runs</h2>',
        '<p class="note"><code>heldout/*</code>: the held-out evaluation each run ends with;'
        f" <code>train/*</code>: the mean of the last {last} logged training batches (the KL"
        " there is the batch estimate, which can be negative); <code>rm/val_accuracy</code>:"
        " the reward model's validation accuracy; <code>steps</code>: steps of the run's last"
        " stage. Missing numbers show as -.</p>",
        html_table(*_numbered(runs, columns), sort=sort),
        "<details><summary>Every column (as in runs.csv)</summary>",
        html_table(*table_rows(runs, all_columns), sort=sort),
        "</details>",
    ]
    if seeds:
        header, rows = seed_cells(*seed_rows(runs, sort, ascending, columns))
        parts += [
            '<h2 id="seeds">Over seeds: mean ± std</h2>',
            '<p class="note">One row per sweep point (the runs that share every override but'
            " <code>seed</code>): <code>n</code> ok runs aggregated, their mean ± sample std;"
            " runs not ok are left out and counted in <code>failed</code>.</p>",
            html_table(header, rows, sort=sort),
        ]
    if claims:
        parts += [
            '<h2 id="claims">Claims: mean ± std over seeds (n)</h2>',
            '<p class="note">One row per sweep point, in the sweep\'s order: <code>n</code> ok'
            " runs (seeds), the mean ± sample std of what the held-out samples do (shares of the"
            " harmful prompts refused and complied with, of the benign prompts answered correctly"
            " and refused needlessly), the gold reward, the knowledge probe, the corpus NLL, the"
            " KL to the base and the response length; a lone number is one seed. As in"
            " <code>claims.csv</code>.</p>",
            html_table(*seed_cells(*claims_rows(runs))),
        ]
    parts.append(f'<h2 id="problems">Failed and incomplete runs ({len(problems)})</h2>')
    if problems:
        parts.append(
            html_table(
                ["run", "status", "issues", "dir"],
                [
                    [r.name, r.status, "; ".join(r.issues) or "no details", str(r.dir)]
                    for r in problems
                ],
            )
        )
    else:
        parts.append('<p class="note">None: every run finished (status ok) without issues.</p>')
    if pngs:
        parts.append('<h2 id="plots">Plots</h2>')
        for p in pngs:
            parts.append(
                f'<figure><img src="{_png(p)}" alt="{esc(p.name)}">'
                f"<figcaption><code>{esc(p.name)}</code>: {esc(PLOTS.get(p.name, ''))}"
                "</figcaption></figure>"
            )
    shared = set.intersection(*(set(r.overrides.items()) for r in runs)) if runs else set()
    parts += [
        '<h2 id="overrides">Overrides</h2>',
        '<p class="note">Shared by every run: '
        + (" ".join(f"<code>{esc(k)}={esc(v)}</code>" for k, v in sorted(shared)) or "none")
        + ". Each run's own Hydra overrides (<code>.hydra/overrides.yaml</code>):</p>",
        html_table(
            ["#", "run", "status", "overrides", "dir"],
            [
                [
                    i,
                    r.name,
                    r.status,
                    [f"{k}={v}" for k, v in r.overrides.items()],
                    str(r.dir),
                ]
                for i, r in enumerate(runs)
            ],
        ),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _numbered(runs: list[Run], columns: Sequence[str]) -> tuple[list[str], list[list]]:
    """The console table's columns after the run's number (its row: the numbers that label the
    points of frontier.png when there are many runs)."""
    header, rows = console_rows(runs, columns)
    return ["#", *header], [[i, *row] for i, row in enumerate(rows)]


def write_report(path: Path, runs: list[Run], **kwargs) -> None:
    """:func:`render_report` into ``path``."""
    Path(path).write_text(render_report(runs, **kwargs), encoding="utf-8")
