"""HH-RLHF files: read JSON lines (a file read at start is handed to the data build), load rows
from files or the hub, name a file's subset, and refuse a source with no usable pair."""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mplus.data.hh.parse import HH_SUBSETS
from mplus.data.types import PreferencePair
from mplus.errors import DataError

PathLike = str | os.PathLike[str]


class DataFileError(DataError):
    """A data file that cannot be read, or that holds no usable row; the message names the file
    and, if known, the line. A :class:`mplus.errors.UserError` and a ``ValueError``."""


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
