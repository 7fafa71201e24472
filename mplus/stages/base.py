"""``algo=none``: the base model itself through the same held-out evaluation (the "before"
column of every comparison)."""

from __future__ import annotations

import logging

from mplus.rundir import Summary
from mplus.stages import register
from mplus.stages.context import RunContext
from mplus.stages.evaluation import eval_reward_model, heldout_eval
from mplus.stages.resume import seed_stage

log = logging.getLogger(__name__)


@register("none")
def run(rc: RunContext, summary: Summary) -> None:
    if not rc.cfg.evaluation.enabled:
        log.warning("algo=none with evaluation.enabled=false: nothing to run")
        return
    seed_stage(rc.cfg, "none")
    base = rc.causal_lm(trainable=False, sharded=False)
    heldout_eval(rc, base, reward_model=eval_reward_model(rc), title="base model", summary=summary)
