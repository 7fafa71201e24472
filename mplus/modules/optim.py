"""Optimiser + schedule used by every stage: AdamW, linear warmup then cosine decay."""

from __future__ import annotations

import math

import torch


def adamw_with_warmup(
    params, *, lr: float, weight_decay: float, warmup_steps: int, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, warmup_steps, total_steps))
    return opt, sched


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: linear warmup from ``1/warmup_steps``, then cosine decay to 0.

    Step 0 already trains (at ``lr / warmup_steps``), unlike a warmup from 0 that spends the
    first optimiser step, a whole PPO iteration, at learning rate 0.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def check_finite(loss: torch.Tensor, what: str, step: int) -> None:
    """Stop the run on a NaN/inf loss before the optimiser step corrupts the weights."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(
            f"{what} is {loss.item()} at step {step}: stopping. The last good checkpoint is kept; "
            "lower the learning rate or check the data, then resume with ckpt_path=..."
        )
