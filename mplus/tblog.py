"""TensorBoard extras: a run's whole config (flattened: ``algo.kl.coef``) in the HParams tab, linked to its final metrics.

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
METRIC_GROUPS = (
    "heldout/",
    "eval/",
    "rl/",
    "rm/",
    "rm_",
    "dpo/",
    "sft/",
)  # rm_<name>/: algo.rewards
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


def flat_config(run_dir: Path) -> dict:
    """The run's resolved config (``.hydra/config.yaml``) flattened to ``algo.kl.coef``-style keys,
    scalars only (a list or an empty mapping as its string; None as ``"None"``). An
    interpolation that resolves only inside Hydra (``${hydra:...}``) keeps its text."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.exists():
        return {}
    cfg = OmegaConf.load(path)
    out: dict = {}

    def walk(node, prefix: str) -> None:
        for key in node.keys() if OmegaConf.is_dict(node) else ():
            name = f"{prefix}{key}"
            try:
                value = node[key]
            except Exception:  # an unresolvable interpolation: its text  # noqa: BLE001
                out[name] = str(OmegaConf.to_container(node, resolve=False)[key])
                continue
            if OmegaConf.is_dict(value) and len(value):
                walk(value, f"{name}.")
            elif OmegaConf.is_config(value):
                out[name] = str(_container(value))
            else:
                out[name] = _scalar(value)

    walk(cfg, "")
    run_dir_key = out.get("run_dir")
    if isinstance(run_dir_key, str) and run_dir_key.startswith("${"):
        out["run_dir"] = str(Path(run_dir).resolve())
    return out


def _container(node):
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:  # noqa: BLE001
        return OmegaConf.to_container(node, resolve=False)


def _scalar(v):
    if isinstance(v, bool | int | float) and not (isinstance(v, float) and math.isnan(v)):
        return v
    return str(v)


def run_hparams(run_dir: Path) -> dict:
    """The run's hyperparameters: its whole resolved config flattened (:func:`flat_config`), its
    group choices (``algo``, ``experiment``, ``model``, ``data``, ``hardware``, ``logger``) and
    its overrides (``.hydra/``; a ``+key=value`` one the config does not hold stays by its name)."""
    import yaml

    from mplus.rundir import override_dict, run_overrides

    hp: dict = flat_config(run_dir)
    hydra_file = Path(run_dir) / ".hydra" / "hydra.yaml"
    if hydra_file.exists():
        choices = (
            (yaml.safe_load(hydra_file.read_text()) or {})
            .get("hydra", {})
            .get("runtime", {})
            .get("choices", {})
        )
        for group in ("algo", "experiment", "model", "data", "hardware", "logger"):
            if choices.get(group) is not None:
                hp[group] = str(choices[group])
    for k, v in override_dict(run_overrides(run_dir)).items():
        hp.setdefault(k.lstrip("+~"), _hparam_value(v))
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
