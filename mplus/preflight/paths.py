"""Start-of-run checks of paths: the run dir, and model folders (``config.json`` and weights that
load without unpickling, unless ``model.allow_pickle``)."""

from __future__ import annotations

from pathlib import Path

from mplus.config import ConfigError
from mplus.errors import ModelFilesError

# ---------------------------------------------------------------- run dir


def check_run_dir(run_dir: str) -> None:
    p = Path(run_dir).expanduser()
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                where = "is a file" if q == p else f"is under {q}, which is a file"
                raise ConfigError(f"run_dir={run_dir}: {where}, not a directory")
            return


# ---------------------------------------------------------------- models


def _looks_like_path(spec: str) -> bool:
    from mplus.eval.common import looks_like_path  # light: no torch

    return looks_like_path(spec)


def check_model_dir(spec: str | None, key: str, *, allow_pickle: bool, hub: bool = False) -> None:
    """A local model folder must hold ``config.json`` and loadable weights.

    ``hub``: ``spec`` may also be a hub id (anything that does not look like a path and is not
    there); a hub model is checked when it loads (safetensors only, see
    :func:`mplus.models.builders.from_pretrained_kwargs`).

    Raises:
        ModelFilesError: ``"<key>=<spec>: <what is wrong>"``.
    """
    if spec is None:
        return
    p = Path(str(spec)).expanduser()
    if not p.exists():
        if hub and not _looks_like_path(str(spec)):
            return
        raise ModelFilesError(f"{key}={spec}: no such directory")
    if not p.is_dir():
        raise ModelFilesError(f"{key}={spec}: a file, not a model folder")
    if not (p / "config.json").is_file():
        raise ModelFilesError(f"{key}={spec}: no config.json there (not an exported model folder)")
    check_model_weights(p, allow_pickle=allow_pickle, label=f"{key}={spec}")


def check_model_weights(
    folder: str | Path, *, allow_pickle: bool, label: str | None = None
) -> None:
    """Refuse a model folder whose only weights are pickled, unless ``allow_pickle``.

    Unpickling a file can run any code it names (a ``pytorch_model.bin`` is a pickle);
    safetensors holds only tensors. ``label`` starts the message (default: the folder).

    Raises:
        ModelFilesError: no weights at all, or only pickled ones without ``allow_pickle``.
    """
    p = Path(folder)
    label = label or str(folder)
    if any(p.glob("*.safetensors")):
        return
    pickled = sorted(x.name for x in p.glob("*.bin"))
    if not pickled:
        raise ModelFilesError(f"{label}: no model weights (*.safetensors) there")
    if not allow_pickle:
        raise ModelFilesError(
            f"{label}: only pickled weights ({pickled[0]}) there, and loading a pickle can run "
            "code: convert them to safetensors, or set model.allow_pickle=true if you trust the "
            "files"
        )
