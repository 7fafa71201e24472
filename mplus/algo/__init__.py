"""Pure-torch RLHF math: masked statistics, advantage estimators (GAE, GRPO, RLOO, REINFORCE++),
loss aggregation, PPO/DPO/reward-model losses, KL, reward shaping.

Imports torch only (no Lightning, no transformers), so every function here can be tested against
numbers worked out by hand. Per-token tensors are (B, T) over response tokens, with a (B, T) mask
that is nonzero on real response tokens (right-padded). Batch statistics under data parallelism
take a ``reduce`` callable (e.g. ``mplus.distributed.all_reduce_sum``) instead of importing the
process group.
"""

from mplus.algo.advantages import (
    KL_IN_REWARD,
    AdvantageFn,
    estimator_names,
    get_estimator,
    group_score_stats,
    register_estimator,
)
from mplus.algo.aggregation import LOSS_AGG_MODES, aggregate_loss
from mplus.algo.core import (
    entropy_from_logits,
    logprobs_from_logits,
    masked_mean,
    masked_moments,
    masked_sum,
    masked_var,
    masked_whiten,
)
from mplus.algo.kl import KL_KINDS, AdaptiveKLController, FixedKLController, kl_estimate
from mplus.algo.lagrange import LagrangeMultiplier
from mplus.algo.losses import (
    DPO_LOSS_TYPES,
    DPOLoss,
    PairwiseLoss,
    bradley_terry_loss,
    dpo_loss,
    sequence_logps,
)
from mplus.algo.ppo import PolicyLoss, ValueLoss, explained_variance, gae, policy_loss, value_loss
from mplus.algo.rewards import (
    LENGTH_PENALTY_KINDS,
    lagrangian_score,
    length_penalty,
    normalized_score,
    token_rewards,
    weighted_scores,
)

__all__ = [
    "DPO_LOSS_TYPES",
    "KL_IN_REWARD",
    "KL_KINDS",
    "LENGTH_PENALTY_KINDS",
    "LOSS_AGG_MODES",
    "AdaptiveKLController",
    "AdvantageFn",
    "DPOLoss",
    "FixedKLController",
    "LagrangeMultiplier",
    "PairwiseLoss",
    "PolicyLoss",
    "ValueLoss",
    "aggregate_loss",
    "bradley_terry_loss",
    "dpo_loss",
    "entropy_from_logits",
    "estimator_names",
    "explained_variance",
    "gae",
    "get_estimator",
    "group_score_stats",
    "kl_estimate",
    "lagrangian_score",
    "length_penalty",
    "logprobs_from_logits",
    "masked_mean",
    "masked_moments",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "normalized_score",
    "policy_loss",
    "register_estimator",
    "sequence_logps",
    "token_rewards",
    "value_loss",
    "weighted_scores",
]
