"""Pure-torch RLHF math: masked statistics, GAE, PPO/DPO/reward-model losses, KL, reward shaping.

Imports torch only (no Lightning, no transformers), so every function here can be tested against
numbers worked out by hand. Per-token tensors are (B, T) over response tokens, with a (B, T) mask
that is nonzero on real response tokens (right-padded).
"""

from mplus.algo.core import (
    entropy_from_logits,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
)
from mplus.algo.kl import KL_KINDS, AdaptiveKLController, FixedKLController, kl_estimate
from mplus.algo.losses import (
    DPO_LOSS_TYPES,
    DPOLoss,
    PairwiseLoss,
    bradley_terry_loss,
    dpo_loss,
    sequence_logps,
)
from mplus.algo.ppo import PolicyLoss, ValueLoss, explained_variance, gae, policy_loss, value_loss
from mplus.algo.rewards import LENGTH_PENALTY_KINDS, length_penalty, token_rewards

__all__ = [
    "DPO_LOSS_TYPES",
    "KL_KINDS",
    "LENGTH_PENALTY_KINDS",
    "AdaptiveKLController",
    "DPOLoss",
    "FixedKLController",
    "PairwiseLoss",
    "PolicyLoss",
    "ValueLoss",
    "bradley_terry_loss",
    "dpo_loss",
    "entropy_from_logits",
    "explained_variance",
    "gae",
    "kl_estimate",
    "length_penalty",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "policy_loss",
    "sequence_logps",
    "token_rewards",
    "value_loss",
]
