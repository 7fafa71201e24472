"""PPO from the base model (:class:`PPOModule`; one ``training_step`` is one PPO iteration), the
rollout batch it updates from (:class:`Experience`) and its checkpoint callback."""

from mplus.modules.ppo.metrics import _GLOBAL_METRICS
from mplus.modules.ppo.module import FROZEN_PREFIXES, PPOModule
from mplus.modules.ppo.parts import Experience, PPOCheckpoint, _seed_all

__all__ = [
    "FROZEN_PREFIXES",
    "Experience",
    "PPOCheckpoint",
    "PPOModule",
    "_GLOBAL_METRICS",
    "_seed_all",
]
