"""Checks at start that need no model, run by ``mplus.train`` right after the config is validated
and before the tokenizer, the data or any model is built.

What they refuse, each with one :class:`mplus.errors.UserError` naming the key and the path:

* ``run_dir`` that is a file, or under one;
* ``model.name_or_path`` / ``algo.reward_model`` / ``algo.rewards.<name>.path`` /
  ``evaluation.reward_model`` that is not a model folder (an ``algo.rewards`` export trained on
  another subset than its ``subset``), or whose only weights are pickled (``pytorch_model.bin``) without
  ``model.allow_pickle=true``;
* ``ckpt_path`` that is missing, truncated or corrupt, not an mplus checkpoint, from another stage
  (an RM checkpoint given to PPO), or whose pickle calls anything a weights-only load refuses;
* ``data.files`` that cannot be read (file and line) or none of whose rows is a usable pair;
* ``algo.rollout.engine=vllm`` without the vllm package (the install line), or with vLLM's sleep
  mode on CPU.

Light on purpose (the standard library, :mod:`mplus.data.hh`, no torch): a refusal comes in about
a second. A checkpoint is inspected without unpickling it (:mod:`pickletools` lists its strings and
the globals it would import). A global outside torch's own modules is refused outright (a
weights-only load refuses it too); torch is imported only for a global of its modules that is
not on the short list every mplus checkpoint uses, to let ``torch.load(weights_only=True)``
judge it.
"""

from __future__ import annotations

from mplus.config.rl import is_rl
from mplus.errors import UserError
from mplus.preflight.checkpoints import (  # noqa: F401  _RESUMABLE, CRC_...: re-exported
    _RESUMABLE,
    CRC_CHECK_MAX_BYTES,
    LAST,
    check_checkpoint,
    checkpoint_stage,
)
from mplus.preflight.data import check_data
from mplus.preflight.paths import check_model_dir, check_model_weights, check_run_dir
from mplus.preflight.rollout import check_rollout_engine

__all__ = [
    "LAST",
    "check_checkpoint",
    "check_data",
    "check_model_dir",
    "check_model_weights",
    "check_reward_paths",
    "check_rollout_engine",
    "checkpoint_stage",
    "preflight",
]


def check_reward_paths(rewards, *, allow_pickle: bool = False) -> None:
    """Each ``algo.rewards.<name>.path`` is an exported model, trained on its ``subset`` when
    one is named (the subset its ``reward_stats.json`` records).

    Raises:
        mplus.errors.UserError: naming the key, the path and the subset it was trained on.
    """
    import json
    from pathlib import Path

    for name, spec in rewards.items():
        if spec.path is None:
            continue
        key = f"algo.rewards.{name}.path"
        check_model_dir(spec.path, key, allow_pickle=allow_pickle)
        stats = Path(spec.path) / "reward_stats.json"
        trained_on = json.loads(stats.read_text()).get("subset") if stats.exists() else None
        if spec.subset is not None and trained_on != spec.subset:
            raise UserError(
                f"{key}={spec.path} was trained on "
                + (f"subset {trained_on}" if trained_on else "every pair")
                + f", not on algo.rewards.{name}.subset={spec.subset}: point at the right "
                f"export, or set algo.rewards.{name}.subset=null"
            )


def preflight(cfg) -> None:
    """Every check above on a validated :class:`mplus.config.TrainConfig`, cheapest first.

    Raises:
        mplus.errors.UserError: the first problem found, naming the key and the path.
    """
    check_run_dir(cfg.run_dir)
    if is_rl(cfg.algo):
        check_rollout_engine(cfg.algo.rollout, cfg.hardware)
    check_model_dir(
        cfg.model.name_or_path, "model.name_or_path", allow_pickle=cfg.model.allow_pickle, hub=True
    )
    if is_rl(cfg.algo) and cfg.algo.reward_model is not None:
        check_model_dir(
            cfg.algo.reward_model, "algo.reward_model", allow_pickle=cfg.model.allow_pickle
        )
    if is_rl(cfg.algo):
        check_reward_paths(cfg.algo.rewards, allow_pickle=cfg.model.allow_pickle)
    if cfg.algo.name in ("none", "sft", "dpo") and cfg.evaluation.reward_model is not None:
        check_model_dir(
            cfg.evaluation.reward_model,
            "evaluation.reward_model",
            allow_pickle=cfg.model.allow_pickle,
        )
    check_checkpoint(cfg.ckpt_path, cfg.algo.name)
    check_data(cfg.data)
