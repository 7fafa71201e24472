"""Bad evaluation input (:class:`EvalError`) and the local-path helpers of the eval schema
(re-exported by :mod:`mplus.eval.common`)."""

from __future__ import annotations

import os
import re
from pathlib import Path


class EvalError(ValueError):
    """Bad input to an evaluation (a model path, a data file, a judge); the message names it."""


def looks_like_path(spec: str) -> bool:
    """A local path rather than a hub id: absolute, ``./``, ``~``, a file suffix, or >1 slash."""
    s = str(spec)
    return (
        s.startswith(("/", "./", "../", "~"))
        or s.count("/") > 1
        or os.sep != "/"
        and os.sep in s
        or bool(re.search(r"\.(jsonl?|gz|parquet|csv)$", s))
    )


def check_local(spec: str | None, key: str, *, want: str = "file") -> None:
    """Fail at once when ``spec`` is meant as a local path and nothing is there.

    Raises:
        EvalError: ``"<key>=<spec>: <want> not found"``.
    """
    if spec is None:
        return
    p = Path(str(spec)).expanduser()
    if looks_like_path(str(spec)) and not p.exists():
        raise EvalError(f"{key}={spec}: {want} not found")
