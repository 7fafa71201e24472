"""Entry point: ``python -m mplus.train [group=option ...] [key=value ...]``.

Compose (Hydra) -> validate (typed schema, before any model loads) -> run the stages.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mplus.config import ConfigError, register_configs, validate

register_configs()
log = logging.getLogger("mplus")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        typed = validate(cfg)
    except ConfigError as e:
        _fail(f"Invalid config: {e}", e)
    from mplus.hardware import HardwareError
    from mplus.pipeline import run

    try:
        summary = run(typed)
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


if __name__ == "__main__":
    main()
