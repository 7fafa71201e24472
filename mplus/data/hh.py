"""Anthropic HH-RLHF: read rows, parse them into preference pairs, and mix subsets.

A row is ``{"chosen": transcript, "rejected": transcript}``, each transcript a run of
``"\\n\\nHuman: ..."`` / ``"\\n\\nAssistant: ..."`` turns that differ only in the last Assistant
turn. Parsing splits both at the last ``"\\n\\nAssistant:"``; rows that do not fit are skipped and
counted by reason (``SKIP_REASONS``), never dropped silently and never fatal. A file that cannot be
read is fatal at once (``DataFileError``, naming the file and line), and so is a file none of whose
rows can be used (:func:`check_usable`).
"""

from __future__ import annotations

import collections
import gzip
import json
import math
import os
import random
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from mplus.data.types import PreferencePair
from mplus.errors import DataError

__all__ = [
    "HH_SUBSETS",
    "SKIP_REASONS",
    "BadRow",
    "DataFileError",
    "check_usable",
    "load_hh_rows",
    "mix_pairs",
    "parse_hh_row",
    "parse_rows",
    "read_ahead",
    "read_jsonl",
    "read_jsonl_once",
    "split_prompt_response",
    "subset_from_filename",
]

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

PathLike = str | os.PathLike[str]


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


class DataFileError(DataError):
    """A data file that cannot be read, or that holds no usable row; the message names the file
    and, if known, the line. A :class:`mplus.errors.UserError` and a ``ValueError``."""


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


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """Read a JSON-lines file, gzip-compressed if its name ends in ``.gz``.

    Blank lines are skipped; every other line must be a JSON object.

    Args:
        path: A ``.jsonl`` or ``.jsonl.gz`` file.

    Returns:
        One dict per non-blank line, in file order.

    Raises:
        DataFileError: The file is missing or unreadable, or a line is not a JSON object; the
            message starts with ``"{path}:{lineno}:"`` when the line is known.
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    lineno = 0
    try:
        # Binary mode, decoding line by line, so a bad byte is reported with its line number.
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    raise DataFileError(f"{path}:{lineno}: not UTF-8: {err}") from err
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataFileError(f"{path}:{lineno}: invalid JSON: {err}") from err
                if not isinstance(row, dict):
                    raise DataFileError(
                        f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"
                    )
                rows.append(row)
    except FileNotFoundError as err:
        raise DataFileError(f"{path}: file not found") from err
    except (OSError, EOFError, zlib.error) as err:
        # Corrupt or truncated gzip, a directory, no permission, ...
        raise DataFileError(f"{path}: cannot read (after line {lineno}): {err}") from err
    return rows


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


# Rows read by read_ahead, waiting for read_jsonl_once: (resolved path, mtime, size) -> rows.
_READ_AHEAD: dict[tuple[str, int, int], list[dict[str, Any]]] = {}


def read_ahead(path: PathLike) -> list[dict[str, Any]]:
    """:func:`read_jsonl`, keeping the rows for the next :func:`read_jsonl_once` of the same file.

    The checks at start (:mod:`mplus.preflight`) read each data file before any model loads; the
    data build then parses the same rows instead of reading the file a second time.
    """
    rows = read_jsonl(path)
    _READ_AHEAD[_file_key(Path(path))] = rows
    return rows


def read_jsonl_once(path: PathLike) -> list[dict[str, Any]]:
    """The rows :func:`read_ahead` kept for ``path`` if the file is unchanged since (they are
    handed over, not kept twice), else :func:`read_jsonl`."""
    try:
        key = _file_key(Path(path))
    except OSError:
        key = None
    rows = _READ_AHEAD.pop(key, None) if key is not None else None
    return rows if rows is not None else read_jsonl(path)


def _describe_skipped(skipped: Mapping[str, int], n_rows: int) -> str:
    if not n_rows:
        return "nothing: the file has no rows"
    return ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items(), key=lambda kv: -kv[1]))


def check_usable(
    pairs: Sequence[PreferencePair],
    skipped: Mapping[str, int],
    source: str,
    n_rows: int,
    hint: str = "",
) -> None:
    """Refuse a data source none of whose rows became a pair.

    Raises:
        DataFileError: ``"no usable pairs in <source> (skipped: <reason>: <count>, ...)"``.
    """
    if pairs:
        return
    msg = f"no usable pairs in {source} (skipped: {_describe_skipped(skipped, n_rows)})"
    if hint and skipped.get("too_long"):
        msg += f"; {hint}"
    raise DataFileError(msg)


def _check_subset(subset: str) -> None:
    if subset not in HH_SUBSETS:
        raise ValueError(
            f"unknown HH-RLHF subset {subset!r}; valid subsets: {', '.join(HH_SUBSETS)}"
        )


def load_hh_rows(
    subset: str,
    split: str,
    *,
    files: PathLike | Sequence[PathLike] | None = None,
    hub_path: str = "Anthropic/hh-rlhf",
) -> list[dict[str, Any]]:
    """Load raw HH rows from local files or from the Hugging Face hub.

    Args:
        subset: One of ``HH_SUBSETS`` (checked even with ``files``, so a misspelt config fails).
        split: ``"train"`` or ``"test"`` on the hub; unused with ``files``.
        files: Local ``.jsonl``/``.jsonl.gz`` file(s) in the hub's format; read and concatenated
            instead of the hub.
        hub_path: Dataset repository on the hub; ``subset`` is its ``data_dir``.

    Returns:
        The rows as dicts, unparsed.

    Raises:
        ValueError: Unknown subset, or an empty list of files.
        DataFileError: A local file cannot be read.
    """
    _check_subset(subset)
    if files is not None:
        paths = [files] if isinstance(files, str | os.PathLike) else list(files)
        if not paths:
            raise ValueError("files is an empty list; give at least one file or None for the hub")
        return [row for p in paths for row in read_jsonl(p)]

    import datasets  # heavy; only this path needs it

    dataset = datasets.load_dataset(hub_path, data_dir=subset, split=split)
    return [dict(row) for row in dataset]


def subset_from_filename(path: PathLike) -> str:
    """Name the HH subset a file holds, from its name or else its folder's name.

    ``"harmless-base-test.head1800.jsonl.gz"`` and the hub's own layout
    ``"harmless-base/test.jsonl.gz"`` both give ``"harmless-base"``.

    Returns:
        A name from ``HH_SUBSETS``, or ``"local"`` if none appears.
    """
    path = Path(path)
    # Longest first, so a name that contains another can never be shadowed by it.
    by_length = sorted(HH_SUBSETS, key=len, reverse=True)
    for part in (path.name, path.parent.name):
        for subset in by_length:
            if subset in part:
                return subset
    return "local"


def _exact(weight: float) -> Fraction:
    # Through the shortest decimal repr, so weights 0.1 and 0.3 are exactly 1:3, as written.
    return Fraction(str(float(weight)))


def _allocate(total: int, weights: dict[str, Fraction]) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` by largest remainder (sums to ``total``)."""
    weight_sum = sum(weights.values())
    quotas = {name: total * w / weight_sum for name, w in weights.items()}
    counts = {name: math.floor(q) for name, q in quotas.items()}
    left = total - sum(counts.values())
    # Ties go to the alphabetically first subset (weights is in sorted order; sort is stable).
    for name in sorted(quotas, key=lambda n: quotas[n] - counts[n], reverse=True)[:left]:
        counts[name] += 1
    return counts


