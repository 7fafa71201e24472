"""Plain data records shared by every data source (HH-RLHF, the synthetic task)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PreferencePair:
    """One preference comparison in the HH transcript format.

    ``prompt`` ends with ``"\\n\\nAssistant:"``; ``chosen``/``rejected`` are the texts that follow it
    (each usually starts with a space), so ``prompt + chosen`` is the original transcript.
    """

    prompt: str
    chosen: str
    rejected: str
    subset: str = "synthetic"
