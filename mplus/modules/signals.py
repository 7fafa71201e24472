"""Surviving faults in a fit: stop signals, divergence, checkpoint files, resumed curves.

Every stage's trainer (:func:`mplus.stages.common.make_trainer`) gets :func:`fault_callbacks` and
:class:`AtomicCheckpointIO`:

* :class:`StopOnSignal`: SIGTERM (a scheduler's or sweep's stop), SIGINT (Ctrl-C) and SIGUSR1
  stop the fit at the end of the current step (PPO step / training batch), save
  ``checkpoints/<stage>/last.ckpt``, mark ``summary.json`` ``"status": "interrupted"`` with the
  step, and exit with ``128 + signal`` (143 for SIGTERM), never 0. Built on Lightning's own
  SIGTERM handling (``trainer.received_sigterm``, ``SIGTERMException`` raised at a batch
  boundary, agreed over ranks): SIGINT and SIGUSR1 raise the same flag. Under SLURM with
  auto-requeue Lightning owns SIGUSR1 (hpc checkpoint + ``scontrol requeue``): left alone.
* :class:`mplus.modules.optim.FiniteGuard`: NaN/inf gradients or weights stop the fit (exit 2,
  one line naming the step) and never reach a checkpoint.
* :class:`PurgeResumedSteps`: a resumed fit hides what the killed process logged after its
  checkpoint (TensorBoard's ``purge_step``), so no step appears twice.
* :class:`AtomicCheckpointIO`: a checkpoint is written to a temp file beside its target and
  renamed over it, so a kill leaves the old checkpoint whole and no checkpoint-sized file in
  ``$TMPDIR`` (Lightning's default buffers it in memory, then writes it there first).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mplus.modules.optim import FiniteGuard, TrainingDiverged

log = logging.getLogger(__name__)

# what the summary of a stopped run says (the keys a finished run does not have)
STATUS_KEYS = (
    "status",
    "status/stage",
    "status/step",
    "status/signal",
    "status/checkpoint",
    "status/error",
)


def fault_callbacks(stage: str, summary=None) -> list[L.Callback]:
    """The callbacks every stage's trainer gets (before the stage's own, so a divergence is
    caught before a checkpoint callback runs)."""
    return [FiniteGuard(stage), StopOnSignal(stage, summary), PurgeResumedSteps()]


def _steps_done(trainer, pl_module) -> int:
    """Completed steps: PPO steps for PPO, optimiser steps otherwise."""
    return getattr(pl_module, "ppo_step", trainer.global_step)


class StopOnSignal(L.Callback):
    """Checkpoint, summary and a non-zero exit on SIGTERM / SIGINT / SIGUSR1 (see the module doc).

    A second SIGINT stops at once (``KeyboardInterrupt``: no checkpoint). A signal that arrives
    before the fit starts or after it ends gets the default behaviour (the process dies by it).
    """

    def __init__(self, stage: str, summary=None):
        self.stage, self.summary = stage, summary
        self.signum: int | None = None  # the first stop signal besides Lightning's SIGTERM
        self._saved: tuple[int, float] | None = None  # (global step, time) of the last save

    # ------------------------------------------------------------ signals

    def on_train_start(self, trainer, pl_module) -> None:
        # After Lightning registered its handlers (SIGTERM; SIGUSR1 under SLURM auto-requeue);
        # it restores every handler, ours included, when the fit ends.
        if self.summary is not None:  # a resumed run is running again
            for k in STATUS_KEYS:
                self.summary.pop(k, None)
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGINT, self._handler(trainer))
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, self._handler(trainer))

    def _handler(self, trainer):
        def handle(signum, frame):
            if signum == signal.SIGINT and self.signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
            if self.signum is None:
                self.signum = signum
            log.warning(
                "Received %s: stopping after the current step (checkpoint, then exit %d)%s",
                signal.Signals(signum).name,
                128 + signum,
                "; Ctrl-C again stops at once, without one" if signum == signal.SIGINT else "",
            )
            # Lightning's flag: its loops raise SIGTERMException at the next batch boundary
            # (broadcast from rank 0 to every rank first)
            trainer._signal_connector.received_sigterm = True

        return handle

    # ------------------------------------------------------------ the stop

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._saved = (trainer.global_step, time.time())  # the file is written after this hook

    def _saved_here(self, trainer, path: Path) -> bool:
        """``path`` already holds this very point (e.g. PPOCheckpoint saved this step)."""
        if self._saved is None or self._saved[0] != trainer.global_step:
            return False
        return path.exists() and path.stat().st_mtime >= self._saved[1]

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self._interrupted(trainer, pl_module, exception)
        elif isinstance(exception, TrainingDiverged):  # status/step: the step that diverged
            self._mark("diverged", trainer, pl_module, step=exception.step, error=str(exception))
        elif isinstance(exception, Exception):
            self._mark(
                "failed", trainer, pl_module, error=f"{type(exception).__name__}: {exception}"
            )

    def _interrupted(self, trainer, pl_module, exception: SystemExit) -> None:
        """Lightning raised SIGTERMException at a step boundary: every step so far is complete."""
        signum = self.signum or signal.SIGTERM
        name = signal.Signals(signum).name
        path = Path(trainer.default_root_dir) / "checkpoints" / self.stage / "last.ckpt"
        steps = _steps_done(trainer, pl_module)
        saved = str(path)
        if not self._saved_here(trainer, path):
            try:
                trainer.save_checkpoint(saved, weights_only=False)
            except TrainingDiverged as e:  # the weights went bad: keep the checkpoint there is
                saved = None
                log.error("%s", e)
        # SIGTERMException is SystemExit(None): exit status 0, which tells a scheduler or a sweep
        # that the run succeeded. 128 + signal is what a process killed by it reports.
        exception.code = 128 + signum
        self._mark("interrupted", trainer, pl_module, signal=name, checkpoint=saved)
        unit = f"{self.stage.upper()} steps" if hasattr(pl_module, "ppo_step") else "steps"
        log.warning(
            "%s: stopped by %s after %d %s; %s; exit status %d",
            self.stage,
            name,
            steps,
            unit,
            f"resume with ckpt_path={saved}" if saved else "no checkpoint saved",
            exception.code,
        )

    def _mark(self, status: str, trainer, pl_module, step: int | None = None, **extra) -> None:
        """``status/step``: completed steps (PPO steps, else optimiser steps), unless given."""
        if self.summary is None:
            return
        self.summary.update(
            {
                "status": status,
                "status/stage": self.stage,
                "status/step": _steps_done(trainer, pl_module) if step is None else step,
            }
        )
        self.summary.update({f"status/{k}": v for k, v in extra.items() if v is not None})
        self.summary.save()


class PurgeResumedSteps(L.Callback):
    """On resume, TensorBoard drops what the killed process logged after its checkpoint.

    The killed process logged steps past its last checkpoint that the resumed one logs again.
    The writer's ``purge_step`` (a ``SessionLog.START`` event at that step, in a new event file)
    makes TensorBoard discard every earlier-written event at or after it. The step is the first
    one the resumed fit logs: the module's ``next_log_step`` (PPO: its own step counter) or the
    restored optimiser step (Lightning logs batch ``k`` at step ``k``). Each stage logs into its
    own TensorBoard run (``tb/<stage>``), so the purge never reaches an earlier stage's curves.
    """

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.ckpt_path or not trainer.is_global_zero:
            return
        step = getattr(pl_module, "next_log_step", trainer.global_step)
        for logger in trainer.loggers:
            writer = getattr(logger, "experiment", None)
            if not (hasattr(writer, "purge_step") and hasattr(writer, "_get_file_writer")):
                continue
            writer.close()  # the next event file starts with the purge (torch or tensorboardX)
            writer.purge_step = step
            file_writer = writer._get_file_writer()  # written now, whatever is logged next
            # TensorBoard's server-side loader (--load_fast=false) takes a run's first START as
            # its beginning, not a restart: a second one purges there too (the other readers
            # purge on each; RustBoard keeps the last value logged at a step)
            proto = sys.modules[type(writer).__module__]  # the writer's own Event protos
            file_writer.add_event(
                proto.Event(step=step, session_log=proto.SessionLog(status=proto.SessionLog.START))
            )
            file_writer.flush()
            log.info(
                "Resumed at step %d: TensorBoard drops what the interrupted process logged "
                "at steps >= %d",
                step,
                step,
            )


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` straight into ``<target>.tmp-<pid>`` beside the target, fsync, rename.

    Lightning's default serialises the whole checkpoint into memory, then (fsspec transaction)
    writes it to a temp file in ``$TMPDIR`` and moves it over: a copy across filesystems, and a
    kill mid-write leaves a checkpoint-sized file in ``$TMPDIR``. Here a kill leaves at most the
    temp file beside the checkpoint, removed by the next save; the target is either the old or
    the new checkpoint. Remote paths (``s3://`` ...) keep Lightning's way.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temp_files(target)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        try:  # the rename itself survives a power cut once the directory is synced
            fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass


def _remove_stale_temp_files(target: Path) -> None:
    """Temp files of ``target`` left by killed processes (their pid no longer runs)."""
    for f in target.parent.glob(f"{target.name}.tmp-*"):
        pid = f.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            f.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
