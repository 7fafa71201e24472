"""The pieces of the RL module outside :class:`mplus.modules.ppo.PPOModule`: the rollout batch
(:class:`Experience`), per-step seeding, and the checkpoint callback."""

from __future__ import annotations

import random
from dataclasses import dataclass

import lightning as L
import torch


@dataclass
class Experience:
    """One rollout batch with everything the update needs; per-token tensors are (B, Tr)."""

    seq: torch.Tensor  # (B, Tq+Tr): the query, then the response ids
    attn: torch.Tensor  # (B, Tq+Tr)
    pos: torch.Tensor  # (B, Tq+Tr)
    q_len: int
    mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor | None  # None without a critic
    advantages: torch.Tensor
    returns: torch.Tensor
    group_ids: torch.Tensor  # (B,) the prompt each row was sampled for
    # The first minibatch's forward, graph kept, when it is the whole batch (PPOModule.
    # fuses_first_minibatch): policy log-probs (B, Tr), their logits, the values (B, Tr) or None
    first_pass: tuple | None = None


def _seed_all(seed: int) -> None:
    """Each RL step reseeds from (run seed, step): a resumed run samples what it would have."""
    seed %= 2**31
    random.seed(seed)
    torch.manual_seed(seed)


class PPOCheckpoint(L.Callback):
    """Saves ``last.ckpt`` every ``every`` RL steps and at the last one.

    Not ``ModelCheckpoint(every_n_train_steps=...)``: with manual optimisation ``global_step``
    counts optimiser steps (one per trained model, several minibatches per RL step).
    """

    def __init__(self, dirpath, every: int):
        self.dirpath, self.every = dirpath, every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.stepped and (
            pl_module.ppo_step % self.every == 0 or pl_module.ppo_step == pl_module.cfg.steps
        ):
            trainer.save_checkpoint(f"{self.dirpath}/last.ckpt", weights_only=False)
