"""``algo=sft``: supervised fine-tuning of the base on the chosen responses (the baseline the
paper skips); exports ``<run dir>/policy/``."""

from __future__ import annotations

import time

from mplus.rundir import Summary
from mplus.stages import register
from mplus.stages.common import fit_validate, grouped_loader
from mplus.stages.context import RunContext
from mplus.stages.evaluation import evaluate_and_export
from mplus.stages.resume import seed_stage


@register("sft")
def run(rc: RunContext, summary: Summary) -> None:
    from mplus.data.collate import SFTCollator, SFTDataset
    from mplus.modules.causal_lm import CausalLMModule

    cfg, algo, tok, data = rc.cfg, rc.cfg.algo, rc.tokenizer, rc.data
    t0 = time.time()
    seed_stage(cfg, "sft")
    policy = rc.policy()
    collate = SFTCollator(rc.pad_id)
    train_ds, val_ds = SFTDataset(data.train_pairs, tok), SFTDataset(data.val_pairs, tok)
    train_dl = grouped_loader(
        train_ds,
        algo.batch_size,
        collate,
        True,
        cfg.seed,
        [len(it["input_ids"]) for it in train_ds.items],
    )
    val_dl = grouped_loader(val_ds, algo.batch_size * 2, collate, False, cfg.seed, None)
    module = CausalLMModule(
        policy,
        lr=algo.lr,
        weight_decay=algo.weight_decay,
        warmup_steps=int(algo.warmup_ratio * algo.max_steps),
        total_steps=algo.max_steps,
        prefix="sft",
    )
    trainer, _ = fit_validate(cfg, "sft", algo, module, train_dl, val_dl, summary, t0)
    # held to the whole frozen base (loaded on every rank, LoRA or not)
    reference = lambda: rc.causal_lm(trainable=False, sharded=False)  # noqa: E731
    evaluate_and_export(rc, module.model, reference, "SFT", trainer, summary)
