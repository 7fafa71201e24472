"""The saved files made portable: tokenizer padding, generation config, no machine keys."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

# Keys from_pretrained records that only make sense on the machine that loaded the files.
MACHINE_KEYS = frozenset(
    {
        "is_local",
        "local_files_only",
        "name_or_path",
        "_name_or_path",
        "cache_dir",
        "_commit_hash",
        "token",
        "use_auth_token",
        "force_download",
        "proxies",
    }
)
# Context-length attributes of transformers configs, most common first.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length(config) -> int | None:
    """The model's context (``max_position_embeddings`` or its equivalent), or None."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in _CONTEXT_KEYS:
        n = getattr(text, key, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(
        json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def finish_tokenizer_files(out: Path, tokenizer, config, padding_side: str) -> None:
    """Rewrite the saved tokenizer so it loads as downstream use needs (the object is untouched).

    ``tokenizer_config.json`` gets ``padding_side``, ``model_max_length`` (the model's context)
    and the pad token; ``tokenizer.json`` loses the padding/truncation state a padded call left in
    the backend (it would otherwise reload as a right-padding default).
    """
    path = out / "tokenizer_config.json"
    tc = _read_json(path) if path.exists() else {}
    tc["padding_side"] = padding_side
    n = context_length(config)
    if n is not None:
        tc["model_max_length"] = n
    if tokenizer.pad_token is not None and not tc.get("pad_token"):
        tc["pad_token"] = str(tokenizer.pad_token)
    _write_json(path, tc)
    fast = out / "tokenizer.json"
    if fast.exists():
        tj = _read_json(fast)
        if tj.get("padding") is not None or tj.get("truncation") is not None:
            tj["padding"], tj["truncation"] = None, None
            fast.write_text(json.dumps(tj, indent=2, ensure_ascii=False), encoding="utf-8")


def write_generation_config(out: Path, model, tokenizer) -> None:
    """``generation_config.json`` with the tokenizer's EOS, pad (and BOS), and no stop strings.

    ``stop_strings`` there would make transformers raise on every ``generate`` call that does not
    pass ``tokenizer=``; the card's snippet passes them instead.
    """
    from transformers import GenerationConfig

    gc = getattr(model, "generation_config", None)
    gc = copy.deepcopy(gc) if gc is not None else GenerationConfig.from_model_config(model.config)
    eos = gc.eos_token_id
    eos = [] if eos is None else list(eos) if isinstance(eos, list | tuple) else [eos]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.append(tokenizer.eos_token_id)
    gc.eos_token_id = eos[0] if len(eos) == 1 else (eos or None)
    if tokenizer.pad_token_id is not None:
        gc.pad_token_id = tokenizer.pad_token_id
    if gc.bos_token_id is None and getattr(tokenizer, "bos_token_id", None) is not None:
        gc.bos_token_id = tokenizer.bos_token_id
    gc.stop_strings = None
    gc.save_pretrained(out)


def _set_config_pad(out: Path, tokenizer) -> None:
    """The reward model's pooling finds the last non-pad token by ``config.pad_token_id``."""
    path = out / "config.json"
    c = _read_json(path)
    if c.get("pad_token_id") is None and tokenizer.pad_token_id is not None:
        c["pad_token_id"] = tokenizer.pad_token_id
        _write_json(path, c)


def _is_machine_path(v: Any) -> bool:
    return isinstance(v, str) and "\n" not in v and os.path.isabs(v) and len(Path(v).parts) >= 3


def _sanitized(obj):
    if isinstance(obj, dict):
        return {
            k: _sanitized(v)
            for k, v in obj.items()
            if k not in MACHINE_KEYS and not _is_machine_path(v)
        }
    if isinstance(obj, list):
        return [_sanitized(v) for v in obj]
    return obj


def sanitize_json_file(path: Path) -> None:
    """Drop machine-specific keys (:data:`MACHINE_KEYS`, absolute paths) from a saved config."""
    if not path.exists():
        return
    obj = _read_json(path)
    clean = _sanitized(obj)
    if clean != obj:
        _write_json(path, clean)
