"""Data: HH-RLHF parsing and mixes, the synthetic task with its gold reward, collators."""

from mplus.data.types import PreferencePair

__all__ = ["PreferencePair"]
