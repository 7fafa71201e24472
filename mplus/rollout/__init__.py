"""Rollout generation for PPO: engines that turn prompts into padded query/response batches."""

from mplus.rollout.engine import HFGenerateEngine, Rollout, RolloutEngine
from mplus.rollout.stops import find_response_end, strip_stop

__all__ = ["HFGenerateEngine", "Rollout", "RolloutEngine", "find_response_end", "strip_stop"]
