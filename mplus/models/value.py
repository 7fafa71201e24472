"""Per-token values from a sequence-classification model (the reward model's architecture)."""

from __future__ import annotations

import torch
from torch import nn

from mplus.models.reward import score_head, token_scores


class ValueModel(nn.Module):
    """Wraps a ``*ForSequenceClassification`` model (``num_labels=1``) to return every token's value.

    The head's un-pooled output is read by :func:`mplus.models.reward.token_scores`. This keeps
    the value model the same class as the reward model it is initialised from (works for any
    architecture with a ``score`` head, and under peft, whose wrapper keeps the name).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        score_head(model)  # fail at build time, not at the first step

    def forward(self, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
        """Returns (B, T) float32 values."""
        return token_scores(self.model, input_ids, attention_mask, position_ids)
