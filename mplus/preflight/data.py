"""Start-of-run check of the data files (``data=hh_rlhf``): each reads and holds a usable pair."""

from __future__ import annotations

from mplus.config import ConfigError

# ---------------------------------------------------------------- data


def check_data(data_cfg) -> None:
    """Each ``data.files`` entry (``data=hh_rlhf``) reads and holds at least one usable row.

    The length limit (``data.max_length``) needs the tokenizer and is checked when the data is
    built (:func:`mplus.data.build.build_preference_data`); the rows read here are handed to
    that build (:func:`mplus.data.hh.read_ahead`), not read twice. Hub subsets (no files) are
    checked by name only.

    Raises:
        mplus.data.hh.DataFileError: naming the file (and line), or "no usable pairs in <file>".
        ConfigError: an unknown subset in ``data.mix``, or an empty ``data.files`` list.
    """
    if data_cfg.name != "hh_rlhf":
        return
    from mplus.data import hh

    if data_cfg.files is None:
        for subset in data_cfg.mix:
            if subset not in hh.HH_SUBSETS:
                raise ConfigError(
                    f"data.mix.{subset}: unknown HH-RLHF subset; valid "
                    f"subsets: {', '.join(hh.HH_SUBSETS)}"
                )
        return
    files = [data_cfg.files] if isinstance(data_cfg.files, str) else list(data_cfg.files)
    if not files:
        raise ConfigError("data.files: an empty list; give a file, or null for the hub")
    for f in files:
        rows = hh.read_ahead(f)
        pairs, skipped = hh.parse_rows(rows, hh.subset_from_filename(f))
        hh.check_usable(pairs, skipped, str(f), len(rows))