def mix_pairs(
    pairs_by_subset: Mapping[str, Sequence[PreferencePair]],
    weights: Mapping[str, float],
    *,
    total: int | None,
    seed: int,
) -> tuple[list[PreferencePair], dict[str, int]]:
    """Draw a mix of subsets in proportion to their weights, without replacement.

    Per-subset counts split ``total`` by largest remainder. Subsets with weight 0 or without a
    weight are left out. The result depends only on the inputs and ``seed``, not on dict order.

    Args:
        pairs_by_subset: Pairs of each subset.
        weights: Relative weight of each subset (need not sum to 1).
        total: Pairs to draw; ``None`` draws as many as the proportions allow without repeating a
            pair, i.e. as limited by the scarcest subset relative to its weight.
        seed: Seed for ``random.Random``.

    Returns:
        ``(pairs, counts)``: the drawn pairs, shuffled, and how many were drawn from each weighted
        subset. If a subset has fewer pairs than its share of ``total``, all of them are used,
        a warning says so, and the mix comes out smaller than ``total``.

    Raises:
        ValueError: A weight is negative or not finite, a weight names a subset that is not in
            ``pairs_by_subset``, all weights are 0, or ``total`` is negative.
    """
    for name, weight in weights.items():
        if name not in pairs_by_subset:
            raise ValueError(
                f"weight given for subset {name!r}, which has no pairs; "
                f"subsets present: {sorted(pairs_by_subset)}"
            )
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of subset {name!r} must be finite and >= 0, got {weight!r}")
    active = {name: _exact(weights[name]) for name in sorted(weights) if weights[name] > 0}
    if not active:
        raise ValueError(f"all subset weights are 0: {dict(weights)}")
    if total is not None and (isinstance(total, bool) or total < 0):
        raise ValueError(f"total must be None or an int >= 0, got {total!r}")

    sizes = {name: len(pairs_by_subset[name]) for name in active}
    if total is None:
        weight_sum = sum(active.values())
        # n * w / W <= size for every subset; n * w / W is then at most size, so after the
        # rounding in _allocate no count exceeds its subset's size.
        total = min(math.floor(sizes[n] * weight_sum / w) for n, w in active.items())
        if total == 0:
            warnings.warn(
                f"mix is empty: a weighted subset has too few pairs ({sizes})", stacklevel=2
            )
    counts = _allocate(total, active)
    for name, count in counts.items():
        if count > sizes[name]:
            warnings.warn(
                f"subset {name!r} has {sizes[name]} pairs but its share of total={total} is "
                f"{count}; using all {sizes[name]} (no pair is drawn twice)",
                stacklevel=2,
            )
            counts[name] = sizes[name]

    rng = random.Random(seed)
    mixed: list[PreferencePair] = []
    for name, count in counts.items():
        mixed.extend(rng.sample(list(pairs_by_subset[name]), count))
    rng.shuffle(mixed)
    return mixed, counts
