"""HH-RLHF rows into preference pairs: split each transcript at its last Assistant turn; a row
that does not fit is skipped with a reason (``SKIP_REASONS``)."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mplus.data.types import PreferencePair

ASSISTANT_TAG = "\n\nAssistant:"
HH_SUBSETS = ("helpful-base", "helpful-online", "helpful-rejection-sampled", "harmless-base")
SKIP_REASONS = (
    "identical",
    "empty_response",
    "no_assistant_turn",
    "prompt_mismatch",
    "too_long",
    "malformed",
)


class BadRow(ValueError):
    """A data row that cannot become a preference pair; it is skipped and counted.

    Attributes:
        reason: One of ``SKIP_REASONS``.
        detail: Free text for the message.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {SKIP_REASONS}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce would call BadRow(message), which is not a valid reason.
        return (type(self), (self.reason, self.detail))


def split_prompt_response(text: str) -> tuple[str, str]:
    """Split a transcript at its last Assistant turn.

    Args:
        text: An HH transcript.

    Returns:
        ``(prompt, response)``: ``prompt`` ends with ``"\\n\\nAssistant:"`` and ``response`` is the
        untouched rest (usually starting with a space), so ``prompt + response == text``.

    Raises:
        BadRow: ``"no_assistant_turn"`` if the text has no ``"\\n\\nAssistant:"``.
    """
    head, sep, response = text.rpartition(ASSISTANT_TAG)
    if not sep:
        raise BadRow("no_assistant_turn", f"no {ASSISTANT_TAG!r} in {text[:80]!r}")
    return head + sep, response


def _check_length_args(length_fn: Callable[[str], int] | None, max_length: int | None) -> None:
    if (length_fn is None) != (max_length is None):
        raise ValueError("length_fn and max_length must be given together")
    if max_length is not None and (isinstance(max_length, bool) or max_length <= 0):
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")


def parse_hh_row(
    row: Mapping[str, Any],
    subset: str = "unknown",
    *,
    length_fn: Callable[[str], int] | None = None,
    max_length: int | None = None,
) -> PreferencePair:
    """Parse one HH row into a preference pair.

    Checks run in this order, so a row gets the first reason that applies: ``malformed``,
    ``no_assistant_turn``, ``prompt_mismatch``, ``empty_response``, ``identical``, ``too_long``.

    Args:
        row: ``{"chosen": str, "rejected": str}``; other keys are ignored.
        subset: Label stored on the pair.
        length_fn: Length of a full transcript (e.g. its token count); used with ``max_length``.
        max_length: Longest allowed ``length_fn(prompt + response)`` for either response.

    Returns:
        A pair with ``prompt + chosen == row["chosen"]`` and
        ``prompt + rejected == row["rejected"]``.

    Raises:
        BadRow: The row cannot be used; ``reason`` says why.
        ValueError: Only one of ``length_fn`` and ``max_length`` was given.
    """
    _check_length_args(length_fn, max_length)
    if not isinstance(row, Mapping):
        raise BadRow("malformed", f"row is a {type(row).__name__}, not a mapping")
    for key in ("chosen", "rejected"):
        if key not in row:
            raise BadRow("malformed", f"missing key {key!r}")
        if not isinstance(row[key], str):
            raise BadRow("malformed", f"{key!r} is a {type(row[key]).__name__}, not a str")

    prompt, chosen = split_prompt_response(row["chosen"])
    rejected_prompt, rejected = split_prompt_response(row["rejected"])
    if prompt != rejected_prompt:
        raise BadRow("prompt_mismatch", "chosen and rejected differ before the last Assistant turn")
    if not chosen.strip() or not rejected.strip():
        which = "chosen" if not chosen.strip() else "rejected"
        raise BadRow("empty_response", f"{which} response is empty")
    if chosen.strip() == rejected.strip():
        raise BadRow("identical", "chosen and rejected responses are the same")
    if length_fn is not None:
        for name, response in (("chosen", chosen), ("rejected", rejected)):
            length = length_fn(prompt + response)
            if length > max_length:
                raise BadRow("too_long", f"{name} transcript has length {length} > {max_length}")
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, subset=subset)


def parse_rows(
    rows: Iterable[Any],
    subset: str,
    *,
    length_fn: Callable[[str], int] | None = None,
    max_length: int | None = None,
) -> tuple[list[PreferencePair], collections.Counter[str]]:
    """Parse every row, skipping the bad ones.

    Args:
        rows: HH rows (anything; non-mappings count as ``malformed``).
        subset: Label stored on each pair.
        length_fn: See ``parse_hh_row``.
        max_length: See ``parse_hh_row``.

    Returns:
        ``(pairs, skipped)``: the good pairs in input order, and how many rows were skipped for
        each reason (only reasons that occurred).

    Raises:
        ValueError: Only one of ``length_fn`` and ``max_length`` was given (checked up front).
    """
    _check_length_args(length_fn, max_length)
    pairs: list[PreferencePair] = []
    skipped: collections.Counter[str] = collections.Counter()
    for row in rows:
        try:
            pairs.append(parse_hh_row(row, subset, length_fn=length_fn, max_length=max_length))
        except BadRow as err:
            skipped[err.reason] += 1
    return pairs, skipped
