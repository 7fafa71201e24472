"""``algo=rm``: a Bradley-Terry reward model trained from the base, exported to
``<run dir>/reward_model/`` with its score statistics (what PPO normalises rewards by)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from mplus import distributed as D
from mplus import rundir
from mplus.config import RMConfig
from mplus.rundir import Summary
from mplus.stages import register
from mplus.stages.common import fit_validate, pair_loader
from mplus.stages.context import RunContext
from mplus.stages.resume import seed_stage

log = logging.getLogger(__name__)


def train_reward_model(
    rc: RunContext,
    rm_cfg: RMConfig,
    summary: Summary,
    *,
    name: str | None = None,
    subset: str | None = None,
) -> Path:
    """Train the reward model from the base and export it to ``<run dir>/reward_model/``.

    ``name`` (one of several reward models, ``algo.rewards``): the stage is ``rm_<name>``
    (its checkpoints, TensorBoard run and ``rm_<name>/*`` metrics), the export
    ``<run dir>/reward_models/<name>/``; ``subset``: train and validate on the pairs of the
    data subsets with that word in their name only (:func:`subset_pairs`).
    """
    from mplus.data.collate import PairCollator, PairDataset
    from mplus.export import export_model
    from mplus.modules.reward_model import RewardModelModule

    cfg, tok, data = rc.cfg, rc.tokenizer, rc.data
    stage = "rm" if name is None else f"rm_{name}"
    train_pairs, val_pairs = data.train_pairs, data.val_pairs
    if subset is not None:
        what = f"algo.rewards.{name}.subset={subset}"
        train_pairs = subset_pairs(train_pairs, subset, what)
        val_pairs = subset_pairs(val_pairs, subset, what + " (validation pairs)")
        log.info("Reward model %s: %d training pairs of subset %s", name, len(train_pairs), subset)
    t0 = time.time()
    seed_stage(cfg, stage)  # before the model: the score head is initialised from it
    module = RewardModelModule(rc.scalar_model(trainable=True), rm_cfg, prefix=stage)
    collate = PairCollator(rc.pad_id)
    train_dl = pair_loader(
        PairDataset(train_pairs, tok), rm_cfg.batch_size, collate, True, cfg.seed
    )
    val_dl = pair_loader(
        PairDataset(val_pairs, tok), rm_cfg.batch_size * 2, collate, False, cfg.seed
    )
    _, metrics = fit_validate(cfg, stage, rm_cfg, module, train_dl, val_dl, summary, t0)

    out = rundir.reward_model_dir(rc.run_dir, name)
    card_summary = {  # the card reads rm/*: this model's own metrics under that name
        **summary,
        **{f"rm/{k.split('/', 1)[1]}": v for k, v in summary.items() if k.startswith(f"{stage}/")},
    }
    export_model(
        module.model,
        tok,
        out,
        dtype=cfg.model.dtype,
        kind="reward_model",
        cfg=cfg,
        algo=rm_cfg,
        summary=card_summary,
    )
    stats = {
        "mean": metrics[f"{stage}/reward_mean"],
        "std": metrics[f"{stage}/reward_std"],
        "val_accuracy": metrics[f"{stage}/val_accuracy"],
        **({"subset": subset} if subset else {}),
    }
    if D.is_rank_zero():
        (out / rundir.REWARD_STATS).write_text(json.dumps(stats, indent=2))
    D.barrier()  # the next stage reads it on every rank
    summary.save()
    log.info(
        "Reward model%s: val accuracy %.3f, exported to %s",
        f" {name}" if name else "",
        stats["val_accuracy"],
        out,
    )
    return out


def subset_pairs(pairs: list, subset: str, what: str) -> list:
    """The pairs whose data subset has ``subset`` as a ``-``/``_``-separated word of its name
    (``harmless``: ``harmless-base``, ``synthetic-harmless``; not ``harmlessness``).

    Raises:
        mplus.errors.DataError: no pair matches (naming the subsets there are).
    """
    from mplus.errors import DataError

    out = [p for p in pairs if subset in p.subset.replace("_", "-").split("-")]
    if not out:
        have = sorted({p.subset for p in pairs})
        raise DataError(f"{what}: no pair of that subset; the data has {', '.join(have)}")
    return out


@register("rm")
def run(rc: RunContext, summary: Summary) -> None:
    train_reward_model(rc, rc.cfg.algo, summary)
