"""DPO baseline: the policy learns from preference pairs directly, against a frozen reference.

Batches come from :class:`mplus.data.collate.PairCollator` (chosen rows then rejected rows, each
prompt + response + EOS, right-padded). The loss is :func:`mplus.algo.dpo_loss`; this module only
computes sequence log-probs and wires them in. The reference is either a frozen copy of the base
(``ref_model``), or, with a LoRA policy, the policy with its adapter disabled (``ref_model=None``).
Its log-probs are taken from ``batch["ref_logps"]`` when precomputed, else computed per batch.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from mplus.algo import dpo_loss, sequence_logps
from mplus.distributed import gather_objects
from mplus.models.logprobs import label_mask, reference_context, token_logprobs
from mplus.models.prefix import shared_prefix_logps, shares_prefix
from mplus.modules.optim import adamw_with_warmup, check_finite
from mplus.modules.sharding import ShardedModule

FROZEN_PREFIXES = ("ref_model.",)


def response_logps(model, input_ids: Tensor, attention_mask: Tensor, prompt_lens: Tensor) -> Tensor:
    """Summed log-prob of each row's response tokens (everything after the prompt, EOS included).

    Args:
        model: Causal LM whose output has ``.logits`` (N, T, V).
        input_ids: (N, T) prompt + response rows, right-padded.
        attention_mask: (N, T), 1 on real tokens.
        prompt_lens: (N,) prompt length of each row (``prompt_lens.repeat(2)`` for a
            ``PairCollator`` batch).

    Returns:
        (N,) float32 sums over non-pad tokens at positions >= the row's prompt length.

    The LM head and the log-softmax run from the shortest prompt's last token on only (TRL's
    ``use_logits_to_keep``): no label before it is scored, so the prompt columns that every row
    shares are never projected onto the vocabulary.
    """
    start = max(int(prompt_lens.min()) - 1, 0) if prompt_lens.numel() else 0
    logprobs, _ = token_logprobs(model, input_ids, attention_mask, start=start)
    return sequence_logps(logprobs, label_mask(attention_mask, prompt_lens)[:, start:])


def pair_logps(model, batch: dict, shared_prefix: bool = False) -> Tensor:
    """(B, 2) ``[chosen, rejected]`` response log-probs of a ``PairCollator`` batch;
    ``shared_prefix``: each pair's prompt run once where the model allows it
    (:mod:`mplus.models.prefix`; ``algo.shared_prefix``)."""
    ids, mask, lens = batch["input_ids"], batch["attention_mask"], batch["prompt_lens"]
    if shared_prefix and shares_prefix(model, ids, lens):
        lp = shared_prefix_logps(model, ids, mask, lens)
    else:
        lp = response_logps(model, ids, mask, lens.repeat(2))  # (2B,): chosen rows, rejected
    return lp.view(2, -1).T


def _check_in_order(loader) -> None:
    # Precomputed log-probs are matched to items by position, so a shuffled or length-grouped
    # loader would silently pair them with the wrong items.
    if not isinstance(loader, torch.utils.data.DataLoader):
        return
    sequential = isinstance(loader.sampler, torch.utils.data.SequentialSampler)
    plain_batches = type(loader.batch_sampler) is torch.utils.data.BatchSampler
    if not (sequential and plain_batches):
        raise ValueError(
            "precompute_reference_logps needs a loader in dataset order "
            "(shuffle=False, no custom sampler or batch_sampler)"
        )


@torch.no_grad()
def precompute_reference_logps(ref_model, loader, shared_prefix: bool = False) -> Tensor:
    """Reference log-probs of every pair, in dataset order.

    For a LoRA policy, pass the model and run inside the context that
    :func:`mplus.models.logprobs.reference_context` returns (the adapter disabled).

    Args:
        ref_model: Causal LM; run in eval mode (its mode is restored afterwards).
        loader: Unshuffled iterable of ``PairCollator`` batches (a shuffled ``DataLoader`` is
            refused).

    Returns:
        (N, 2) float32 ``[chosen, rejected]`` on the CPU, row ``i`` for dataset item ``i``.
    """
    _check_in_order(loader)
    device = next(ref_model.parameters()).device
    was_training = ref_model.training
    ref_model.eval()
    out = []
    try:
        for batch in loader:
            batch = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "prompt_lens")}
            out.append(pair_logps(ref_model, batch, shared_prefix).float().cpu())
    finally:
        ref_model.train(was_training)
    return torch.cat(out)


def attach_reference_logps(dataset, ref_logps: Tensor) -> None:
    """Store row ``i`` of ``ref_logps`` (N, 2) as ``dataset[i]["ref_logps"]`` for PairCollator.

    ``dataset[i]`` must return the stored item dict itself (as ``PairDataset`` does).
    """
    if len(dataset) != ref_logps.shape[0]:
        raise ValueError(f"{ref_logps.shape[0]} reference rows for {len(dataset)} items")
    for i, (c, r) in enumerate(ref_logps.tolist()):
        dataset[i]["ref_logps"] = (c, r)


class DPOModule(ShardedModule, L.LightningModule):
    """Wires a causal-LM policy and its reference to the DPO loss.

    Args:
        policy: Causal LM to train; a peft model when ``ref_model`` is None.
        ref_model: Frozen reference (a copy of the base), or None to use the peft policy with its
            adapter disabled. Not saved in checkpoints: rebuild it from its path on resume.
        cfg: Has ``beta, loss_type, label_smoothing, lr, weight_decay, warmup_ratio, max_steps``.
    """

    def __init__(self, policy, ref_model, cfg):
        super().__init__()
        self.strict_loading = False  # the frozen reference is dropped from checkpoints
        self.policy, self.ref_model, self.cfg = policy, ref_model, cfg
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
        self._val: list[Tensor] = []

    def models_to_shard(self):
        return [(self.policy, True), (self.ref_model, False)]

    def train(self, mode: bool = True):
        # Lightning switches the whole module to train mode; the reference must stay in eval
        # (no dropout), or its log-probs would be noisy.
        super().train(mode)
        if self.ref_model is not None:
            self.ref_model.eval()
        return self

    def reference_logps(self, batch: dict) -> Tensor:
        """(B, 2) reference ``[chosen, rejected]`` log-probs: precomputed, or computed now."""
        if "ref_logps" in batch:
            return batch["ref_logps"].float()
        ref, ctx = reference_context(self.policy, self.ref_model)
        if ref is None:
            raise ValueError("DPO needs a reference: ref_model, or a peft policy (LoRA)")
        with torch.no_grad(), ctx:
            return pair_logps(ref, batch, self.cfg.shared_prefix)

    def _loss(self, batch: dict):
        ref = self.reference_logps(batch)  # (B, 2)
        pol = pair_logps(self.policy, batch, self.cfg.shared_prefix)  # (B, 2)
        c = self.cfg
        out = dpo_loss(
            pol[:, 0],
            pol[:, 1],
            ref[:, 0],
            ref[:, 1],
            beta=c.beta,
            loss_type=c.loss_type,
            label_smoothing=c.label_smoothing,
        )
        return out, pol, ref

    def training_step(self, batch, batch_idx):
        out, pol, _ = self._loss(batch)
        check_finite(out.loss, "dpo/loss", self.global_step)
        b = pol.shape[0]
        self.log("dpo/loss", out.loss, prog_bar=True, batch_size=b)
        self.log_dict(
            {
                "dpo/reward_accuracy": out.reward_accuracy,
                "dpo/margin": out.margin,
                "dpo/chosen_reward": out.chosen_reward,
                "dpo/rejected_reward": out.rejected_reward,
                "dpo/chosen_logps": pol[:, 0].detach().mean(),
                "dpo/rejected_logps": pol[:, 1].detach().mean(),
            },
            batch_size=b,
        )
        return out.loss

    def validation_step(self, batch, batch_idx):
        _, pol, ref = self._loss(batch)
        self._val.append(torch.cat([pol, ref], dim=1).detach())  # (B, 4)

    def on_validation_epoch_end(self):
        if not self._val:
            return
        v = torch.cat(self._val)  # (N, 4): policy chosen/rejected, reference chosen/rejected
        self._val.clear()
        v = torch.cat([x.to(v.device) for x in gather_objects(v.cpu())])  # every rank's pairs
        c = self.cfg
        out = dpo_loss(
            v[:, 0],
            v[:, 1],
            v[:, 2],
            v[:, 3],
            beta=c.beta,
            loss_type=c.loss_type,
            label_smoothing=c.label_smoothing,
        )
        self.log_dict(
            {
                "dpo/val_loss": out.loss,
                "dpo/val_reward_accuracy": out.reward_accuracy,
                "dpo/val_margin": out.margin,
                "dpo/val_chosen_reward": out.chosen_reward,
                "dpo/val_rejected_reward": out.rejected_reward,
            },
            sync_dist=True,  # equal on every rank already (gathered): quiets the warning
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.drop_frozen(checkpoint, FROZEN_PREFIXES)

    def configure_optimizers(self):
        c = self.cfg
        opt, sched = adamw_with_warmup(
            self.policy.parameters(),
            lr=c.lr,
            weight_decay=c.weight_decay,
            warmup_steps=int(c.warmup_ratio * c.max_steps),
            total_steps=c.max_steps,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
