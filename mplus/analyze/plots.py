"""PNG plots of the runs (matplotlib, imported when a plot is drawn)."""

from __future__ import annotations

import math
from pathlib import Path

from mplus.analyze.runs import Run, algo_name, is_base
from mplus.analyze.table import SEED, mean_std, metric_value, seed_groups, sweep_order, varying_keys

DPI = 90
# curves.png: these first (what RL trades off), then the other RL curves, the other stages',
# untagged ones (epoch), and the throughput ``perf/*`` last.
FIRST_CURVES = ("rl/reward_mean", "rl/kl", "rl/gold_reward_mean")
# y-axis labels of known curves (others: by the end of their name, see _ylabel).
YLABELS = {
    "rl/reward_mean": "RM reward (batch mean)",
    "rl/score_mean": "reward incl. penalties (batch mean)",
    "rl/kl": "KL to the reference\nbatch estimate; k1 can be < 0",
    "rl/kl_coef": "KL coefficient",
    "rl/approx_kl": "KL to the rollout policy (approx.)",
    "rl/gold_reward_mean": "gold reward (batch mean)",
    "rl/response_length_mean": "response length (tokens)",
    "rl/stop_rate": "share of responses ending in EOS",
    "rl/length_penalty_mean": "length penalty (batch mean)",
    "rl/entropy": "entropy (nats / token)",
    "rl/clipfrac": "share of ratios clipped",
    "rl/value_clipfrac": "share of values clipped",
    "rl/explained_variance": "explained variance",
    "rl/group_reward_std": "reward std within a group",
    "rl/group_zero_std_share": "share of groups with std 0",
    "rl/lr": "learning rate",
    "epoch": "epoch",
    "perf/step_s": "seconds per step",
    "perf/peak_gpu_mem_gib": "peak GPU memory (GiB)",
}


def _ylabel(tag: str) -> str:
    if tag in YLABELS:
        return YLABELS[tag]
    name = tag.rpartition("/")[2]
    for end, label in (
        ("tokens_per_s", "tokens / s"),
        ("accuracy", "accuracy"),
        ("loss", "loss"),
        ("margin", "margin"),
        ("logps", "log-prob (sum)"),
        ("_length", "tokens"),
        ("_s", "seconds"),
    ):
        if name.endswith(end):
            return label
    return name.replace("_", " ")


def curve_order(tags) -> list[str]:
    """``tags`` in the order of curves.png (:data:`FIRST_CURVES` first, ``perf/*`` last)."""

    def key(tag: str):
        if tag in FIRST_CURVES:
            return (0, FIRST_CURVES.index(tag), tag)
        if tag.startswith("perf/"):
            return (4, 0, tag)
        if tag.startswith("rl/"):
            return (1, 0, tag)
        return (2 if "/" in tag else 3, 0, tag)

    return sorted(set(tags), key=key)


def _style(runs: list[Run]):
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(runs) <= 10 else "tab20"]
    return {
        id(r): {"color": cmap(i % cmap.N), "ls": "-" if r.status == "ok" else "--"}
        for i, r in enumerate(runs)
    }


def _label(r: Run) -> str:
    return r.name if r.status == "ok" else f"{r.name} ({r.status})"


def _legend(fig, handles, labels, height_in: float, ncol: int = 4) -> float:
    """A figure legend above the panels, in as many columns (up to ``ncol``) as fit the figure's
    width; the top of the panels' area (a figure fraction)."""
    if not labels:
        return 1 - 0.15 / height_in
    renderer = fig.canvas.get_renderer()
    for n in range(max(1, min(len(labels), ncol)), 0, -1):
        legend = fig.legend(handles, labels, loc="upper center", ncol=n, fontsize=8, frameon=False)
        if n == 1 or legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
            break
        legend.remove()
    return 1 - (0.15 + 0.2 * math.ceil(len(labels) / n)) / height_in


