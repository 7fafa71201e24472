"""Causal-LM training (base pretraining of the tiny model; SFT later): next-token loss on labels."""

from __future__ import annotations

import lightning as L
import torch

from mplus.modules.optim import adamw_with_warmup, check_finite
from mplus.modules.sharding import ShardedModule


class CausalLMModule(ShardedModule, L.LightningModule):
    """Thin wrapper: the model computes the shifted cross-entropy on ``labels`` (-100 ignored).

    Batches: ``input_ids``/``attention_mask``/``labels``, each (B, T).
    """

    def __init__(
        self,
        model,
        *,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        total_steps: int,
        prefix: str = "lm",
    ):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.prefix = prefix

    def models_to_shard(self):
        return [(self.model, True)]

    def training_step(self, batch, batch_idx):
        loss = self.model(**batch).loss
        check_finite(loss, f"{self.prefix}/train_loss", self.global_step)
        self.log(f"{self.prefix}/train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log(f"{self.prefix}/val_loss", self.model(**batch).loss, prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        opt, sched = adamw_with_warmup(
            self.model.parameters(),
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def pack_documents(token_lists: list[list[int]], eos_id: int, seq_len: int) -> torch.Tensor:
    """Concatenate documents (each followed by EOS) and cut into rows of ``seq_len``.

    Returns:
        (N, seq_len) LongTensor; the incomplete tail is dropped.
    """
    flat: list[int] = []
    for ids in token_lists:
        flat.extend(ids)
        flat.append(eos_id)
    n = len(flat) // seq_len
    return torch.tensor(flat[: n * seq_len], dtype=torch.long).view(n, seq_len)
