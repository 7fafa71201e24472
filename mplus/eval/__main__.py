"""Entry point: ``python -m mplus.eval models=[<base>,<run dir>/policy] [eval=<suite>|all] ...``.

Compose (Hydra, ``conf/eval.yaml``, found by :mod:`mplus.config_paths`) -> validate (typed
schema) -> check every input -> evaluate.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from mplus.config import ConfigError
from mplus.config_paths import config_dir
from mplus.eval.config import register_eval_configs, validate_eval

register_eval_configs()
log = logging.getLogger("mplus.eval")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        typed = validate_eval(cfg)
    except ConfigError as e:
        log.error("Invalid config: %s", e)
        sys.exit(2)
    from mplus.eval.common import EvalError
    from mplus.eval.runner import run_eval
    from mplus.hardware import HardwareError

    try:
        run_eval(typed)
    except (EvalError, HardwareError, ConfigError) as e:
        # Known bad input (model path, data file, judge): one clear line, not a stack trace.
        log.error("%s: %s", type(e).__name__, e)
        sys.exit(2)


if __name__ == "__main__":
    main()
