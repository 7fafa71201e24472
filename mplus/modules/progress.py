"""Every stage's progress on the console, named by stage and counted in the stage's own steps.

On a terminal (and with ``progress_bar=true``) one bar per stage, Lightning's
:class:`~lightning.pytorch.callbacks.TQDMProgressBar` with mplus's description, total and metrics::

    reward model step 120/300 |██████▍         | 00:41<01:02, train loss 0.412
    PPO step 37/60 |█████████▊      | 02:13<01:23, train reward 0.41 · train kl 0.12 · train gold 0.55

``base`` (the tiny base's pretraining), ``reward model``, ``SFT``, ``DPO`` count optimizer steps
(``trainer.global_step``) out of the stage's ``max_steps``; an RL stage (``PPO``, ``GRPO``,
``RLOO``, ``REINFORCE++``) counts its RL iterations out of ``algo.steps``. (Lightning's own bar
reads ``Epoch 0/-2 ... 3/3``: the epoch's batches, no stage name.)

Without a terminal (a log file, a SLURM job, a test's pipe) or with ``progress_bar=false`` there is
no bar; :class:`ProgressLog` logs one line every ``logger.log_every`` steps and at the last step,
and one after each validation::

    [...][mplus.progress][INFO] - PPO step 10/60 · train reward 0.31 · train kl 0.05 · ... · 0:00:41 elapsed, ~0:03:25 left

The metrics are the progress-bar metrics the module logs (``prog_bar=True``): numbers of the
training batch (the RL rollout), named ``train ...`` so they are not read as held-out numbers;
``val ...`` after a validation. The RL stage's ``train kl`` is the k3 estimate of the rollout's
sequence KL (non-negative; TensorBoard's ``rl/kl`` keeps the configured ``algo.kl.estimator``).
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass

from lightning.pytorch.callbacks import Callback, TQDMProgressBar

log = logging.getLogger("mplus.progress")


@dataclass(frozen=True)
class StageProgress:
    """What a stage's progress counts: ``label`` (``reward model``, ``PPO``), ``total`` steps, and
    ``counter``, the LightningModule attribute holding the step (None: ``trainer.global_step``)."""

    label: str
    total: int
    counter: str | None = None

    def step(self, trainer, pl_module) -> int:
        return int(getattr(pl_module, self.counter) if self.counter else trainer.global_step)


def metric_name(key: str) -> str:
    """A progress-bar metric's console name: ``rm/train_loss`` -> ``train loss``; a name that
    says neither ``train`` nor ``val`` is a training-batch number (``dpo/loss`` -> ``train loss``)."""
    name = key.rsplit("/", 1)[-1].replace("_", " ")
    return name if name.startswith(("train", "val")) else f"train {name}"


def format_metrics(metrics: dict) -> str:
    return " · ".join(f"{metric_name(k)} {float(v):.3g}" for k, v in metrics.items())


def _update_n(bar, n: int) -> None:
    if not bar.disable:
        bar.n = n
        bar.refresh()


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


class StageProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar named by stage, counting the stage's steps out of its total (across
    epochs: not reset per epoch), with the progress-bar metrics as ``name value · ...``."""

    BAR_FORMAT = "{desc} {n_fmt}/{total_fmt} |{bar:24}| {elapsed}<{remaining}{postfix}"

    def __init__(self, progress: StageProgress):
        super().__init__(leave=False)
        self.progress = progress

    @property
    def train_description(self) -> str:
        return f"{self.progress.label} step"

    @property
    def validation_description(self) -> str:
        return f"{self.progress.label} validation"

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        super().on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        if batch_idx == 0 and not trainer.sanity_checking:  # not "... DataLoader 0": one loader
            self.val_progress_bar.set_description_str(self.validation_description)

    def get_metrics(self, trainer, pl_module) -> dict:
        return dict(trainer.progress_bar_metrics)  # without Lightning's v_num (the TB version)

    def on_train_start(self, trainer, pl_module) -> None:
        # drawn at the first batch, not here: what the module logs in its own on_train_start
        # (the RL stage's before-training evaluation) would print through the bar
        self._train_progress_bar = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._train_progress_bar is not None:
            return
        bar = self.train_progress_bar = self.init_train_tqdm()
        bar.reset(total=self.progress.total)
        bar.initial = self.progress.step(trainer, pl_module)  # a resumed stage starts there
        bar.set_description_str(self.train_description, refresh=False)
        _update_n(bar, bar.initial)

    def on_train_epoch_start(self, trainer, *_) -> None:
        pass  # one bar for the whole stage: Lightning's resets it (and its total) every epoch

    def _refresh(self, trainer, pl_module) -> None:
        bar = self._train_progress_bar
        if bar is None or bar.disable:
            return
        _update_n(bar, self.progress.step(trainer, pl_module))
        bar.set_postfix_str(format_metrics(self.get_metrics(trainer, pl_module)), refresh=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.progress.step(trainer, pl_module) != self.train_progress_bar.n:
            self._refresh(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._refresh(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()
        if trainer.state.fn == "fit":
            self._refresh(trainer, pl_module)

    def on_train_end(self, *_) -> None:
        if self._train_progress_bar is not None:
            self._train_progress_bar.close()


class ProgressLog(Callback):
    """Without a bar: one log line every ``every`` steps and at the last (stage, step/total, the
    progress-bar metrics, elapsed and estimated remaining time), and one after each validation
    during the fit (the stage's ``*/val*`` metrics)."""

    def __init__(self, progress: StageProgress, every: int):
        self.progress, self.every = progress, max(1, int(every))
        self._t0 = time.monotonic()
        self._first = self._last = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.monotonic()
        self._first = self._last = self.progress.step(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, total = self.progress.step(trainer, pl_module), self.progress.total
        if step == self._last or not (step % self.every == 0 or step >= total):
            return
        self._last = step
        elapsed = time.monotonic() - self._t0
        done = step - self._first
        left = (
            f", ~{_clock(elapsed / done * (total - step))} left"
            if 0 < done and step < total
            else ""
        )
        parts = [f"{self.progress.label} step {step}/{total}"]
        if trainer.progress_bar_metrics:
            parts.append(format_metrics(trainer.progress_bar_metrics))
        parts.append(f"{_clock(elapsed)} elapsed{left}")
        if trainer.is_global_zero:
            log.info(" · ".join(parts))

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn != "fit" or trainer.sanity_checking or not trainer.is_global_zero:
            return
        val = {k: v for k, v in trainer.callback_metrics.items() if "/val_" in k}
        if val:
            step = self.progress.step(trainer, pl_module)
            log.info(
                "%s step %d/%d · %s",
                self.progress.label,
                step,
                self.progress.total,
                format_metrics(val),
            )


class TrainModeCheck(Callback):
    """Warns once at the start of a fit if a model that trains (has parameters with gradients)
    has submodules in eval mode: dropout and activation checkpointing would be off in them.

    Lightning's own check counts every module in eval mode, frozen reference and reward models
    included (eval on purpose), so :mod:`mplus.console` drops its warning and this one stands in
    for the case it is there for."""

    def on_train_start(self, trainer, pl_module) -> None:
        for name, child in pl_module.named_children():
            if not any(p.requires_grad for p in child.parameters()):
                continue  # frozen: eval mode on purpose
            n = sum(1 for m in child.modules() if not m.training)
            if n and trainer.is_global_zero:
                log.warning(
                    "%d module(s) of the trained %s are in eval mode at the start of training: "
                    "dropout and activation checkpointing are off in them",
                    n,
                    name,
                )


def progress_callbacks(
    progress: StageProgress, *, progress_bar: bool = True, log_every: int = 10
) -> tuple[list[Callback], bool]:
    """The callbacks that show a stage's progress and whether the Trainer draws a bar
    (``enable_progress_bar``): a :class:`StageProgressBar` on a terminal with ``progress_bar``,
    else :class:`ProgressLog` lines every ``log_every`` steps (also with ``progress_bar=false``:
    a log file needs them); :class:`TrainModeCheck` either way."""
    from mplus.console import bars_enabled

    bar = bars_enabled(progress_bar)
    shown = StageProgressBar(progress) if bar else ProgressLog(progress, log_every)
    return [shown, TrainModeCheck()], bar
