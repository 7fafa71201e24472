"""Entry point: ``python -m mplus.train [group=option ...] [key=value ...]``, and from Python
(a notebook) ``mplus.train.run(overrides=[...])``, which returns the run's summary.

Compose (Hydra) -> validate (typed schema, before any model loads) -> run the stages.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mplus.config import ConfigError, register_configs, validate
from mplus.config_paths import config_dir

register_configs()
log = logging.getLogger("mplus")
VERSION_BASE = "1.3"


@hydra.main(version_base=VERSION_BASE, config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        typed = validate(cfg)
    except ConfigError as e:
        _fail(f"Invalid config: {e}", e)
    from mplus.hardware import HardwareError
    from mplus.pipeline import run as run_pipeline

    try:
        summary = run_pipeline(typed)
    except (HardwareError, FileNotFoundError, ValueError) as e:
        # Known bad-input errors: one clear line, not a stack trace.
        _fail(f"{type(e).__name__}: {e}", e)
    # The return value is what an Optuna sweeper optimises: the summary key named by `objective`.
    value = summary.get(typed.objective)
    if value is None and HydraConfig.get().mode == RunMode.MULTIRUN:
        log.warning("objective=%s is not in summary.json (keys: %s)", typed.objective,
                    ", ".join(sorted(summary)))
    return value


def _fail(message: str, error: Exception):
    """One line and exit 2; in a multirun, fail this point only: Hydra records the exception,
    runs the remaining points and reports the failure at the end (``mplus.analyze`` lists the
    point as failed)."""
    log.error(message)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise error
    sys.exit(2)


def _task(cfg: DictConfig) -> dict:
    """:func:`run`'s job: what :func:`main` does, raising instead of exiting."""
    from mplus.pipeline import run as run_pipeline

    return run_pipeline(validate(cfg))


def run(overrides: Sequence[str] = ()) -> dict:
    """Run ``python -m mplus.train *overrides`` in this process and return its summary dict (what
    ``summary.json`` holds).

    The same composition, run dir (``hydra.run.dir``, default ``outputs/<date>/<time>_<algo>``
    under the current directory), ``.hydra/`` files and ``train.log`` as the command line; the
    root logger is Hydra's during the run (console + ``train.log``) and is given back as it was
    afterwards. Errors are raised, not turned into an exit: a bad override or unknown option
    (Hydra's exceptions), :class:`mplus.config.ConfigError` for an out-of-range value, the
    pipeline's own errors. Multirun (``-m``) and hardware options that start more than one
    process per machine (``hardware=2xcpu``) need the command line.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.version import setbase

    if isinstance(overrides, str):
        raise TypeError("overrides is a list of strings, e.g. ['algo=rm', 'algo.max_steps=5']")
    setbase(VERSION_BASE)
    # What @hydra.main builds, without taking over Hydra's global state (a notebook may have
    # initialised it for its own compose calls).
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(config_dir()))
    app = Hydra(task_name="train", config_loader=loader)  # hydra.job.name: train (train.log)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        return app.run(config_name="train", task_function=_task, overrides=list(overrides)).return_value
    finally:
        for h in root.handlers:
            if h not in handlers:
                h.close()
        root.handlers[:] = handlers
        root.setLevel(level)


if __name__ == "__main__":
    main()
