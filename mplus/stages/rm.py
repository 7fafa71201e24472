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


def train_reward_model(rc: RunContext, rm_cfg: RMConfig, summary: Summary) -> Path:
    """Train the reward model from the base and export it to ``<run dir>/reward_model/``."""
    from mplus.data.collate import PairCollator, PairDataset
    from mplus.export import export_model
    from mplus.modules.reward_model import RewardModelModule

    cfg, tok, data = rc.cfg, rc.tokenizer, rc.data
    t0 = time.time()
    seed_stage(cfg, "rm")  # before the model: the score head is initialised from it
    module = RewardModelModule(rc.scalar_model(trainable=True), rm_cfg)
    collate = PairCollator(rc.pad_id)
    train_dl = pair_loader(
        PairDataset(data.train_pairs, tok), rm_cfg.batch_size, collate, True, cfg.seed
    )
    val_dl = pair_loader(
        PairDataset(data.val_pairs, tok), rm_cfg.batch_size * 2, collate, False, cfg.seed
    )
    _, metrics = fit_validate(cfg, "rm", rm_cfg, module, train_dl, val_dl, summary, t0)

    out = rc.run_dir / rundir.REWARD_MODEL
    export_model(
        module.model,
        tok,
        out,
        dtype=cfg.model.dtype,
        kind="reward_model",
        cfg=cfg,
        algo=rm_cfg,
        summary=summary,
    )
    stats = {
        "mean": metrics["rm/reward_mean"],
        "std": metrics["rm/reward_std"],
        "val_accuracy": metrics["rm/val_accuracy"],
    }
    if D.is_rank_zero():
        (out / rundir.REWARD_STATS).write_text(json.dumps(stats, indent=2))
    D.barrier()  # the next stage reads it on every rank
    summary.save()
    log.info("Reward model: val accuracy %.3f, exported to %s", metrics["rm/val_accuracy"], out)
    return out


@register("rm")
def run(rc: RunContext, summary: Summary) -> None:
    train_reward_model(rc, rc.cfg.algo, summary)
