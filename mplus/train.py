"""Entry point: ``python -m mplus.train [group=option ...] [key=value ...]``.

Compose (Hydra) -> validate (typed schema, before any model loads) -> run the stages.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from mplus.config import ConfigError, register_configs, validate

register_configs()
log = logging.getLogger("mplus")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        typed = validate(cfg)
    except ConfigError as e:
        log.error("Invalid config: %s", e)
        sys.exit(2)
    from mplus.hardware import HardwareError
    from mplus.pipeline import run

    try:
        summary = run(typed)
    except (HardwareError, FileNotFoundError, ValueError) as e:
        # Known bad-input errors: one clear line, not a stack trace.
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(2)
    # The return value is what an Optuna sweeper maximises.
    return summary.get("ppo/gold_reward_end", summary.get("rm/val_accuracy"))


if __name__ == "__main__":
    main()
