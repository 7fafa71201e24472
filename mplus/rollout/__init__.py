"""Rollout generation for PPO: engines that turn prompts into padded query/response batches.

``make_engine(kind, ...)`` builds one by name (``algo.rollout.engine``): ``hf`` (transformers'
``generate``, the default) or ``vllm`` (:mod:`mplus.rollout.vllm_engine`, imported only then).
"""

from __future__ import annotations

from typing import Any

from mplus.rollout.engine import HFGenerateEngine, Rollout, RolloutEngine, TokenRolloutEngine
from mplus.rollout.stops import find_response_end, strip_stop

ENGINES = ("hf", "vllm")

__all__ = [
    "ENGINES",
    "HFGenerateEngine",
    "Rollout",
    "RolloutEngine",
    "TokenRolloutEngine",
    "find_response_end",
    "make_engine",
    "strip_stop",
]


def make_engine(
    kind: str, tokenizer: Any, *, backend: Any = None, row_seed: int | None = None, **sampling: Any
):
    """A rollout engine by name with ``sampling`` (:class:`TokenRolloutEngine`'s arguments).

    For ``vllm`` only (``hf`` ignores them): ``backend``, the
    :class:`mplus.rollout.vllm_engine.VLLMBackend` to sample from (engines with other sampling
    settings can share one); ``row_seed``, per-row seeds that repeat on every call (``hf``'s
    randomness is torch's global generator, which its caller seeds).
    """
    if kind == "hf":
        return HFGenerateEngine(tokenizer, **sampling)
    if kind == "vllm":
        from mplus.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(tokenizer, backend=backend, row_seed=row_seed, **sampling)
    raise ValueError(f"unknown rollout engine {kind!r}; one of {list(ENGINES)}")
