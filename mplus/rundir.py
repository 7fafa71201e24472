"""The layout of a run dir, in one place: what the stages write and what analysis reads back.

``<run dir>/``
  ``summary.json``      flat ``group/name`` metrics (:class:`Summary`), rewritten after each stage
  ``tb/<stage>/``       one TensorBoard run per stage (``tb/rm``, ``tb/ppo`` ...); ``tb/`` itself
                        holds the HParams record (overrides linked to final metrics)
  ``reward_model/``     the exported reward model (with ``reward_stats.json``)
  ``reward_models/<name>/``  each reward model of ``algo.rewards`` trained in the run
  ``policy/``           the exported policy
  ``checkpoints/<stage>/last.ckpt``  what ``ckpt_path=last`` resumes
  ``<algo>_start.json`` an RL stage's before-training held-out numbers (``ppo_start.json``; a
                        resumed run reads them back)
  ``.hydra/``           Hydra's record: ``config.yaml``, ``hydra.yaml``, ``overrides.yaml``

The override keys that never name a run (paths, plumbing) are Hydra's
``hydra.job.config.override_dirname.exclude_keys`` in ``conf/train.yaml``: the sweep directory
names use them, and :func:`name_excluded_keys` reads the same list back (from the run's own
``.hydra/hydra.yaml``, else from the shipped ``conf/train.yaml``) for analysis.

No torch at import: the analysis tools read run dirs without it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

SUMMARY = "summary.json"
TB = "tb"
POLICY = "policy"
REWARD_MODEL = "reward_model"
REWARD_STATS = "reward_stats.json"
REWARD_MODELS = "reward_models"  # one folder per reward model of algo.rewards
CHECKPOINTS = "checkpoints"


def rl_start_file(stage: str) -> str:
    """An RL stage's before-training held-out numbers (``ppo_start.json``, ``grpo_start.json``)."""
    return f"{stage}_start.json"


def rl_state_key(stage: str) -> str:
    """The checkpoint entry of an RL stage's own state (step, KL controller, RNG):
    ``mplus_ppo``, ``mplus_grpo``, ... (:func:`mplus.preflight.checkpoint_stage` reads it)."""
    return f"mplus_{stage}"


# checkpoint entries that start like rl_state_key() but belong to every stage
SHARED_STATE_KEYS = ("mplus_rng",)
HYDRA = ".hydra"
OVERRIDES = f"{HYDRA}/overrides.yaml"
EXPORTS = (REWARD_MODEL, POLICY)


def reward_model_dir(run_dir: str | Path, name: str | None = None) -> Path:
    """``reward_model/``, or ``reward_models/<name>/`` for one of several (``algo.rewards``)."""
    if name is None:
        return Path(run_dir) / REWARD_MODEL
    return Path(run_dir) / REWARD_MODELS / name


def checkpoint_dir(run_dir: str | Path, stage: str) -> Path:
    return Path(run_dir) / CHECKPOINTS / stage


def last_checkpoint(run_dir: str | Path, stage: str) -> Path:
    return checkpoint_dir(run_dir, stage) / "last.ckpt"


def is_run(p: Path) -> bool:
    """A directory a run wrote into (any of its records)."""
    return (p / HYDRA).is_dir() or (p / SUMMARY).exists() or (p / TB).is_dir()


def _exclude_keys(yaml_file: Path) -> list[str] | None:
    """``hydra.job.config.override_dirname.exclude_keys`` of a Hydra config file, if set."""
    import yaml

    node = yaml.safe_load(yaml_file.read_text()) or {}
    for key in ("hydra", "job", "config", "override_dirname", "exclude_keys"):
        node = node.get(key) if isinstance(node, dict) else None
    return [str(k) for k in node] if isinstance(node, list) else None


@cache
def _shipped_exclude_keys() -> tuple[str, ...]:
    from mplus.config_paths import config_dir

    return tuple(_exclude_keys(Path(config_dir()) / "train.yaml") or ())


def name_excluded_keys(run_dir: str | Path | None = None) -> tuple[str, ...]:
    """The override keys that do not name a run: those the run's Hydra excluded from its
    ``override_dirname`` (its ``.hydra/hydra.yaml``), else those ``conf/train.yaml`` excludes."""
    if run_dir is not None:
        f = Path(run_dir) / HYDRA / "hydra.yaml"
        if f.exists():
            keys = _exclude_keys(f)
            if keys is not None:
                return tuple(keys)
    return _shipped_exclude_keys()


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def override_dict(overrides: list[str]) -> dict[str, str]:
    """``["a.b=1", "+c=x"]`` -> ``{"a.b": "1", "c": "x"}``."""
    return {override_key(o): (o.split("=", 1)[1] if "=" in o else "") for o in overrides}


def run_overrides(run_dir: str | Path) -> list[str]:
    """The run's Hydra job overrides (``.hydra/overrides.yaml``), less those that do not name a
    run (:func:`name_excluded_keys`: paths, plumbing) and ``hydra.*``."""
    f = Path(run_dir) / OVERRIDES
    if not f.exists():
        return []
    ignored = name_excluded_keys(run_dir)
    lines = [ln[2:].strip() for ln in f.read_text().splitlines() if ln.startswith("- ")]
    return [ln for ln in lines if not ln.startswith("hydra.") and override_key(ln) not in ignored]


class Summary(dict):
    """Flat ``group/name`` metrics, rewritten to ``summary.json`` after every stage (by rank 0)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def save(self) -> None:
        import torch

        from mplus import distributed as D

        if not D.is_rank_zero():
            return
        clean = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in self.items()}
        self.path.write_text(json.dumps(clean, indent=2, sort_keys=True))
