"""Anthropic HH-RLHF: read rows, parse them into preference pairs, and mix subsets.

A row is ``{"chosen": transcript, "rejected": transcript}``, each transcript a run of
``"\\n\\nHuman: ..."`` / ``"\\n\\nAssistant: ..."`` turns that differ only in the last Assistant
turn. Parsing splits both at the last ``"\\n\\nAssistant:"``; rows that do not fit are skipped and
counted by reason (``SKIP_REASONS``), never dropped silently and never fatal. A file that cannot be
read is fatal at once (``DataFileError``, naming the file and line), and so is a file none of whose
rows can be used (:func:`check_usable`).
"""

from mplus.data.hh.mix import mix_pairs
from mplus.data.hh.parse import (
    ASSISTANT_TAG,  # noqa: F401  (re-exported)
    HH_SUBSETS,
    SKIP_REASONS,
    BadRow,
    parse_hh_row,
    parse_rows,
    split_prompt_response,
)
from mplus.data.hh.read import (
    DataFileError,
    PathLike,  # noqa: F401  (re-exported)
    check_usable,
    load_hh_rows,
    read_ahead,
    read_jsonl,
    read_jsonl_once,
    subset_from_filename,
)

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