def plot_curves(runs: list[Run], path: Path) -> None:
    """One panel per logged metric (curves with 2+ points), every run on the same axes: reward,
    KL and gold reward first, throughput (``perf/*``) last; each panel's y-axis says what it is."""
    import matplotlib.pyplot as plt

    tags = curve_order(t for r in runs for t, pts in r.scalars.items() if len(pts) > 1)
    style = _style(runs)
    ncols = min(4, max(1, len(tags)))
    nrows = max(1, math.ceil(len(tags) / ncols))
    height = 3.0 * nrows + 0.6
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, height), squeeze=False, dpi=DPI)
    for ax, tag in zip(axes.flat, tags, strict=False):
        for r in runs:
            pts = r.scalars.get(tag)
            if pts:
                ax.plot(*zip(*pts, strict=True), lw=1.2, **style[id(r)])
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(_ylabel(tag), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if tag == "rl/kl":
            ax.axhline(0, color="gray", lw=0.8)
    for ax in axes.flat[len(tags) :]:
        ax.axis("off")
    if not tags:
        axes.flat[0].text(0.5, 0.5, "no curves logged yet", ha="center", va="center")
    shown = [r for r in runs if any(len(r.scalars.get(t, ())) > 1 for t in tags)]
    handles = [plt.Line2D([], [], **style[id(r)]) for r in shown]
    top = _legend(fig, handles, [_label(r) for r in shown], height)
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by one with lower-or-equal KL and higher reward, by KL."""
    front, best = [], -math.inf
    for kl, reward in sorted(points, key=lambda p: (p[0], -p[1])):
        if reward > best:
            front.append((kl, reward))
            best = reward
    return front


def _xy(runs, xs, ys):
    """(run, x, y) for runs that have one of each key (first found), e.g. heldout/kl else kl."""
    out = []
    for r in runs:
        x = next((v for k in xs if (v := metric_value(r, k)) is not None), None)
        y = next((v for k in ys if (v := metric_value(r, k)) is not None), None)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
            out.append((r, x, y))
    return out


def _base_point(runs: list[Run], ykey: str) -> tuple[float, float] | None:
    """(KL, value) of the base on the held-out prompts, from an RL run's ``*_start`` numbers."""
    name = ykey.removeprefix("heldout/")
    for r in runs:
        kl, y = r.summary.get("rl/kl_start"), r.summary.get(f"rl/{name}_start")
        if isinstance(kl, int | float) and isinstance(y, int | float):
            return float(kl), float(y)
    return None


NAMED_POINTS = 8  # frontier.png labels its points with run names up to this many runs

# Where a point's label may go, in points from the point: right of it, left of it, then further
# up and down; the first that overlaps no other label or point and stays in the axes wins.
LABEL_OFFSETS = [(dx, dy) for dy in (3, -10, 13, -20, 23, -30, 33, -40, 45, -52) for dx in (5, -5)]


def place_labels(
    ax, items: list[tuple[float, float, str]], fontsize: float = 7, near_only: bool = False
) -> list:
    """Annotate each (x, y, text) in data coordinates without overlaps (a greedy repel pass over
    :data:`LABEL_OFFSETS`, boxes measured by the renderer; a label moved off its point gets a
    thin leader line). Call it when the axes' limits and position are final. Returns the
    annotations.

    ``near_only``: only the offsets next to the point (no leader lines, which cross a crowd of
    points), and a label that overlaps something at each of them is left out (where a legend
    names the points too)."""
    from matplotlib.text import Text

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    r = 4 * fig.dpi / 72  # a marker's half-size in pixels
    centres = [ax.transData.transform((x, y)) for x, y, _ in items]
    taken = [(cx - r, cy - r, cx + r, cy + r) for cx, cy in centres]

    def cost(b) -> float:
        b = b.padded(2)  # pixels of air around a label
        out = sum(
            max(0.0, min(b.x1, t[2]) - max(b.x0, t[0]))
            * max(0.0, min(b.y1, t[3]) - max(b.y0, t[1]))
            for t in taken
        )
        inside = max(0.0, min(b.x1, frame.x1) - max(b.x0, frame.x0)) * max(
            0.0, min(b.y1, frame.y1) - max(b.y0, frame.y0)
        )
        return out + 4 * (b.width * b.height - inside)  # outside the axes costs more

    offsets = [(dx, dy) for dx, dy in LABEL_OFFSETS if not near_only or abs(dy) <= 13]
    anns = []
    for x, y, text in items:
        ann = ax.annotate(
            text, (x, y), xytext=(0, 0), textcoords="offset points", fontsize=fontsize
        )
        best = None
        for dx, dy in offsets:
            ann.set_position((dx, dy))
            ann.set_horizontalalignment("left" if dx > 0 else "right")
            c = cost(ann.get_window_extent(renderer))
            if best is None or c < best[0]:
                best = (c, dx, dy)
            if c == 0:
                break
        c, dx, dy = best
        ann.remove()
        if near_only and c > 0:
            continue
        far = abs(dy) > 13
        ann = ax.annotate(
            text,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=fontsize,
            ha="left" if dx > 0 else "right",
            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "gray", "shrinkA": 0, "shrinkB": 3}
            if far
            else None,
        )
        ann.update_positions(renderer)
        b = Text.get_window_extent(ann, renderer)  # the label, not its leader line
        taken.append((b.x0, b.y0, b.x1, b.y1))
        anns.append(ann)
    return anns


