"""Reward-model stage: Bradley-Terry on preference pairs, scalar head on the last non-pad token."""

from __future__ import annotations

import lightning as L
import torch

from mplus.algo import bradley_terry_loss
from mplus.modules.optim import adamw_with_warmup, check_finite


class RewardModelModule(L.LightningModule):
    """Wires a sequence-classification model (``num_labels=1``) to the pairwise loss.

    Batches come from :class:`mplus.data.collate.PairCollator`: chosen rows then rejected rows.
    """

    def __init__(self, model, cfg):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self._val: list[torch.Tensor] = []

    def rewards(self, input_ids, attention_mask) -> torch.Tensor:
        """(N, T) -> (N,) float32 scores."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()

    def _pair_rewards(self, batch):
        r = self.rewards(batch["input_ids"], batch["attention_mask"])
        b = r.shape[0] // 2
        return r[:b], r[b:]

    def training_step(self, batch, batch_idx):
        rc, rr = self._pair_rewards(batch)
        out = bradley_terry_loss(rc, rr, margin=self.cfg.margin or None)
        check_finite(out.loss, "rm/train_loss", self.global_step)
        self.log("rm/train_loss", out.loss, prog_bar=True)
        self.log("rm/train_accuracy", out.accuracy)
        return out.loss

    def validation_step(self, batch, batch_idx):
        rc, rr = self._pair_rewards(batch)
        self._val.append(torch.stack([rc, rr], dim=1).detach())

    def on_validation_epoch_end(self):
        if not self._val:
            return
        r = torch.cat(self._val)  # (N, 2): chosen, rejected
        self._val.clear()
        out = bradley_terry_loss(r[:, 0], r[:, 1])
        self.log_dict({
            "rm/val_loss": out.loss,
            "rm/val_accuracy": out.accuracy,
            "rm/reward_mean": r.mean(),
            "rm/reward_std": r.std(),
            "rm/margin": (r[:, 0] - r[:, 1]).mean(),
        }, prog_bar=False)

    def configure_optimizers(self):
        c = self.cfg
        opt, sched = adamw_with_warmup(
            self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay,
            warmup_steps=int(c.warmup_ratio * c.max_steps), total_steps=c.max_steps,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
