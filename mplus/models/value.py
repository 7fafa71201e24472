"""Per-token values from a sequence-classification model (the reward model's architecture)."""

from __future__ import annotations

import torch
from torch import nn


class ValueModel(nn.Module):
    """Wraps a ``*ForSequenceClassification`` model (``num_labels=1``) to return every token's value.

    HF sequence classifiers apply their ``score`` head to all positions and then pool the last
    non-pad token; a forward hook on the head captures the un-pooled (B, T, 1) output. This keeps
    the value model the same class as the reward model it is initialised from (works for any
    architecture with a ``score`` head, and under peft, whose wrapper keeps the name).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        heads = [m for n, m in model.named_modules() if n.split(".")[-1] == "score"]
        if not heads:
            raise ValueError(f"{type(model).__name__} has no `score` head to read values from")
        self._captured: torch.Tensor | None = None
        heads[0].register_forward_hook(self._capture)

    def _capture(self, module, args, output) -> None:
        self._captured = output

    def forward(self, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
        """Returns (B, T) float32 values."""
        self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        values, self._captured = self._captured, None
        return values[..., 0].float()
