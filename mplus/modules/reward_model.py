"""Reward-model stage: Bradley-Terry on preference pairs, scalar head at each row's EOS."""

from __future__ import annotations

import lightning as L
import torch

from mplus.algo import bradley_terry_loss
from mplus.distributed import gather_objects, is_distributed, token_share
from mplus.models.prefix import shared_prefix_scores, shares_prefix
from mplus.models.reward import sequence_scores
from mplus.modules.optim import adamw_with_warmup, check_finite
from mplus.modules.sharding import ShardedModule


class RewardModelModule(ShardedModule, L.LightningModule):
    """Wires a sequence-classification model (``num_labels=1``) to the pairwise loss.

    Batches come from :class:`mplus.data.collate.PairCollator`: chosen rows then rejected rows.
    """

    def __init__(self, model, cfg, prefix: str = "rm"):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.prefix = prefix  # its metrics: <prefix>/train_loss, ... (rm_<name>/ for several)
        self._val: list[torch.Tensor] = []

    def models_to_shard(self):
        return [(self.model, True)]

    def rewards(self, input_ids, attention_mask) -> torch.Tensor:
        """(N, T) -> (N,) float32 scores."""
        return sequence_scores(self.model, input_ids, attention_mask)

    def _pair_rewards(self, batch):
        ids, mask, lens = batch["input_ids"], batch["attention_mask"], batch["prompt_lens"]
        if self.cfg.shared_prefix and shares_prefix(self.model, ids, lens):
            pad = getattr(self.model.config, "pad_token_id", None) or 0
            r = shared_prefix_scores(self.model, ids, mask, lens, pad)
        else:
            r = self.rewards(ids, mask)
        b = r.shape[0] // 2
        return r[:b], r[b:]

    def training_step(self, batch, batch_idx):
        rc, rr = self._pair_rewards(batch)
        out = bradley_terry_loss(rc, rr, margin=self.cfg.margin or None)
        check_finite(out.loss, f"{self.prefix}/train_loss", self.global_step)
        sync = is_distributed()
        self.log(f"{self.prefix}/train_loss", out.loss, prog_bar=True, sync_dist=sync)
        self.log(f"{self.prefix}/train_accuracy", out.accuracy, sync_dist=sync)
        # this rank's share of the mean over the global batch (ranks may hold unequal halves)
        return out.loss * token_share(torch.ones_like(rc))

    def validation_step(self, batch, batch_idx):
        rc, rr = self._pair_rewards(batch)
        self._val.append(torch.stack([rc, rr], dim=1).detach())

    def on_validation_epoch_end(self):
        if not self._val:
            return
        r = torch.cat(self._val)  # (N, 2): chosen, rejected
        self._val.clear()
        r = torch.cat([x.to(r.device) for x in gather_objects(r.cpu())])  # every rank's pairs
        out = bradley_terry_loss(r[:, 0], r[:, 1])
        self.log_dict(
            {
                f"{self.prefix}/val_loss": out.loss,
                f"{self.prefix}/val_accuracy": out.accuracy,
                f"{self.prefix}/reward_mean": r.mean(),
                f"{self.prefix}/reward_std": r.std(),
                f"{self.prefix}/margin": (r[:, 0] - r[:, 1]).mean(),
            },
            prog_bar=False,
            sync_dist=True,
        )  # equal on every rank already: quiets the warning

    def configure_optimizers(self):
        c = self.cfg
        opt, sched = adamw_with_warmup(
            self.model.parameters(),
            lr=c.lr,
            weight_decay=c.weight_decay,
            warmup_steps=int(c.warmup_ratio * c.max_steps),
            total_steps=c.max_steps,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
