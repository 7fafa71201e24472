"""Optimiser + schedule used by every stage (AdamW, linear warmup then cosine decay), and the
finiteness checks that stop a diverging run before it saves non-finite weights."""

from __future__ import annotations

import math

import lightning as L
import torch

from mplus import distributed as D


def adamw_with_warmup(
    params, *, lr: float, weight_decay: float, warmup_steps: int, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    params = [p for p in params if p.requires_grad]
    # the fused kernel (transformers' default `adamw_torch_fused`): one pass over every
    # parameter instead of a loop of small ops per tensor (3.4M parameters on a 2-core CPU:
    # 11-13 -> 1.7-1.9 ms a step, docs/performance.md)
    fused = bool(params) and all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, warmup_steps, total_steps)
    )
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


class TrainingDiverged(FloatingPointError):
    """A loss, gradient or parameter became NaN/inf: the run stops, naming the step, and no
    checkpoint is written from that point on (the last one on disk predates the divergence).

    ``python -m mplus.train`` reports it (a ``FloatingPointError``) as one line, exit status 2:
    a diverging run is a too-high learning rate or bad data far more often than a bug.
    """

    def __init__(self, message: str, *, step: int | None = None):
        super().__init__(message)
        self.step = step


def check_finite(loss: torch.Tensor, what: str, step: int) -> None:
    """Stop the run on a NaN/inf loss before the optimiser step corrupts the weights."""
    if not torch.isfinite(loss).all():
        raise TrainingDiverged(
            f"{what} is {loss.detach().item()} at step {step}: stopping. The last good checkpoint is kept; "
            "lower the learning rate or check the data, then resume with ckpt_path=...",
            step=step,
        )


def count_nonfinite(tensors) -> tuple[int, int]:
    """(tensors holding a NaN/inf, tensors checked), summed over data-parallel ranks.

    One fused max-abs per tensor (``torch._foreach_norm``, ord=inf: NaN and inf propagate, and
    unlike the 2-norm it cannot overflow on finite values) and one device-to-host copy; under
    FSDP each rank checks its own shards. Every rank must call it (one all-reduce).
    """
    local = [t.to_local() if hasattr(t, "to_local") else t for t in tensors if t is not None]
    local = [t.detach() for t in local if t.numel()]
    if local:
        norms = torch._foreach_norm(local, ord=math.inf)
        dev = norms[0].device
        norms = torch.stack([n.to(dev, torch.float32) for n in norms])
        counts = torch.stack(
            [(~torch.isfinite(norms)).sum().float(), torch.tensor(float(len(local)), device=dev)]
        )
    else:
        counts = torch.zeros(2)
    if D.is_distributed():
        counts = D.all_reduce_sum(counts)
    bad, total = counts.tolist()
    return int(bad), int(total)


def grads_of(params) -> list[torch.Tensor]:
    return [p.grad for p in params if p.grad is not None]


def optimizer_params(optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def uses_grad_scaler(trainer) -> bool:
    """16-mixed: the scaler skips steps with inf gradients itself (expected, not a divergence)."""
    return getattr(trainer.precision_plugin, "scaler", None) is not None


def divergence_advice(saved: str | None, fix: str, ckpt: str) -> str:
    """What to do next. ``saved``: when the last checkpoint written (or resumed) was taken.

    A resumed run restores the checkpoint's optimiser and schedule, learning rate included, so a
    lower learning rate means starting again.
    """
    if saved is None:
        return f"No checkpoint was written before it; {fix}"
    return (
        f"The checkpoint on disk ({saved}) predates it and is kept: resume from it with "
        f"ckpt_path={ckpt} (it keeps its learning rate), or {fix}"
    )


def stage_checkpoint_path(trainer, stage: str) -> str:
    """``<run dir>/checkpoints/<stage>/last.ckpt``: where every stage's resumable state goes."""
    from pathlib import Path

    return str(Path(trainer.default_root_dir) / "checkpoints" / stage / "last.ckpt")


class FiniteGuard(L.Callback):
    """Stops a fit whose gradients or weights become NaN/inf, and never writes them to a checkpoint.

    Automatic optimisation (rm, sft, dpo): gradients are checked before each optimiser step
    (the weights stay as they were) and parameters after it when the gradients were not (a
    16-mixed grad scaler skips inf steps itself): finite gradients and a finite learning rate
    make a finite step, and a parameter that overflowed anyway makes the next loss non-finite,
    which the stages check. Every module (PPO's manual
    optimisation checks its own steps): trainable parameters are checked before any checkpoint
    is written, so a bad state never replaces a good ``last.ckpt``. Each check is one fused
    max-abs kernel over the tensors and one host sync.
    """

    def __init__(self, stage: str):
        self.stage = stage
        self.saved_step: int | None = None  # completed steps in the last checkpoint written/read
        self._checked_step = -1
        self._grads_checked_step = -1  # the global step whose gradients were found finite

    def _advice(self, trainer) -> str:
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        fix = "start again with a lower algo.lr" + (f" (now {lr:.3g})" if lr is not None else "")
        saved = None if self.saved_step is None else f"global step {self.saved_step}"
        return divergence_advice(
            saved, f"{fix} or check the data", stage_checkpoint_path(trainer, self.stage)
        )

    def _diverged(
        self, trainer, what: str, step: int, bad: int, total: int, after: str
    ) -> TrainingDiverged:
        return TrainingDiverged(
            f"{self.stage}: the {what} are non-finite (NaN/inf in {bad} of {total} tensors) at "
            f"global step {step}: {after}. {self._advice(trainer)}",
            step=step,
        )

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not pl_module.automatic_optimization or uses_grad_scaler(trainer):
            return
        bad, total = count_nonfinite(grads_of(optimizer_params(optimizer)))
        if bad:
            raise self._diverged(
                trainer,
                "gradients",
                trainer.global_step,
                bad,
                total,
                "stopped before the optimiser step, the weights are unchanged",
            )
        self._grads_checked_step = trainer.global_step + 1  # the step this optimiser step makes

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not pl_module.automatic_optimization or trainer.global_step == self._checked_step:
            return  # PPO checks its own steps; accumulating batches did not step
        self._checked_step = trainer.global_step
        if self._grads_checked_step == trainer.global_step:
            return  # this step's gradients were finite (see the class docstring)
        bad, total = count_nonfinite(_trainable(pl_module))
        if bad:
            raise self._diverged(
                trainer,
                "parameters",
                trainer.global_step - 1,
                bad,
                total,
                "the optimiser step made them so; stopping before they are saved",
            )

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        bad, total = count_nonfinite(_trainable(pl_module))
        step = getattr(pl_module, "ppo_step", trainer.global_step)
        if bad:
            raise TrainingDiverged(
                f"{self.stage}: the parameters are non-finite (NaN/inf in {bad} of {total} "
                f"tensors) at step {step}: not writing that checkpoint. "
                f"{self._advice(trainer)}",
                step=step,
            )
        self.saved_step = step

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        key = getattr(pl_module, "state_key", None)  # an RL stage's own entry
        self.saved_step = checkpoint.get(key, {}).get("ppo_step", checkpoint.get("global_step"))


def _trainable(module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.requires_grad]
