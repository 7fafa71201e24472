"""What the supervised-style stages share (:class:`StageConfig`) and the reward-model stage's
schema, which the RL schema nests (``algo.rm``)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from mplus.config_common import _check

# ---------------------------------------------------------------- algo


@dataclass
class StageConfig:
    """What every supervised-style stage (rm, dpo, sft) shares: batches, AdamW, schedule."""

    name: str = MISSING  # the algorithm (conf/algo/<name>.yaml)
    batch_size: int = 32  # examples per micro-batch (preference pairs; sft: chosen responses)
    lr: float = 1e-3  # peak AdamW learning rate (linear warmup, then cosine decay)
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_ratio: float = 0.05  # share of max_steps spent in linear warmup
    max_steps: int = 200  # optimizer steps
    grad_clip: float = 1.0  # gradient-norm clip; 0 = none
    val_every: int = 100  # steps between validations (and checkpoints)
    accumulate_grad_batches: int = 1  # micro-batches per optimizer step

    def __post_init__(self) -> None:
        for k in ("batch_size", "max_steps", "val_every", "accumulate_grad_batches"):
            _check(getattr(self, k) > 0, f"algo.{k}", "must be > 0")
        _check(self.lr > 0, "algo.lr", "must be > 0")
        _check(0 <= self.warmup_ratio < 1, "algo.warmup_ratio", "must be in [0, 1)")
        _check(self.grad_clip >= 0, "algo.grad_clip", "must be >= 0")


@dataclass
class RMConfig(StageConfig):
    """Reward-model stage (Bradley-Terry on preference pairs)."""

    name: str = "rm"  # the algorithm (conf/algo/<name>.yaml)
    max_steps: int = 300  # optimizer steps
    val_every: int = 150  # steps between validations (and checkpoints)
    margin: float = 0.0  # Bradley-Terry margin: loss -log sigmoid(r_chosen - r_rejected - margin)
    # run each pair's prompt once (its KV cache shared by the chosen and the rejected row)
    # instead of twice: the same scores up to float rounding, less compute; not used with
    # activation checkpointing (which turns the cache off), rows longer than a sliding window, or
    # several processes (FSDP)
    shared_prefix: bool = True
