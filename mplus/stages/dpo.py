"""``algo=dpo``: direct preference optimisation of the base against the frozen base (the
offline baseline for direct RLHF); exports ``<run dir>/policy/``."""

from __future__ import annotations

import logging
import time

import torch

from mplus.hardware import uses_fsdp
from mplus.rundir import Summary
from mplus.stages import register
from mplus.stages.common import fit_validate, pair_loader
from mplus.stages.context import RunContext
from mplus.stages.evaluation import evaluate_and_export
from mplus.stages.resume import seed_stage

log = logging.getLogger(__name__)


@register("dpo")
def run(rc: RunContext, summary: Summary) -> None:
    from mplus.data.collate import PairCollator, PairDataset
    from mplus.models.logprobs import reference_context
    from mplus.modules.dpo import DPOModule, attach_reference_logps, precompute_reference_logps

    cfg, algo, tok, data = rc.cfg, rc.cfg.algo, rc.tokenizer, rc.data
    t0 = time.time()
    seed_stage(cfg, "dpo")
    policy = rc.policy()
    ref = rc.reference()
    collate = PairCollator(rc.pad_id)
    train_ds, val_ds = PairDataset(data.train_pairs, tok), PairDataset(data.val_pairs, tok)
    if algo.precompute_ref and uses_fsdp(cfg.hardware):
        log.info("DPO under FSDP: reference log-probs computed per batch by the sharded reference")
    elif algo.precompute_ref:  # one pass of the reference over the data instead of one per step
        for ds in (train_ds, val_ds):
            plain = torch.utils.data.DataLoader(
                ds, batch_size=algo.batch_size * 2, collate_fn=collate
            )
            ref_model, ctx_mgr = reference_context(policy, ref)
            with ctx_mgr:
                attach_reference_logps(
                    ds, precompute_reference_logps(ref_model, plain, algo.shared_prefix)
                )
    train_dl = pair_loader(train_ds, algo.batch_size, collate, True, cfg.seed)
    val_dl = pair_loader(val_ds, algo.batch_size * 2, collate, False, cfg.seed)
    module = DPOModule(policy, ref, algo)
    trainer, _ = fit_validate(cfg, "dpo", algo, module, train_dl, val_dl, summary, t0)
    evaluate_and_export(rc, module.policy, lambda: ref, "DPO", trainer, summary)
