"""TensorBoard extras: a run's overrides in the HParams tab, linked to its final metrics.

Written into the run's own ``tb/`` (not a timestamped subdirectory, as
``SummaryWriter.add_hparams`` would; the stages' curves are the runs ``tb/<stage>`` below it), so ``tensorboard --logdir <multirun dir>`` shows one run per
sweep point, named by its overrides (the sweep subdir is ``${hydra.job.override_dirname}``), with
its hyperparameters and final numbers side by side in the HParams tab.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)

# Final metrics linked to the hyperparameters: summary.json keys of these groups.
METRIC_GROUPS = ("heldout/", "eval/", "rl/", "rm/", "dpo/", "sft/")
METRIC_PREFIX = "final/"  # scalar tags the HParams tab reads: final/<summary key>


def _hparam_value(text: str):
    """An override's value as the HParams tab wants it: a number, a bool or a string."""
    import yaml

    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, bool | int | float) and not (isinstance(v, float) and math.isnan(v)):
        return v
    return text


def run_hparams(run_dir: Path) -> dict:
    """The run's algorithm, experiment and overrides (``.hydra/``) as hyperparameters."""
    import yaml

    from mplus.rundir import override_dict, run_overrides

    hp: dict = {}
    hydra_file = Path(run_dir) / ".hydra" / "hydra.yaml"
    if hydra_file.exists():
        choices = (
            (yaml.safe_load(hydra_file.read_text()) or {})
            .get("hydra", {})
            .get("runtime", {})
            .get("choices", {})
        )
        for group in ("algo", "experiment", "model", "data", "hardware"):
            if choices.get(group) is not None:
                hp[group] = str(choices[group])
    hp.update({k: _hparam_value(v) for k, v in override_dict(run_overrides(run_dir)).items()})
    return hp


def log_hparams(run_dir: str | Path, summary: dict, tb_subdir: str = "tb") -> Path | None:
    """Write the run's hyperparameters and final metrics into ``<run_dir>/<tb_subdir>``.

    Metrics are the numeric ``heldout/``, ``eval/`` (suites), ``rl/``, ``rm/``, ``dpo/``, ``sft/`` keys of ``summary``,
    written as scalars ``final/<key>`` (at the run's last step) that the HParams tab links to.
    Returns the tb dir, or None when there was nothing to write.
    """
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    run_dir = Path(run_dir)
    metrics = {
        f"{METRIC_PREFIX}{k}": float(v)
        for k, v in sorted(summary.items())
        if k.startswith(METRIC_GROUPS)
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
    }
    hp = run_hparams(run_dir)
    if not metrics and not hp:
        return None
    step = int(
        max(
            (v for k, v in summary.items() if k.endswith("/steps") and isinstance(v, int | float)),
            default=0,
        )
    )
    tb = run_dir / tb_subdir
    writer = SummaryWriter(log_dir=str(tb))
    try:
        for summ in hparams(hp, metrics):
            writer.file_writer.add_summary(summ)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()
    return tb
