"""PNG plots of the runs (matplotlib, imported when a plot is drawn)."""

from __future__ import annotations

import math
from pathlib import Path

from mplus.analyze.runs import Run
from mplus.analyze.table import metric_value


def _style(runs: list[Run]):
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(runs) <= 10 else "tab20"]
    return {
        id(r): {"color": cmap(i % cmap.N), "ls": "-" if r.status == "ok" else "--"}
        for i, r in enumerate(runs)
    }


def _label(r: Run) -> str:
    return r.name if r.status == "ok" else f"{r.name} ({r.status})"


def plot_curves(runs: list[Run], path: Path) -> None:
    """One panel per logged metric (curves with 2+ points), every run on the same axes."""
    import matplotlib.pyplot as plt

    tags = sorted({t for r in runs for t, pts in r.scalars.items() if len(pts) > 1})
    style = _style(runs)
    ncols = min(4, max(1, len(tags)))
    nrows = max(1, math.ceil(len(tags) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows + 0.6), squeeze=False)
    for ax, tag in zip(axes.flat, tags, strict=False):
        for r in runs:
            pts = r.scalars.get(tag)
            if pts:
                ax.plot(*zip(*pts, strict=True), lw=1.2, **style[id(r)])
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(tags) :]:
        ax.axis("off")
    if not tags:
        axes.flat[0].text(0.5, 0.5, "no curves logged yet", ha="center", va="center")
    handles = [plt.Line2D([], [], **style[id(r)]) for r in runs]
    fig.legend(
        handles,
        [_label(r) for r in runs],
        loc="upper center",
        ncol=min(len(runs), 4),
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout(
        rect=(0, 0, 1, 1 - 0.5 / (3.0 * nrows + 0.6) - 0.02 * math.ceil(len(runs) / 4))
    )
    fig.savefig(path, dpi=90)
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
        if x is not None and y is not None:
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


def plot_frontier(runs: list[Run], path: Path) -> None:
    """Reward (RM and gold) against KL to the base across runs, with the Pareto frontier."""
    import matplotlib.pyplot as plt

    style = _style(runs)
    panels = [
        ("held-out eval", ["heldout/kl"], "heldout/reward", "heldout/gold_reward"),
        ("end of training", ["kl"], "reward", "gold_reward"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5), squeeze=False)
    for row, (title, xs, rkey, gkey) in enumerate(panels):
        for col, ykey in enumerate((rkey, gkey)):
            ax = axes[row][col]
            pts = _xy(runs, xs, [ykey])
            for r, x, y in pts:
                ax.scatter(
                    [x],
                    [y],
                    color=style[id(r)]["color"],
                    s=40,
                    marker="o" if r.status == "ok" else "x",
                )
                ax.annotate(r.name, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
            xy = [(x, y) for _, x, y in pts]
            base = _base_point(runs, ykey) if row == 0 else None
            if base is not None:  # the policy before PPO: the frontier's start
                ax.scatter([base[0]], [base[1]], color="black", marker="*", s=90, zorder=3)
                ax.annotate(
                    "base (before PPO)",
                    base,
                    fontsize=7,
                    xytext=(4, -10),
                    textcoords="offset points",
                )
                xy.append(base)
            front = pareto_front(xy)
            if len(front) > 1:
                ax.plot(*zip(*front, strict=True), color="gray", lw=1, ls=":", label="frontier")
                ax.legend(fontsize=7)
            if not pts:
                ax.text(
                    0.5,
                    0.5,
                    "no runs with both numbers",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                )
            ax.set_xlabel(f"KL to the base ({xs[0]})", fontsize=8)
            ax.set_ylabel(ykey, fontsize=8)
            ax.set_title(f"{ykey} vs KL ({title})", fontsize=9)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_length(runs: list[Run], path: Path) -> None:
    """Response length over training per run (held-out eval length as a marker at the end)."""
    import matplotlib.pyplot as plt

    style = _style(runs)
    fig, ax = plt.subplots(figsize=(8, 5))
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
    ax.set_xlabel("PPO step")
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
    fig.savefig(path, dpi=90)
    plt.close(fig)
