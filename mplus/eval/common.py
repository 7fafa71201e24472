"""What every suite shares: the error type, model specs and labels, loading, data files, output.

Light at import (no torch/transformers at module level), so the config checks that use it stay fast.
:class:`EvalError`, :func:`looks_like_path` and :func:`check_local` are defined in
:mod:`mplus.eval.config` (the schema's path checks raise them, and the schema must not import this
module, which loads models) and re-exported here for the suites.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mplus.eval.config import EvalError, check_local, looks_like_path

__all__ = [
    "EvalError",
    "check_local",
    "chunks",
    "default_labels",
    "device_for",
    "effective_limit",
    "free",
    "load_classifier",
    "load_lm",
    "load_rows",
    "looks_like_path",
    "model_inputs",
    "resolve_model",
    "write_jsonl",
]

log = logging.getLogger("mplus.eval")


def effective_limit(*limits):
    """The smallest limit that is set (``eval.limit`` and the suite's own); None if none is."""
    given = [x for x in limits if x is not None]
    return min(given) if given else None


# ---------------------------------------------------------------- models


def resolve_model(spec: str, index: int) -> str:
    """A model spec -> the path or hub id ``from_pretrained`` loads.

    ``<dir with config.json>`` is itself; a training run dir stands for its ``policy/``;
    ``base:<run dir>`` is the base that run started from (the embedded tiny base is built if its
    cache is gone); anything else that does not look like a path is a hub id.

    Raises:
        EvalError: naming ``models[index]`` and what is missing.
    """
    key = f"models[{index}]={spec}"
    if spec.startswith("base:"):
        return _base_of_run(Path(spec[len("base:") :]).expanduser(), key)
    p = Path(spec).expanduser()
    if p.is_dir():
        if (p / "config.json").exists():
            return str(p)
        if (p / "policy" / "config.json").exists():
            return str(p / "policy")
        raise EvalError(f"{key}: no Hugging Face model there (no config.json, no policy/ export)")
    if p.exists() or looks_like_path(spec):
        raise EvalError(f"{key}: no such model directory")
    return spec  # a hub id


def _base_of_run(run_dir: Path, key: str) -> str:
    from omegaconf import OmegaConf

    cfg_file = run_dir / ".hydra" / "config.yaml"
    if not cfg_file.exists():
        raise EvalError(f"{key}: {cfg_file} not found (base:<dir> needs a training run dir)")
    from mplus.config import ModelConfig
    from mplus.models.base import resolve_base

    raw = OmegaConf.load(cfg_file)
    model_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), raw.model))
    return resolve_base(model_cfg, str(raw.cache_dir))


def default_labels(specs: list[str]) -> list[str]:
    """Short unique column names: ``<run>-policy`` for exports, the name for hub ids."""
    labels = []
    for spec in specs:
        if spec.startswith("base:"):
            name = "base"
        else:
            parts = [x for x in Path(spec).parts if x not in ("/", ".", "..")]
            if len(parts) >= 2 and parts[-1] in ("policy", "reward_model"):
                name = f"{parts[-2]}-{parts[-1]}"
            else:
                name = parts[-1] if parts else spec
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"
        label, n = name, 2
        while label in labels:
            label, n = f"{name}-{n}", n + 1
        labels.append(label)
    return labels


def device_for(hw) -> str:
    import torch

    if hw.accelerator in ("gpu", "cuda") or (
        hw.accelerator == "auto" and torch.cuda.is_available()
    ):
        return "cuda"
    return "cpu"


def load_lm(
    path: str,
    *,
    dtype: str,
    attn: str,
    device: str,
    trust_remote_code: bool = False,
    revision: str | None = None,
    what: str = "model",
    allow_pickle: bool = False,
):
    """``AutoModelForCausalLM`` + tokenizer (with a pad token), on ``device``, in eval mode.

    Weights from safetensors only unless ``allow_pickle`` (pickled ``.bin`` weights can run code
    when loaded; see :func:`mplus.models.pretrained.from_pretrained_kwargs`).

    Raises:
        EvalError: naming ``what`` and ``path`` when either cannot be loaded.
    """
    from mplus.models.tokenizer import load_tokenizer

    if Path(path).is_dir():
        revision = None  # a revision names a hub commit; a local dir is what it is

    def load():
        from transformers import AutoModelForCausalLM

        from mplus.models.pretrained import from_pretrained_kwargs

        kw = from_pretrained_kwargs(dtype, attn, trust_remote_code, allow_pickle)
        if device != "cpu":
            kw["device_map"] = device  # straight onto the GPU, no full copy in host memory
        return AutoModelForCausalLM.from_pretrained(path, revision=revision, **kw)

    model = _or_fail(load, what, path)
    tok = _or_fail(
        lambda: load_tokenizer(path, revision=revision, trust_remote_code=trust_remote_code),
        what,
        path,
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.to(device).eval().requires_grad_(False), tok


def load_classifier(
    path: str,
    *,
    device: str,
    dtype: str = "auto",
    what: str = "classifier",
    allow_pickle: bool = False,
):
    """``AutoModelForSequenceClassification`` + tokenizer, as saved (its own number of labels);
    safetensors only unless ``allow_pickle``, as :func:`load_lm`."""
    from mplus.models.tokenizer import load_tokenizer

    def load():
        from transformers import AutoModelForSequenceClassification

        from mplus.models.pretrained import from_pretrained_kwargs

        kw = from_pretrained_kwargs(dtype, "auto", allow_pickle=allow_pickle)
        return AutoModelForSequenceClassification.from_pretrained(path, **kw)

    model = _or_fail(load, what, path)
    tok = _or_fail(lambda: load_tokenizer(path), what, path)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model.to(device).eval().requires_grad_(False), tok


def model_inputs(model, enc) -> dict:
    """The tokenizer outputs ``model.forward`` takes (decoders take no ``token_type_ids``), on its device."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return {k: v.to(model.device) for k, v in enc.items() if k in params}


def _or_fail(fn, what: str, path: str):
    try:
        return fn()
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EvalError(f"{what} {path!r}: cannot load it ({type(e).__name__}: {first})") from e


def free() -> None:
    """Collect garbage and hand cached accelerator memory back (call after dropping the model)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- data files


def load_rows(source: str, *, split: str, key: str) -> list[dict[str, Any]]:
    """Rows of a local JSONL(.gz) file, or of a hub dataset's ``split``.

    Raises:
        EvalError: the local file is missing or malformed (file and line), or the hub dataset
            cannot be loaded (offline, misspelt); the message names ``key``.
    """
    from mplus.data.hh import DataFileError, read_jsonl

    p = Path(str(source)).expanduser()
    if p.is_file():
        try:
            return read_jsonl(p)
        except DataFileError as e:
            raise EvalError(f"{key}: {e}") from e
    check_local(source, key)
    try:
        import datasets

        ds = datasets.load_dataset(str(source), split=split)
    except Exception as e:  # any hub failure (offline, misspelt id) becomes one clear line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EvalError(
            f"{key}={source}: cannot load the hub dataset ({type(e).__name__}: "
            f"{first}); give a local file in the same format"
        ) from e
    return [dict(r) for r in ds]


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def chunks(seq, n: int):
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
