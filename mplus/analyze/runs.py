"""Finding and loading runs: names, summaries, events, status, final metrics, sweep points."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from mplus import rundir
from mplus.analyze.events import read_events
from mplus.rundir import override_dict, override_key, run_overrides

# The training-batch columns: (column, TensorBoard tag); a column is the mean of the tag's last
# ``--last`` logged values (the rollout batches at the end of RL), not a held-out number.
TRAIN_COLUMNS = (
    ("train/reward", "rl/reward_mean"),
    ("train/gold_reward", "rl/gold_reward_mean"),
    ("train/kl", "rl/kl"),
    ("train/response_length", "rl/response_length_mean"),
    ("train/stop_rate", "rl/stop_rate"),
)
# The reward model's validation accuracy: the run's own RM, else the one it was given.
RM_ACCURACY = "rm/val_accuracy"
# The held-out evaluation every run ends with (summary.json ``heldout/*``).
EVAL_COLUMNS = (
    "heldout/reward",
    "heldout/gold_reward",
    "heldout/kl",
    "heldout/response_length",
    "heldout/stop_rate",
    # the probes (mplus.eval.heldout): knowledge (synthetic task only), the corpus and its splits
    "heldout/knowledge_acc",
    "heldout/knowledge_nll",
    "heldout/corpus_nll",
    "heldout/corpus_nll_good",
    "heldout/corpus_nll_bad",
    "heldout/corpus_nll_good_response",
    "heldout/corpus_nll_bad_response",
    # what the samples do (synthetic task only: mplus.data.synthetic.behaviour_rates)
    "heldout/harmful_refusal",
    "heldout/harmful_redirect",
    "heldout/harmful_comply",
    "heldout/benign_correct",
    "heldout/benign_overrefusal",
)
# Metrics renamed since: old name -> current name. An old run's value is read under the current
# name as well (the transcript NLL was ``probe_nll`` before the knowledge probe split it off).
RENAMED_METRICS = {
    "heldout/probe_nll": "heldout/corpus_nll",
    "eval/probe_nll": "heldout/corpus_nll",
}


# ---------------------------------------------------------------- overrides and run names


def run_names(run_dirs: list[Path]) -> list[str]:
    """Name each run by its overrides, less those that every listed run shares."""
    overrides = [run_overrides(d) for d in run_dirs]
    common = set.intersection(*map(set, overrides)) if overrides else set()
    return [
        " ".join(o for o in ov if o not in common) or Path(d).name
        for d, ov in zip(run_dirs, overrides, strict=True)
    ]


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run dirs under ``paths`` (a run dir itself, or a multirun dir holding job dirs).

    Raises:
        FileNotFoundError: a path that does not exist or holds no run.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such directory")
        if rundir.is_run(p):
            found.append(p)
            continue
        runs = sorted(
            {d.parent for d in p.rglob(rundir.HYDRA) if d.is_dir()}
            | {f.parent for f in p.rglob(rundir.SUMMARY)}
        )
        runs = [r for r in runs if not any(r != o and o in r.parents for o in runs)]
        if not runs:
            raise FileNotFoundError(f"{p}: no runs there (no .hydra/, summary.json or tb/)")
        found += runs
    return list(dict.fromkeys(found))


# ---------------------------------------------------------------- runs


@dataclass
class Run:
    dir: Path
    name: str
    status: str  # ok | failed | incomplete | pending
    overrides: dict[str, str]
    summary: dict
    scalars: dict[str, list[tuple[int, float]]]
    issues: list[str]
    final: dict[str, float | None] = field(default_factory=dict)


def load_run(run_dir: Path, name: str, last: int = 5) -> Run:
    """Read one run: its summary.json (if complete), events, overrides and status."""
    run_dir = Path(run_dir)
    issues: list[str] = []
    summary: dict = {}
    f = run_dir / rundir.SUMMARY
    if f.exists():
        try:
            summary = json.loads(f.read_text())
        except (json.JSONDecodeError, OSError):
            issues.append("summary.json unreadable (being written?)")
    else:
        issues.append("no summary.json")
    events = read_events(run_dir / _tb_subdir(run_dir))
    issues += events.issues
    done = "time/total_s" in summary
    if done:
        status = "ok"
    else:
        status = "failed" if _log_has_error(run_dir) else "incomplete"
        if summary:
            issues.append("summary.json without time/total_s (run stopped before its end)")
    run = Run(
        run_dir,
        name,
        status,
        override_dict(run_overrides(run_dir)),
        with_current_names(summary),
        with_current_names(events.scalars),
        issues,
    )
    run.final = final_metrics(run, last)
    return run


def with_current_names(metrics: dict) -> dict:
    """``metrics`` with each key of an older run also readable under its current name, so old
    and new runs compare in one table: ``ppo/<name>`` (before every RL algorithm logged under
    ``rl/``) as ``rl/<name>``, and each key of :data:`RENAMED_METRICS` as its new name (a key
    the run has under the new name keeps its own value)."""
    old = {f"rl/{k[4:]}": v for k, v in metrics.items() if k.startswith("ppo/")}
    old.update({RENAMED_METRICS[k]: v for k, v in metrics.items() if k in RENAMED_METRICS})
    return {**old, **metrics} if old else metrics


def _tb_subdir(run_dir: Path) -> str:
    f = run_dir / ".hydra" / "config.yaml"
    if f.exists():
        m = re.search(r"^logger:\n(?:  .*\n)*?  subdir: (\S+)", f.read_text(), re.M)
        if m:
            return m.group(1)
    return "tb"


BASE_ALGO = "none"  # algo=none: the base model itself through the held-out evaluation


def algo_name(run: Run) -> str | None:
    """The run's algorithm: ``algo.name`` of its resolved config (``.hydra/config.yaml``), else
    its ``algo`` override, else its ``experiment`` override (None without any of these)."""
    f = run.dir / ".hydra" / "config.yaml"
    if f.exists():
        m = re.search(r"^algo:\n(?:  .*\n)*?  name: (\S+)", f.read_text(errors="replace"), re.M)
        if m:
            return m.group(1).strip("'\"")
    return run.overrides.get("algo") or run.overrides.get("experiment")


def is_base(run: Run) -> bool:
    """Whether the run is the base model itself (``algo=none``; ``experiment=base*``)."""
    return algo_name(run) == BASE_ALGO or run.overrides.get("experiment", "").startswith("base")


def _log_has_error(run_dir: Path) -> bool:
    for log in run_dir.glob("*.log"):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        if "[ERROR]" in text or "Traceback (most recent call last)" in text:
            return True
    return False


def final_metrics(run: Run, last: int = 5) -> dict[str, float | None]:
    """Table values: ``train/*`` the last-``last``-point means of the RL curves, the RM accuracy
    and ``heldout/*`` from the summary (or the last event), and ``steps``."""
    out: dict[str, float | None] = {}
    for col, tag in TRAIN_COLUMNS:
        tail = [v for _, v in run.scalars.get(tag, [])[-last:]]
        out[col] = sum(tail) / len(tail) if tail else None
    acc = run.summary.get(RM_ACCURACY, _last(run.scalars.get(RM_ACCURACY)))
    out[RM_ACCURACY] = acc if acc is not None else _given_rm_accuracy(run.dir)
    for key in EVAL_COLUMNS:
        out[key] = run.summary.get(key, _last(run.scalars.get(key)))
    out["steps"] = _steps(run)
    return out


def _steps(run: Run) -> int | None:
    """Steps of the run's last stage (RL after its reward model), done or so far logged."""
    for stage in ("rl", "dpo", "sft", "rm"):
        if isinstance(run.summary.get(f"{stage}/steps"), int | float):
            return int(run.summary[f"{stage}/steps"])
        logged = [
            pts[-1][0] for tag, pts in run.scalars.items() if tag.startswith(f"{stage}/") and pts
        ]
        if logged:
            return max(logged)
    return None


def _given_rm_accuracy(run_dir: Path) -> float | None:
    """Validation accuracy of a reward model the run was given (its ``reward_stats.json``)."""
    import yaml

    f = run_dir / ".hydra" / "config.yaml"
    try:
        cfg = yaml.safe_load(f.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    for path in (
        (cfg.get("algo") or {}).get("reward_model"),
        (cfg.get("evaluation") or {}).get("reward_model"),
    ):
        if isinstance(path, str) and not path.startswith("${"):
            try:
                return float(
                    json.loads((Path(path) / "reward_stats.json").read_text())["val_accuracy"]
                )
            except (OSError, ValueError, KeyError):
                continue
    return None


def _last(points):
    return points[-1][1] if points else None


def collect_runs(paths: list[str | Path], last: int = 5) -> list[Run]:
    """Every run under ``paths``, plus the points of a sweep that have not started yet."""
    dirs = find_runs(paths)
    runs = [load_run(d, n, last) for d, n in zip(dirs, run_names(dirs), strict=True)]
    started = [set(run_overrides(d)) for d in dirs]
    pending = [pt for p in map(Path, paths) for pt in sweep_points(p) if set(pt[1]) not in started]
    if pending:
        all_ov = [*(run_overrides(d) for d in dirs), *(ov for _, ov in pending)]
        common = set.intersection(*map(set, all_ov))
        for root, ov in pending:
            name = " ".join(o for o in ov if o not in common)
            runs.append(
                Run(
                    root / "(not started)",
                    name,
                    "pending",
                    override_dict(ov),
                    {},
                    {},
                    ["not started yet"],
                )
            )
        # names are relative to every run, pending ones included
        for r, d in zip(runs, dirs, strict=False):
            r.name = " ".join(o for o in run_overrides(d) if o not in common) or d.name
    return runs


def sweep_points(sweep_dir: Path) -> list[tuple[Path, list[str]]]:
    """The points of a basic-sweeper multirun (from its ``multirun.yaml``), as job overrides.

    Empty for a directory without ``multirun.yaml`` or for other sweepers (Optuna picks its
    points as it goes).
    """
    f = Path(sweep_dir) / "multirun.yaml"
    if not f.exists():
        return []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        hydra = OmegaConf.load(f).hydra
        if not str(hydra.sweeper._target_).endswith("BasicSweeper"):
            return []
        params = [f"{k}={v}" for k, v in (hydra.sweeper.get("params") or {}).items()]
        parsed = OverridesParser.create().parse_overrides([*params, *hydra.overrides.task])
        (points,) = BasicSweeper.split_arguments(parsed, None)
    except Exception:  # noqa: BLE001  (a multirun.yaml being written, or from another version)
        return []
    dirname = hydra.job.config.get("override_dirname") or {}
    ignored = tuple(dirname.get("exclude_keys") or rundir.name_excluded_keys())
    keep = lambda o: not o.startswith("hydra.") and override_key(o) not in ignored  # noqa: E731
    return [(Path(sweep_dir), [o for o in pt if keep(o)]) for pt in points]
