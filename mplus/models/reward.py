"""Scalar heads: per-token scores, the score at a sequence's last token, scoring text.

The reward model and the value model are ``*ForSequenceClassification`` models (``num_labels=1``).
Hugging Face pools their output at the last token that is not ``pad_token_id``, which reads the
token *before* EOS when a tokenizer's pad is its EOS. mplus instead reads the head's output at the
last attended position of the attention mask, in training and scoring alike, so the score is
always taken at the EOS the model was trained with, whatever the pad token.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def score_head(model) -> torch.nn.Module:
    """The ``score`` head of a sequence classifier (also under peft, which keeps the name)."""
    for name, module in model.named_modules():
        if name.split(".")[-1] == "score":
            return module
    raise ValueError(f"{type(model).__name__} has no `score` head to read scores from")


def token_scores(model, input_ids, attention_mask, position_ids=None, **kwargs) -> torch.Tensor:
    """The head's output at every position: (B, T) float32 (``kwargs`` go to the model: a
    ``past_key_values`` cache the rows continue, with ``attention_mask`` covering it too).

    A forward hook captures the head's un-pooled (B, T, 1) output during the model's own
    forward pass (no second pass, any architecture with a ``score`` head).
    """
    captured: list[torch.Tensor] = []
    hook = score_head(model).register_forward_hook(lambda m, a, out: captured.append(out))
    try:
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **kwargs,
        )
    finally:
        hook.remove()
    scores = captured[-1][..., 0].float()
    if torch.is_grad_enabled() and out.logits.requires_grad:
        # Keep the model's returned output on the autograd path: FSDP2 re-gathers the root's
        # parameters (the head among them) for backward from hooks on that output, and a loss
        # built from the captured tensor alone would run the head's backward on freed storage.
        scores = scores + 0.0 * out.logits.float().sum()
    return scores


def last_positions(attention_mask) -> torch.Tensor:
    """(B,) index of each row's last attended token (either padding side)."""
    return attention_mask.long().cumsum(-1).argmax(-1)


def sequence_scores(model, input_ids, attention_mask) -> torch.Tensor:
    """(B, T) ids -> (B,) float32 scores at each row's last attended token (its EOS)."""
    scores = token_scores(model, input_ids, attention_mask)
    return scores.gather(1, last_positions(attention_mask).to(scores.device)[:, None])[:, 0]


@torch.no_grad()
def score_texts(
    model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 64
) -> torch.Tensor:
    """Reward-model scores of ``prompt + response`` (+ EOS), exactly as the model was trained.

    Tokenised by :func:`mplus.models.tokenizer.encode_pairs`, the rule every stage uses.

    Returns:
        (N,) float32 on CPU.
    """
    from mplus.data.collate import pad_right
    from mplus.models.tokenizer import encode_pairs

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        ids, _ = encode_pairs(tokenizer, prompts[i : i + batch_size], responses[i : i + batch_size])
        ids, mask = pad_right(ids, tokenizer.pad_token_id)
        out.append(sequence_scores(model, ids.to(device), mask.to(device)).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


def read_reward_stats(path: str | Path) -> dict:
    """``reward_stats.json`` beside an exported reward model; mean 0 / std 1 if absent."""
    f = Path(path) / "reward_stats.json"
    if f.exists():
        return json.loads(f.read_text())
    return {"mean": 0.0, "std": 1.0}


class RewardSet:
    """The reward models an RL run scores with, combined per sequence (``algo.rewards``).

    Each model is scored as it was trained (:func:`score_texts`) and normalised by its own
    validation statistics (``reward_stats.json``), then clipped
    (:func:`mplus.algo.normalized_score`); the objective is the weighted sum of those normalised
    scores (:func:`mplus.algo.weighted_scores`). With ``cost`` (the safety constraint,
    ``algo.constraint``), that model's normalised score, negated, is the cost and it is left out
    of the sum. One model named ``reward`` with weight 1 is the single reward model of a plain
    run: its objective is the normalised, clipped score as before.

    Args:
        models: name -> frozen sequence classifier (a ``torch.nn.ModuleDict``: the RL module
            registers it, so sharding and device moves see every model).
        stats: name -> ``{"mean": .., "std": ..}``.
        weights: name -> weight in the objective.
    """

    def __init__(
        self,
        models: dict,
        stats: dict[str, dict],
        weights: dict[str, float],
        *,
        normalize: bool = True,
        clip: float | None = None,
        cost: str | None = None,
    ) -> None:
        if set(models) != set(stats) or set(models) != set(weights):
            raise ValueError("RewardSet: models, stats and weights must name the same models")
        if cost is not None and cost not in models:
            raise ValueError(f"RewardSet: the cost {cost!r} is none of {sorted(models)}")
        self.models = (
            models if isinstance(models, torch.nn.ModuleDict) else torch.nn.ModuleDict(models)
        )
        self.stats, self.normalize, self.clip, self.cost_name = stats, normalize, clip, cost
        self.weights = {k: w for k, w in weights.items() if k != cost}

    @property
    def names(self) -> list[str]:
        return list(self.models.keys())

    @property
    def single(self) -> bool:
        """One model and no cost: a plain run's reward model (its raw score is ``reward``)."""
        return len(self.models) == 1 and self.cost_name is None

    def raw(self, tokenizer, prompts: list[str], responses: list[str]) -> dict[str, torch.Tensor]:
        """name -> (N,) raw scores of ``prompt + response`` (CPU, float32)."""
        return {n: score_texts(m, tokenizer, prompts, responses) for n, m in self.models.items()}

    def normalized(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """name -> each raw score normalised by its model's stats and clipped."""
        from mplus.algo import normalized_score

        return {
            n: normalized_score(
                r,
                self.stats[n]["mean"],
                self.stats[n]["std"],
                normalize=self.normalize,
                clip=self.clip,
            )
            for n, r in raw.items()
        }

    def objective(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the normalised scores (the cost's model left out)."""
        from mplus.algo import weighted_scores

        return weighted_scores(z, self.weights)

    def cost(self, z: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The constraint's per-sequence cost, ``-z[cost]``; None without a constraint."""
        return None if self.cost_name is None else -z[self.cost_name]
