"""Schemas of the ``algo`` group: the supervised-style stages (rm, dpo, sft; their base in
:mod:`mplus.config.stage`), RL from the base (PPO, GRPO, RLOO, REINFORCE++: one schema,
:class:`RLConfig`, in :mod:`mplus.config.rl`, re-exported here) and ``none``."""

from __future__ import annotations

from dataclasses import dataclass

from mplus.config.rl import (  # noqa: F401  re-exported
    ADVANTAGE_ESTIMATORS,
    CRITIC_ESTIMATORS,
    GROUP_ESTIMATORS,
    LOSS_AGG_MODES,
    RL_ALGOS,
    ROLLOUT_ENGINES,
    AdvantageConfig,
    GenerationConfig,
    KLConfig,
    LengthPenaltyConfig,
    PPOConfig,
    RewardConfig,
    RLConfig,
    RolloutConfig,
    is_rl,
)
from mplus.config.stage import RMConfig, StageConfig  # noqa: F401  re-exported
from mplus.config_common import _check, _in


@dataclass
class DPOConfig(StageConfig):
    """DPO from the base (no SFT first): frozen reference = the base (LoRA: adapter disabled)."""

    name: str = "dpo"  # the algorithm (conf/algo/<name>.yaml)
    lr: float = 1e-4  # peak AdamW learning rate (linear warmup, then cosine decay)
    beta: float = 0.3  # DPO temperature: strength of the implicit KL to the reference
    loss_type: str = "sigmoid"  # sigmoid (DPO) | ipo | hinge
    label_smoothing: float = 0.0  # conservative DPO: assumed share of flipped labels (sigmoid)
    precompute_ref: bool = True  # reference log-probs once for the dataset, before training
    # each pair's prompt run once (its KV cache shared by the chosen and the rejected row), by
    # the policy and the reference: the same log-probs up to float rounding, less compute; not
    # used with activation checkpointing, rows longer than a sliding window or several processes
    shared_prefix: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.beta > 0, "algo.beta", "must be > 0")
        _in(self.loss_type, ("sigmoid", "ipo", "hinge"), "algo.loss_type")
        _check(0 <= self.label_smoothing <= 0.5, "algo.label_smoothing", "must be in [0, 0.5]")
        _check(
            self.label_smoothing == 0 or self.loss_type == "sigmoid",
            "algo.label_smoothing",
            "only applies to loss_type=sigmoid",
        )


@dataclass
class SFTConfig(StageConfig):
    """Supervised fine-tuning on the chosen responses (loss on response tokens only)."""

    name: str = "sft"  # the algorithm (conf/algo/<name>.yaml)


@dataclass
class NoneConfig:
    """No training: evaluate the base model itself on the held-out evaluation."""

    name: str = "none"  # the algorithm (conf/algo/<name>.yaml)
