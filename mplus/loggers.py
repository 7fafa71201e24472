"""The Lightning loggers of a stage: TensorBoard always, plus the ``logger`` option's one.

TensorBoard (``<run_dir>/<logger.subdir>/<stage>``) is written whatever ``logger`` says:
``mplus.analyze``, the HParams record (:mod:`mplus.tblog`) and the resume purge
(:class:`mplus.modules.signals`) read it. ``logger=csv|wandb|mlflow`` adds Lightning's
CSVLogger (``<run_dir>/csv/<stage>/metrics.csv``), WandbLogger (``<run_dir>/wandb``; offline
with ``WANDB_MODE=offline``) or MLFlowLogger (a local file store, ``<run_dir>/mlruns``), which
get the same metric names. The RL text samples (``rl/samples``) stay TensorBoard-only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mplus.config_common import ConfigError

# logger option -> (the package it needs, its pip extra); tensorboard is a core dependency
EXTRA_LOGGERS = {"csv": None, "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
LOGGERS = ("tensorboard", *EXTRA_LOGGERS)


def check_logger_package(name: str) -> None:
    """Fail at start, one line, when ``logger=<name>`` needs a package that is not installed."""
    need = EXTRA_LOGGERS.get(name)
    if need and importlib.util.find_spec(need[0]) is None:
        raise ConfigError(
            f"logger={name} needs the {need[0]} package: pip install -e '.[{need[1]}]'"
        )


def make_loggers(cfg, stage: str) -> list:
    """TensorBoard's ``tb/<stage>`` run first (``trainer.logger``), then the chosen logger."""
    from lightning.pytorch.loggers import TensorBoardLogger

    run_dir = Path(cfg.run_dir)
    lc = cfg.logger
    # one TensorBoard run per stage (tb/rm, tb/ppo, ...): a resumed stage's purge_step drops
    # only what its own killed process logged, never an earlier stage's curves
    loggers = [
        TensorBoardLogger(
            save_dir=str(run_dir), name=lc.subdir, version=stage, default_hp_metric=False
        )
    ]
    if lc.name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=stage))
    elif lc.name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(
            WandbLogger(
                project=lc.project,
                name=f"{run_dir.name}/{stage}",
                group=run_dir.name,
                save_dir=str(run_dir),
                reinit="finish_previous",  # one wandb run per stage, in one process
            )
        )
    elif lc.name == "mlflow":
        import os

        from lightning.pytorch.loggers import MLFlowLogger

        # a local file store (MLflow >= 3.x refuses it unless allowed: no server, no database)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        loggers.append(
            MLFlowLogger(
                experiment_name=lc.project,
                run_name=f"{run_dir.name}/{stage}",
                tracking_uri=(run_dir / "mlruns").resolve().as_uri(),
            )
        )
    return loggers


def log_metrics_all(loggers, metrics: dict, step: int) -> None:
    """``metrics`` to every logger of a trainer (the RL stage's and the held-out evaluation's
    own calls; what Lightning logs goes to all of them already), written out now."""
    for lg in loggers or ():
        lg.log_metrics(metrics, step=step)
        if type(lg).__name__ == "CSVLogger":
            lg.save()  # the CSV is otherwise written every 100 steps and at the fit's end