def plot_frontier(runs: list[Run], path: Path) -> None:
    """Reward (RM and gold) against KL to the base across runs, with the Pareto frontier: the
    held-out numbers (``heldout/kl``), and the end-of-training batch means (``train/kl``,
    clamped at 0: its k1 estimate can be negative); one colour per run, as in curves.png."""
    import matplotlib.pyplot as plt

    style = _style(runs)
    panels = [
        ("held-out eval", "heldout/kl", "heldout/reward", "heldout/gold_reward"),
        ("end of training: last training batches", "train/kl", "train/reward", "train/gold_reward"),
    ]
    ylabels = {
        "heldout/reward": "heldout/reward (RM score, held-out prompts)",
        "heldout/gold_reward": "heldout/gold_reward (gold score, held-out prompts)",
        "train/reward": "train/reward (RM score, training batches)",
        "train/gold_reward": "train/gold_reward (gold score, training batches)",
    }
    # more runs than fit as names: each point labelled with its run's number (its row in the
    # table, "runs (in table order)"), the legend pairs numbers with names
    plotted = [
        r for r in runs if any(_xy([r], [x], [y]) for _, x, *ys in panels for y in ys)
    ]  # the runs with a point: the legend's
    numbered = len(plotted) > NAMED_POINTS
    point_label = {id(r): str(i) if numbered else r.name for i, r in enumerate(runs)}
    height = 8.5
    # drawn at the dpi it is saved at: the labels are placed by their size in pixels
    fig, axes = plt.subplots(2, 2, figsize=(11, height), squeeze=False, dpi=DPI)
    labels = []  # (ax, items) placed once the layout is final
    any_front = any_base = False
    for row, (title, xkey, rkey, gkey) in enumerate(panels):
        for col, ykey in enumerate((rkey, gkey)):
            ax = axes[row][col]
            pts = _xy(runs, [xkey], [ykey])
            below = sum(x < 0 for _, x, _ in pts)
            pts = [(r, max(0.0, x), y) for r, x, y in pts]
            for r, x, y in pts:
                ax.scatter(
                    [x],
                    [y],
                    color=style[id(r)]["color"],
                    s=40,
                    marker="o" if r.status == "ok" else "x",
                    clip_on=False,
                    zorder=3,
                )
            items = [(x, y, point_label[id(r)]) for r, x, y in pts]
            xy = [(x, y) for _, x, y in pts]
            base = _base_point(runs, ykey) if row == 0 else None
            if base is not None:  # the policy before RL: the frontier's start
                base = (max(0.0, base[0]), base[1])
                ax.scatter([base[0]], [base[1]], color="black", marker="*", s=90, zorder=3)
                items.append((*base, "base"))
                xy.append(base)
                any_base = True
            front = pareto_front(xy)
            if len(front) > 1:
                ax.plot(*zip(*front, strict=True), color="gray", lw=1, ls=":", zorder=2)
                any_front = True
            if not pts:
                ax.text(
                    0.5,
                    0.5,
                    "no runs with both numbers",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
                ax.set(xlim=(0, 1), ylim=(0, 1))
            if xkey == "train/kl":
                xlabel = "KL to the base: train/kl (batch estimate, clamped at 0)"
            else:
                xlabel = f"KL to the base: {xkey}"
                if below:
                    xlabel += f" (clamped at 0: {below} below)"
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabels[ykey], fontsize=8)
            ax.set_title(f"{ykey} vs KL ({title})", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.margins(x=0.15, y=0.12)
            if pts:
                ax.autoscale_view()
                ax.set_xlim(left=0)
            labels.append((ax, items))
    handles = [
        plt.Line2D(
            [], [], color=style[id(r)]["color"], marker="o" if r.status == "ok" else "x", ls=""
        )
        for r in plotted
    ]
    names = [f"{point_label[id(r)]}: {_label(r)}" if numbered else _label(r) for r in plotted]
    if any_base:
        handles.append(plt.Line2D([], [], color="black", marker="*", ms=9, ls=""))
        names.append("base (the policy before RL)")
    if any_front:
        handles.append(plt.Line2D([], [], color="gray", lw=1, ls=":"))
        names.append("Pareto frontier")
    top = _legend(fig, handles, names, height)
    fig.tight_layout(rect=(0, 0, 1, top))
    for ax, items in labels:
        place_labels(ax, items)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


HARMFUL_COMPLY = "heldout/harmful_comply"
BENIGN_CORRECT = "heldout/benign_correct"


def balance_points(runs: list[Run]) -> list[tuple[Run, float, float]]:
    """(run, harmlessness, helpfulness) of each run with both numbers: harmlessness = 1 -
    ``heldout/harmful_comply`` (the share of harmful prompts not complied with), helpfulness =
    ``heldout/benign_correct``."""
    return [(r, 1 - c, b) for r, c, b in _xy(runs, [HARMFUL_COMPLY], [BENIGN_CORRECT])]


def _number(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def colour_key(runs: list[Run]) -> str | None:
    """The override that colours balance.png: the first varying one other than ``seed`` and
    ``experiment`` whose values are all numbers (``algo.rewards.harmless.weight=0.2,0.5,0.8``);
    None: coloured by algorithm."""
    for k in varying_keys(runs):
        values = {r.overrides[k] for r in runs if k in r.overrides}
        if k not in (SEED, "experiment") and len(values) > 1:
            if all(_number(v) is not None for v in values):
                return k
    return None


def _point_names(groups: list[list[Run]], keys: list[str]) -> list[str]:
    """Each sweep point's name on balance.png: ``base`` for the base model, else its algorithm,
    or its override values where two points share an algorithm."""
    names = ["base" if is_base(g[0]) else algo_name(g[0]) for g in groups]
    others = [n for n in names if n != "base"]
    if None in others or len(set(others)) < len(others):
        values = [" ".join(str(g[0].overrides.get(k, "")) for k in keys) for g in groups]
        names = [n if n == "base" else v for n, v in zip(names, values, strict=True)]
    return [n or "run" for n in names]


def _base_start(runs: list[Run]) -> tuple[float, float] | None:
    """(harmlessness, helpfulness) of the base before RL: the mean over the ok RL runs'
    ``rl/harmful_comply_start``, ``rl/benign_correct_start``."""
    xs, ys = [], []
    for r in runs:
        c = r.summary.get("rl/harmful_comply_start")
        b = r.summary.get("rl/benign_correct_start")
        if r.status == "ok" and isinstance(c, int | float) and isinstance(b, int | float):
            if math.isfinite(c) and math.isfinite(b):
                xs.append(1 - c)
                ys.append(b)
    return (mean_std(xs)[0], mean_std(ys)[0]) if xs else None


# balance.png: a marker shape per algorithm next to its colour (a crowd of points still reads)
BALANCE_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "p", "h", "<", ">")


def plot_balance(runs: list[Run], path: Path) -> bool:
    """The balance frontier: harmlessness (1 - ``heldout/harmful_comply``) against helpfulness
    (``heldout/benign_correct``), both in [0, 1]. A small marker per run (every seed), the
    sweep point's mean with seed-std error bars where it has several ok seeds (its one run, as
    large, where one), its name beside it where that fits; coloured by algorithm (a marker
    shape each too), or by the value of a swept numeric override (:func:`colour_key`) with the
    legend naming the key; the base model a black star (its runs; else the RL runs'
    before-training numbers, ``base (before RL)``); a dotted line through the points no other
    point beats on both. The legends sit right of the axes, over no point. Draws nothing and
    returns False when no run has both numbers."""
    import matplotlib
    import matplotlib.pyplot as plt

    pts = balance_points(runs)
    if not pts:
        return False
    xy = {id(r): (x, y) for r, x, y in pts}
    plotted = [r for r, _, _ in pts]
    keys, groups = seed_groups(sweep_order(plotted), None)
    names = _point_names(groups, keys)
    key = colour_key(plotted)
    cats = list(dict.fromkeys(n for n in names if n != "base"))
    if key is not None:
        values = sorted({v for r in plotted if (v := _number(r.overrides.get(key))) is not None})
        cmap = matplotlib.colormaps["viridis"]
        span = (values[-1] - values[0]) or 1.0
    else:
        cmap = matplotlib.colormaps["tab10" if len(cats) <= 10 else "tab20"]

    def style(group: list[Run], name: str) -> tuple:
        """(colour, marker, legend entry: (sort key, text) or None) of a sweep point."""
        if name == "base":
            return "black", "*", None
        if key is None:
            i = cats.index(name)
            return cmap(i % cmap.N), BALANCE_MARKERS[i % len(BALANCE_MARKERS)], (i, name)
        v = _number(group[0].overrides.get(key))
        if v is None:
            return "gray", "o", None
        return cmap(0.85 * (v - values[0]) / span), "o", (v, group[0].overrides[key])

    fig, ax = plt.subplots(figsize=(9.2, 6.6), dpi=DPI)
    items, front_pts, entries = [], [], {}
    any_mean = any_run = False
    for group, name in zip(groups, names, strict=True):
        base = name == "base"
        colour, marker, entry = style(group, name)
        if entry is not None:
            entries[entry] = (colour, marker)
        ok = [xy[id(r)] for r in group if r.status == "ok"]
        for r in group:
            if len(ok) > 1 or r.status != "ok":  # one ok run alone is drawn as its point
                ax.scatter(
                    *xy[id(r)],
                    color=colour,
                    s=55 if base else 18,
                    marker=marker if r.status == "ok" else "x",
                    alpha=0.4,
                    lw=0 if r.status == "ok" else 1,
                    clip_on=False,
                    zorder=3,
                )
                any_run = True
        if not ok:
            continue
        (mx, sx), (my, sy) = mean_std([x for x, _ in ok]), mean_std([y for _, y in ok])
        bars = ax.errorbar(
            [mx],
            [my],
            xerr=None if sx is None else [sx],
            yerr=None if sy is None else [sy],
            fmt=marker,
            ms=16 if base else 9,
            color=colour,
            mec="white" if base else "black",
            mew=0.8,
            ecolor=colour,
            elinewidth=1.1,
            capsize=3,
            alpha=0.9,
            zorder=5 if base else 4,
        )
        for artist in bars.get_children():
            artist.set_clip_on(False)  # a point at 0 or 1 is drawn whole
        any_mean |= len(ok) > 1
        items.append((mx, my, name))
        front_pts.append((mx, my))
    start = None if any(n == "base" for n in names) else _base_start(plotted)
    if start is not None:
        ax.scatter(*start, color="black", marker="*", s=190, zorder=5, clip_on=False)
        items.append((*start, "base (before RL)"))
        front_pts.append(start)
    front = [(-h, y) for h, y in pareto_front([(-x, y) for x, y in front_pts])]
    if len(front) > 1:
        ax.plot(*zip(*front, strict=True), color="gray", lw=1, ls=":", zorder=2)
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
    ax.set_xlabel(
        "harmlessness: 1 − compliance on harmful prompts (1 − heldout/harmful_comply)",
        fontsize=9,
    )
    ax.set_ylabel(
        "helpfulness: correct answers on benign prompts (heldout/benign_correct)", fontsize=9
    )
    ax.set_title("The balance frontier on the held-out prompts (up and right is better)")
    ax.title.set_fontsize(10)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)

    order = sorted(entries)
    legend = ax.legend(
        [
            plt.Line2D([], [], color=entries[e][0], marker=entries[e][1], mec="black", ls="")
            for e in order
        ],
        [text for _, text in order],
        title=key or "algorithm",
        loc="upper left",
        bbox_to_anchor=(1.03, 1.0),
        fontsize=8.5,
        title_fontsize=8.5,
        alignment="left",
        frameon=False,
    )
    ax.add_artist(legend)
    marks, texts = [], []
    if any_run:
        marks.append(plt.Line2D([], [], color="gray", marker="o", ms=4, alpha=0.4, ls=""))
        texts.append("one run (a seed)")
    if any_mean:
        marks.append(plt.Line2D([], [], color="gray", marker="o", mec="black", ms=7, lw=1.1))
        texts.append("mean ± std over seeds")
    if "base" in names or start is not None:
        marks.append(plt.Line2D([], [], color="black", marker="*", ms=11, ls=""))
        texts.append("base model" if start is None else "base, before RL")
    if len(front) > 1:
        marks.append(plt.Line2D([], [], color="gray", lw=1, ls=":"))
        texts.append("frontier (not beaten on both)")
    if marks:
        ax.legend(
            marks, texts, loc="lower left", bbox_to_anchor=(1.03, 0.0), fontsize=8.5, frameon=False
        )
    fig.tight_layout()
    # the base's label first: it keeps its place; a point's name that fits nowhere next to it
    # is left out (the legend names it)
    items.sort(key=lambda item: not item[2].startswith("base"))
    place_labels(ax, items, fontsize=8.5, near_only=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def plot_length(runs: list[Run], path: Path) -> None:
    """Response length over training per run (held-out eval length as a marker at the end)."""
    import matplotlib.pyplot as plt

    style = _style(runs)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=DPI)
    for r in runs:
        pts = r.scalars.get("rl/response_length_mean")
        if pts:
            ax.plot(*zip(*pts, strict=True), lw=1.2, label=_label(r), **style[id(r)])
        ev = r.scalars.get("heldout/response_length")
        if ev:
            ax.scatter(
                [ev[-1][0]],
                [ev[-1][1]],
                color=style[id(r)]["color"],
                marker="*",
                s=80,
                zorder=3,
                **({} if pts else {"label": _label(r)}),
            )
    ax.set_xlabel("RL step")
    ax.set_ylabel("response length (tokens)")
    ax.set_title("Response length over training (* = held-out eval at the end)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(
            0.5, 0.5, "no response lengths logged", ha="center", va="center", transform=ax.transAxes
        )
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
