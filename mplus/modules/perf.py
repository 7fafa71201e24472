"""Throughput of the supervised stages (reward model, DPO, SFT) in TensorBoard: ``perf/step_s``
(wall seconds from one training batch's end to the next, data loading included) and
``perf/train_tokens_per_s`` (the batch's real tokens, padding excluded, over that time): the
names the RL stage logs its own under."""

from __future__ import annotations

import time

import lightning as L


class ThroughputLog(L.Callback):
    """Logs ``perf/step_s`` and ``perf/train_tokens_per_s`` of every training batch but the
    first after a start or a validation (no previous batch end to time from); Lightning writes
    them every ``logger.log_every`` steps like the other metrics."""

    def __init__(self):
        self._last: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now, last = time.perf_counter(), self._last
        self._last = now
        mask = batch.get("attention_mask") if isinstance(batch, dict) else None
        if last is None or mask is None:
            return
        seconds = max(now - last, 1e-9)
        # a tensor: Lightning reads it (one device sync) only when it writes the logs
        pl_module.log_dict(
            {"perf/step_s": seconds, "perf/train_tokens_per_s": mask.sum().float() / seconds},
            on_step=True,
            on_epoch=False,
            batch_size=1,
        )

    def on_validation_end(self, trainer, pl_module) -> None:
        self._last = None  # the validation's time is no batch's
