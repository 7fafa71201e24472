"""A run: resolve what every stage shares (base model, tokenizer, data) once, then the stage
``algo.name`` names, from the registry in :mod:`mplus.stages`.

``train.py`` composes and validates the config, then calls :func:`run`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from mplus import distributed as D
from mplus import rundir, stages, tables
from mplus.config import TrainConfig
from mplus.hardware import check_hardware, model_dtypes, resolve_attn_implementation
from mplus.rundir import Summary
from mplus.stages.common import multi_fsdp
from mplus.stages.context import RunContext

log = logging.getLogger(__name__)


def check_parallel_plan(cfg: TrainConfig) -> None:
    """Refuse, at start, a combination the stage's distributed path does not support."""
    stage = stages.get(cfg.algo.name)
    if stage.check is not None:
        stage.check(cfg)


def run(cfg: TrainConfig) -> dict:
    """Run every stage that ``cfg.algo`` needs in ``cfg.run_dir``; return the summary.

    The console for the length of the run is :func:`mplus.console.run_console`'s (each library
    message once, no warning nobody can act on); it ends with :func:`_print_summary`."""
    from mplus.console import run_console

    with run_console(cfg.progress_bar):
        return _run(cfg)


def _run(cfg: TrainConfig) -> dict:
    import lightning as L

    from mplus.data.build import build_preference_data
    from mplus.models.builders import resolve_base
    from mplus.models.tokenizer import load_tokenizer

    t0 = time.time()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary(run_dir / rundir.SUMMARY)
    if cfg.ckpt_path and summary.path.exists():  # resuming: keep what finished stages recorded
        summary.update(json.loads(summary.path.read_text()))
    check_hardware(cfg.hardware)
    stage = stages.get(cfg.algo.name)
    check_parallel_plan(cfg)
    attn = resolve_attn_implementation(cfg.hardware)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    base_path = resolve_base(
        cfg.model, cfg.cache_dir, progress_bar=cfg.progress_bar, log_every=cfg.logger.log_every
    )
    summary["time/base_s"] = round(time.time() - t0, 1)
    tok = load_tokenizer(
        base_path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
    )
    data = build_preference_data(cfg.data, tok)
    summary.update(data.stats)
    train_dtype, frozen_dtype = model_dtypes(cfg.model, cfg.hardware)
    rc = RunContext(
        cfg=cfg,
        base_path=base_path,
        tokenizer=tok,
        data=data,
        attn=attn,
        train_dtype=train_dtype,
        frozen_dtype=frozen_dtype,
        empty=D.builds_empty(cfg.hardware) if multi_fsdp(cfg.hardware) else None,
    )
    stage.run(rc, summary)
    if cfg.evaluation.suites:
        from mplus.eval.runner import evaluate_training_run  # python -m mplus.eval's suites

        summary.update(evaluate_training_run(cfg, base_path))
    summary["time/total_s"] = round(time.time() - t0, 1)
    summary.save()
    if D.is_rank_zero():
        from mplus.tblog import log_hparams

        log_hparams(run_dir, summary, cfg.logger.subdir)  # HParams tab: overrides -> final metrics
        _print_summary(summary, run_dir, cfg, base_path)
    return dict(summary)


# the summary table's order: results first, then what describes the run (data counts, skipped
# rows, times); the first matching prefix decides
_TABLE_GROUPS = (("data/skipped/", 2), ("data/", 1), ("time/", 3))


def _table_order(key: str) -> tuple[int, str]:
    return (next((rank for g, rank in _TABLE_GROUPS if key.startswith(g)), 0), key)


def _print_summary(summary: Summary, run_dir: Path, cfg: TrainConfig, base_path: str) -> None:
    """The closing summary: the headline (:func:`mplus.console.headline`: the held-out result
    before -> after, the reward model, the base, the run dir), then the results table (a
    ``heldout/<m>`` that an RL run also records as ``rl/<m>_end`` is shown once, as the latter),
    the data counts and times on one line each, then the paths written. ``summary.json`` has
    every key."""
    from mplus.console import headline

    def shown(k: str) -> bool:
        if k.startswith(("data/", "time/")):
            return False
        twin = "rl/" + k.removeprefix("heldout/") + "_end"
        return not (k.startswith("heldout/") and summary.get(twin) == summary[k])

    rows = [[k, summary[k]] for k in sorted(summary, key=_table_order) if shown(k)]
    table = tables.format_table(["summary", "value"], rows, digits=4, style="g", left=1)

    def one_line(group: str, unit: str = "") -> list[str]:
        """``group: name value · ...`` for the keys of ``group`` (``data/``, ``time/``)."""
        cells = [
            f"{k.removeprefix(group).removesuffix('_s')} {tables.cell(summary[k], 4, 'g')}{unit}"
            for k in sorted(summary)
            if k.startswith(group)
        ]
        return [f"{group.rstrip('/')}: {' · '.join(cells)}"] if cells else []

    records = (rundir.SUMMARY, rundir.TB, *rundir.EXPORTS, rundir.CHECKPOINTS)
    wrote = [f"wrote: {run_dir / p}" for p in records if (run_dir / p).exists()]
    head = headline(summary, cfg, base_path, run_dir)
    extra = [*one_line("data/"), *one_line("time/", " s")]
    print("\n".join(["", *head, "", table, *extra, *wrote]), flush=True)
