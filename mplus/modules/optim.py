"""Optimiser + schedule used by every stage: AdamW, linear warmup then cosine decay."""

from __future__ import annotations

import torch


def adamw_with_warmup(
    params, *, lr: float, weight_decay: float, warmup_steps: int, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    from transformers import get_cosine_schedule_with_warmup

    opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, weight_decay=weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, warmup_steps, max(total_steps, warmup_steps + 1))
    return opt, sched


def check_finite(loss: torch.Tensor, what: str, step: int) -> None:
    """Stop the run on a NaN/inf loss before the optimiser step corrupts the weights."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(
            f"{what} is {loss.item()} at step {step}: stopping. The last good checkpoint is kept; "
            "lower the learning rate or check the data, then resume with ckpt_path=..."
        )
