"""Sampling that does not depend on how the batch is split: each response draws from a random
stream of its own, keyed by the caller (``algo.generation.seed_per_sample``).

``torch.multinomial`` over a batch consumes one shared random stream row after row, so the same
prompt sampled in another batch (another process's slice under data parallelism, another batch
size) gets another response. Here every row has its own ``torch.Generator`` seeded from its key,
and a token is sampled by the Gumbel-max trick: ``argmax(log p + G)`` with ``G`` standard Gumbel
noise is an exact sample of ``p``. It runs as a logits processor under ``generate``'s greedy
search, so the cache, stop strings and padding are ``generate``'s own.
"""

from __future__ import annotations

import hashlib

import torch
from transformers import LogitsProcessor, TopKLogitsWarper, TopPLogitsWarper


def sample_key(*parts: int | str) -> int:
    """A 63-bit seed from ``parts`` (e.g. run seed, step, prompt id, sample index)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class KeyedSampler(LogitsProcessor):
    """Turns greedy search into sampling at ``temperature`` (with top-k / top-p) where row ``i``
    draws its noise from a generator seeded with ``keys[i]``.

    Row ``i``'s ``t``-th token depends only on its own key and its own prefix: its generator is
    advanced once per generated position whatever the other rows do.
    """

    def __init__(self, keys: list[int], temperature: float, top_p: float = 1.0, top_k: int = 0):
        if not temperature > 0:
            raise ValueError(f"keyed sampling needs a temperature > 0, got {temperature}")
        self.generators = [torch.Generator().manual_seed(k) for k in keys]
        self.temperature = temperature
        self.warpers = []
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{len(self.generators)} keys for a batch of {scores.shape[0]} rows")
        scores = scores.float() / self.temperature
        for w in self.warpers:
            scores = w(input_ids, scores)
        logp = torch.log_softmax(scores, dim=-1)
        u = torch.stack(
            [torch.rand(scores.shape[1], generator=g, dtype=torch.float64) for g in self.generators]
        ).to(scores.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))
        return logp + gumbel.to(logp.dtype)
