"""Tokenisation and padding for preference pairs (reward model, DPO) and SFT demonstrations."""

from __future__ import annotations

import torch

from mplus.data.types import PreferencePair
from mplus.distributed import shard_of


class _TokenisedPairs(torch.utils.data.Dataset):
    """Items tokenised once, up front, by :func:`mplus.models.tokenizer.encode_pairs`."""

    items: list[dict]

    def __init__(self, pairs: list[PreferencePair], tokenizer):
        self.pairs = pairs
        self._tok = tokenizer

    def encode(self, responses: list[str]) -> tuple[list[list[int]], list[int]]:
        from mplus.models.tokenizer import encode_pairs

        return encode_pairs(self._tok, [p.prompt for p in self.pairs], responses)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class PairDataset(_TokenisedPairs):
    """``prompt + chosen`` and ``prompt + rejected`` (each + EOS), tokenised once, up front."""

    def __init__(self, pairs: list[PreferencePair], tokenizer):
        super().__init__(pairs, tokenizer)
        chosen, lens = self.encode([p.chosen for p in pairs])
        rejected, _ = self.encode([p.rejected for p in pairs])
        self.items = [
            {"chosen": c, "rejected": r, "prompt_len": n}
            for c, r, n in zip(chosen, rejected, lens, strict=True)
        ]


def pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists. Returns ``input_ids`` and ``attention_mask``, each (N, T_max)."""
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


class PairCollator:
    """Stacks chosen rows then rejected rows: ``input_ids``/``attention_mask`` (2B, T).

    Also returns ``prompt_lens`` (B,) so response-only log-probs (DPO) can be masked, and
    ``ref_logps`` (B, 2) float32 ``[chosen, rejected]`` when every item carries a precomputed
    ``"ref_logps"`` pair (DPO with a precomputed reference).
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        ids, mask = pad_right(
            [b["chosen"] for b in batch] + [b["rejected"] for b in batch], self.pad_id
        )
        out = {
            "input_ids": ids,
            "attention_mask": mask,
            "prompt_lens": torch.tensor([b["prompt_len"] for b in batch], dtype=torch.long),
        }
        if all("ref_logps" in b for b in batch):
            out["ref_logps"] = torch.tensor(
                [list(b["ref_logps"]) for b in batch], dtype=torch.float32
            )
        return out


class SFTDataset(_TokenisedPairs):
    """``prompt + chosen`` + EOS, tokenised once, up front, for supervised fine-tuning.

    Items: ``{"input_ids": list[int], "prompt_len": int}``, as in :class:`PairDataset`.
    """

    def __init__(self, pairs: list[PreferencePair], tokenizer):
        super().__init__(pairs, tokenizer)
        full, lens = self.encode([p.chosen for p in pairs])
        self.items = [{"input_ids": f, "prompt_len": n} for f, n in zip(full, lens, strict=True)]


class SFTCollator:
    """Right-pads SFT items: ``input_ids``/``attention_mask``/``labels``, each (B, T).

    ``labels`` is ``input_ids`` with -100 on prompt tokens and padding, so the causal-LM loss
    covers the response and its EOS only.
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        ids, mask = pad_right([b["input_ids"] for b in batch], self.pad_id)
        labels = ids.masked_fill(mask == 0, -100)
        for i, b in enumerate(batch):
            labels[i, : b["prompt_len"]] = -100
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class SequentialBatchSampler(torch.utils.data.Sampler):
    """Batches 0..B-1, B..2B-1, ... in order; under data parallelism each rank takes its slice."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size

    def __iter__(self):
        for i in range(0, self.n, self.batch_size):
            part = shard_of(list(range(i, min(i + self.batch_size, self.n))), skip_short=True)
            if part:
                yield part

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size


class LengthGroupedBatchSampler(torch.utils.data.Sampler):
    """Shuffled batches of similar-length items, so little compute goes to padding.

    Like transformers' ``group_by_length``: shuffle, cut into mega-batches of ``group`` batches,
    sort each mega-batch by length, split into batches, then shuffle the batch order. An epoch
    visits every item once; the order is a function of ``seed`` and the epoch. ``batch_size`` is
    the global batch: under data parallelism every rank draws the same batches and takes its
    slice, so N ranks see exactly the batches one process would.

    Iterated on its own, each pass is the next epoch. A :class:`ResumableDataLoader` drives it
    instead: it pins the epoch and the first batch of each pass (:meth:`pin`), so a resumed run
    continues mid-epoch at the batch it stopped at.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, group: int = 16):
        self.lengths, self.batch_size, self.seed, self.group = lengths, batch_size, seed, group
        self.epoch = 0
        self._pinned: tuple[int, int] | None = None

    def pin(self, epoch: int, start: int = 0) -> None:
        """Every later pass draws ``epoch`` from its batch ``start`` on (a torch DataLoader with
        workers iterates the sampler twice per pass, so the pass cannot count epochs itself)."""
        self._pinned = (epoch, start)

    def batches(self, epoch: int) -> list[list[int]]:
        """The global batches of ``epoch``, in order."""
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        idx = torch.randperm(len(self.lengths), generator=g).tolist()
        mega = self.batch_size * self.group
        batches = []
        for i in range(0, len(idx), mega):
            chunk = sorted(idx[i : i + mega], key=lambda j: self.lengths[j], reverse=True)
            batches += [
                chunk[k : k + self.batch_size] for k in range(0, len(chunk), self.batch_size)
            ]
        return [batches[b] for b in torch.randperm(len(batches), generator=g).tolist()]

    def __iter__(self):
        if self._pinned is None:
            epoch, start = self.epoch, 0
            self.epoch += 1
        else:
            epoch, start = self._pinned
        parts = [shard_of(b, skip_short=True) for b in self.batches(epoch)[start:]]
        return iter([p for p in parts if p])

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


class ResumableDataLoader(torch.utils.data.DataLoader):
    """A DataLoader over a :class:`LengthGroupedBatchSampler` whose position checkpoints hold.

    Lightning 2.6 saves the ``state_dict()`` of every training loader that has one (the
    ``_Stateful`` protocol: ``FitLoop.on_save_checkpoint`` -> ``CombinedLoader._state_dicts``,
    under ``loops.fit_loop.state_dict.combined_loader``) and, on resume, calls
    ``load_state_dict`` before it creates the first iterator (``FitLoop.setup_data``). A plain
    DataLoader has no state, so Lightning restarts the epoch at its first batch.

    The state is the epoch being drawn and how many of its batches were *handed out* (counted
    here, not in the sampler: workers prefetch ahead of training). Each ``iter()`` is the next
    epoch; after a resume the first one draws the saved epoch from the first batch not handed
    out, and Lightning counts its batches on from the restored progress.
    """

    def __init__(self, dataset, batch_sampler: LengthGroupedBatchSampler, **kwargs):
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._next = (0, 0)  # (epoch, first batch) of the next iter()
        self._epoch, self._served = 0, 0  # the pass in progress

    def __iter__(self):
        (epoch, start), self._next = self._next, (self._next[0] + 1, 0)
        self._epoch, self._served = epoch, start
        self.batch_sampler.pin(epoch, start)
        return self._counted(super().__iter__())

    def _counted(self, it):
        for batch in it:
            self._served += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "batches": self._served}

    def load_state_dict(self, state: dict) -> None:
        # Saved after an epoch's last batch, the first pass is empty: Lightning ends that epoch
        # (its hooks, as the killed run would have) and the next iter() starts the next one.
        self._next = (int(state["epoch"]), int(state["batches"]))
