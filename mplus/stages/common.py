"""What the stages share: the Lightning trainer they fit with, their data loaders, the fit of a
supervised-style stage (rm / sft / dpo), and the parallel-plan checks made at start."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from mplus import rundir
from mplus.config import TrainConfig
from mplus.hardware import trainer_kwargs, uses_fsdp
from mplus.rundir import Summary
from mplus.stages.resume import rng_state_callback, stage_checkpoint

log = logging.getLogger(__name__)


def make_trainer(
    cfg: TrainConfig,
    stage: str,
    *,
    max_steps: int,
    val_every: int | None = None,
    ckpt_every: int | None = None,
    callbacks=(),
    grad_clip: float | None = None,
    accumulate: int = 1,
    max_epochs: int = -1,
    summary: Summary | None = None,
    progress=None,
    self_logged: bool = False,
):
    """The Lightning trainer of a stage: its TensorBoard run ``tb/<stage>`` (and the ``logger``
    option's logger, :mod:`mplus.loggers`), the fault callbacks,
    checkpoints every ``ckpt_every`` steps, and its progress on the console
    (:mod:`mplus.modules.progress`): ``progress`` is what it counts
    (:class:`~mplus.modules.progress.StageProgress`; default: optimizer steps out of
    ``max_steps``, named by :func:`mplus.console.stage_label`). ``self_logged``: the module logs
    its metrics to TensorBoard itself, every step (the RL stage), so Lightning's logging
    interval does not apply (and its warning about a stage shorter than it would mislead)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mplus.console import stage_label
    from mplus.loggers import make_loggers
    from mplus.modules.progress import StageProgress, progress_callbacks
    from mplus.modules.signals import AtomicCheckpointIO, fault_callbacks

    run_dir = Path(cfg.run_dir)
    # TensorBoard's tb/<stage> first (trainer.logger), then the logger option's (mplus.loggers)
    logger = make_loggers(cfg, stage)
    shown, bar = progress_callbacks(
        progress or StageProgress(stage_label(stage), max_steps),
        progress_bar=cfg.progress_bar,
        log_every=cfg.logger.log_every,
    )
    # stop signals, NaN, resumed curves; the progress bar or lines
    cbs = [*fault_callbacks(stage, summary), *callbacks, *shown, _heap_callback()]
    if not self_logged:  # the RL stage logs its own perf/* per step
        from mplus.modules.perf import ThroughputLog

        cbs.append(ThroughputLog())
    if ckpt_every:
        cbs.append(
            ModelCheckpoint(
                dirpath=rundir.checkpoint_dir(run_dir, stage),
                filename="{step}",
                save_last=True,
                save_top_k=1,
                **_ckpt_trigger(ckpt_every, val_every),
            )
        )
    return L.Trainer(
        **trainer_kwargs(cfg.hardware),
        max_steps=max_steps,
        max_epochs=max_epochs,
        logger=logger,
        callbacks=cbs,
        enable_checkpointing=bool(ckpt_every),
        val_check_interval=val_every,
        check_val_every_n_epoch=None if val_every else 1,
        num_sanity_val_steps=0,
        log_every_n_steps=1 if self_logged else cfg.logger.log_every,
        gradient_clip_val=grad_clip or None,
        accumulate_grad_batches=accumulate,
        enable_progress_bar=bar,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],  # temp file beside the checkpoint, not in $TMPDIR
    )


def _heap_callback():
    """A callback that, for the length of a fit, keeps what existed at its start (the imported
    libraries, the models, the data: ~600k objects) out of the garbage collector's sight.

    Python's full collections otherwise walk all of it again and again during the fit (each
    ~0.2 s on 2 CPU cores; 8 of them in a 10-step PPO run); frozen, they walk only what the
    steps create. At the fit's start what is garbage is collected first; at its end (or on an
    error) everything is unfrozen again, so nothing of a finished stage outlives it (a multirun
    runs its points in one process).
    """
    import gc

    import lightning as L

    class FreezeHeap(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            gc.collect()
            gc.freeze()

        def on_fit_end(self, trainer, pl_module):
            gc.unfreeze()

        def on_exception(self, trainer, pl_module, exception):
            gc.unfreeze()

    return FreezeHeap()


def _ckpt_trigger(ckpt_every: int, val_every: int | None) -> dict:
    """When ``ModelCheckpoint`` saves. Checkpoints at every validation are written after it (on
    validation end), not at the end of the batch before it: resumed from a batch-end checkpoint,
    Lightning counts that step's validation as done and skips it, so its point would be missing
    from the curves (and from the resumed run's callback metrics)."""
    if val_every and ckpt_every == val_every:
        return {"every_n_epochs": 1, "save_on_train_epoch_end": False}
    return {"every_n_train_steps": ckpt_every}


def sharded(module, cfg: TrainConfig):
    """Under ``hardware.strategy=fsdp`` the module shards its models in ``configure_model``."""
    module.shard_with = cfg.hardware if uses_fsdp(cfg.hardware) else None
    return module


def multi_fsdp(hw) -> bool:
    return uses_fsdp(hw) and isinstance(hw.devices, int) and hw.devices * hw.num_nodes > 1


def grouped_loader(dataset, batch_size, collate, shuffle, seed, lengths):
    """Training batches group similar lengths (padding is most of the cost on short texts); their
    position (epoch, batches drawn) is part of every checkpoint, so a resume continues mid-epoch."""
    from mplus.data.collate import (
        LengthGroupedBatchSampler,
        ResumableDataLoader,
        SequentialBatchSampler,
    )

    if not shuffle:
        sampler = SequentialBatchSampler(len(dataset), batch_size)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    sampler = LengthGroupedBatchSampler(lengths, batch_size, seed=seed)
    return ResumableDataLoader(dataset, sampler, collate_fn=collate)


def pair_loader(dataset, batch_size, collate, shuffle, seed):
    lengths = [len(it["chosen"]) + len(it["rejected"]) for it in dataset.items]
    return grouped_loader(dataset, batch_size, collate, shuffle, seed, lengths)


def fit_validate(
    cfg: TrainConfig, stage: str, algo, module, train_dl, val_dl, summary: Summary, t0: float
):
    """Fit a supervised-style stage (rm/sft/dpo), validate once more, record ``<stage>/*``."""
    val_every = min(algo.val_every, algo.max_steps)
    trainer = make_trainer(
        cfg,
        stage,
        max_steps=algo.max_steps,
        val_every=val_every,
        ckpt_every=val_every,
        grad_clip=algo.grad_clip,
        accumulate=getattr(algo, "accumulate_grad_batches", 1),
        callbacks=[rng_state_callback()],
        summary=summary,
    )
    ckpt = stage_checkpoint(cfg, stage)
    if ckpt:
        log.info("Resuming the %s stage from %s", stage, ckpt)
    trainer.fit(sharded(module, cfg), train_dl, val_dl, ckpt_path=ckpt, weights_only=True)
    if trainer.global_step % min(algo.val_every, algo.max_steps) == 0 and any(
        k.startswith(f"{stage}/val") for k in trainer.callback_metrics
    ):
        metrics = trainer.callback_metrics  # the last step already validated
    else:
        metrics = trainer.validate(module, val_dl, verbose=False)[0]
    metrics = {k: float(v) for k, v in metrics.items()}
    summary.update({k: v for k, v in metrics.items() if k.startswith(f"{stage}/")})
    summary[f"{stage}/steps"] = trainer.global_step
    summary[f"time/{stage}_s"] = round(time.time() - t0, 1)
    return trainer, metrics
