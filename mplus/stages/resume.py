"""Seeds and resuming: each stage's seed, the checkpoint a stage resumes from, and the global
RNG states every checkpoint carries."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from mplus import rundir
from mplus.config import TrainConfig


def stage_seed(seed: int, stage: str) -> int:
    """The global seed of ``stage``: a function of the run seed and the stage name only, so a
    stage starts from the same RNG state whatever ran before it in the process (a base
    pretrained on a cold cache, a reward-model stage reused from an earlier try). sha256, not
    ``hash()``, which is salted per process."""
    digest = hashlib.sha256(f"mplus.stage|{seed}|{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def seed_stage(cfg: TrainConfig, stage: str) -> None:
    import lightning as L

    L.seed_everything(stage_seed(cfg.seed, stage), workers=True, verbose=False)


def stage_checkpoint(cfg: TrainConfig, stage: str) -> str | None:
    """The checkpoint ``stage`` resumes from, or None to start it fresh.

    ``ckpt_path=last``: the stage's own ``<run dir>/checkpoints/<stage>/last.ckpt`` when there
    is one, so one command resumes a whole run at whichever stage it stopped in. An explicit
    file: the stage whose ``checkpoints/<stage>/`` folder holds it, else the run's last stage
    (``algo.name``), as before.
    """
    path = cfg.ckpt_path
    if not path:
        return None
    if path == "last":
        last = rundir.last_checkpoint(cfg.run_dir, stage)
        return str(last) if last.exists() else None
    folder = Path(path).parent
    owner = folder.name if folder.parent.name == rundir.CHECKPOINTS else None
    return path if stage == (owner or cfg.algo.name) else None


def _rng_states() -> dict:
    """The global RNG states in types a ``weights_only`` checkpoint load accepts."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def _set_rng_states(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def rng_state_callback():
    """A callback that saves the global RNG states (torch, CUDA, numpy, Python) in every
    checkpoint and restores them when the fit resumes: Lightning 2.6 saves none, so dropout,
    sampling and any other draw would continue from the resumed process's fresh seed."""
    import lightning as L

    class RNGStateCheckpoint(L.Callback):
        state_key = "mplus_rng"

        def __init__(self):
            self._loaded = None

        def state_dict(self) -> dict:
            return _rng_states()

        def load_state_dict(self, state_dict: dict) -> None:
            self._loaded = state_dict

        def on_train_start(self, trainer, pl_module) -> None:
            # the last hook before the first resumed batch: setup draws nothing after it
            if self._loaded is not None:
                _set_rng_states(self._loaded)
                self._loaded = None

    return RNGStateCheckpoint()
