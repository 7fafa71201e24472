"""Tokenisation and padding for preference pairs (reward model, DPO)."""

from __future__ import annotations

import torch

from mplus.data.types import PreferencePair


class PairDataset(torch.utils.data.Dataset):
    """Tokenises ``prompt + chosen`` and ``prompt + rejected`` (each + EOS) once, up front."""

    def __init__(self, pairs: list[PreferencePair], tokenizer):
        self.pairs = pairs
        enc = lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]  # noqa: E731
        eos = tokenizer.eos_token_id
        prompts = enc([p.prompt for p in pairs])
        chosen = enc([p.prompt + p.chosen for p in pairs])
        rejected = enc([p.prompt + p.rejected for p in pairs])
        self.items = [
            {"chosen": c + [eos], "rejected": r + [eos], "prompt_len": len(pr)}
            for pr, c, r in zip(prompts, chosen, rejected, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


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

    Also returns ``prompt_lens`` (B,) so response-only log-probs (DPO) can be masked.
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        ids, mask = pad_right([b["chosen"] for b in batch] + [b["rejected"] for b in batch],
                              self.pad_id)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "prompt_lens": torch.tensor([b["prompt_len"] for b in batch], dtype=torch.long),
        }


class LengthGroupedBatchSampler(torch.utils.data.Sampler):
    """Shuffled batches of similar-length items, so little compute goes to padding.

    Like transformers' ``group_by_length``: shuffle, cut into mega-batches of ``group`` batches,
    sort each mega-batch by length, split into batches, then shuffle the batch order. An epoch
    visits every item once; the order is a function of ``seed`` and the epoch.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, group: int = 16):
        self.lengths, self.batch_size, self.seed, self.group = lengths, batch_size, seed, group
        self.epoch = 0

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        self.epoch += 1
        idx = torch.randperm(len(self.lengths), generator=g).tolist()
        mega = self.batch_size * self.group
        batches = []
        for i in range(0, len(idx), mega):
            chunk = sorted(idx[i : i + mega], key=lambda j: self.lengths[j], reverse=True)
            batches += [chunk[k : k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        for b in torch.randperm(len(batches), generator=g).tolist():
            yield batches[b]

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size
