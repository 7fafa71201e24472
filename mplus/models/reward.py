"""Scoring text with a reward model and reading its exported normalisation stats."""

from __future__ import annotations

import json
from pathlib import Path

import torch


@torch.no_grad()
def score_texts(model, tokenizer, prompts: list[str], responses: list[str],
                batch_size: int = 64) -> torch.Tensor:
    """Reward-model scores of ``prompt + response`` (+ EOS), exactly as the model was trained.

    Returns:
        (N,) float32 on CPU.
    """
    from mplus.data.collate import pad_right

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    texts = [p + r for p, r in zip(prompts, responses, strict=True)]
    out = []
    for i in range(0, len(texts), batch_size):
        ids = tokenizer(texts[i : i + batch_size], add_special_tokens=False)["input_ids"]
        ids, mask = pad_right([x + [tokenizer.eos_token_id] for x in ids], tokenizer.pad_token_id)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        out.append(logits[:, 0].float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def read_reward_stats(path: str | Path) -> dict:
    """``reward_stats.json`` beside an exported reward model; mean 0 / std 1 if absent."""
    f = Path(path) / "reward_stats.json"
    if f.exists():
        return json.loads(f.read_text())
    return {"mean": 0.0, "std": 1.0}
