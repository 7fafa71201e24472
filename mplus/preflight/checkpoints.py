"""Start-of-run checks of ``ckpt_path``: a checkpoint is inspected without unpickling it
(:mod:`pickletools` lists its strings and the globals it would import). A global outside torch's
own modules is refused outright (a weights-only load refuses it too); torch is imported only for a
global of its modules that is not on the short list every mplus checkpoint uses, to let
``torch.load(weights_only=True)`` judge it.
"""

from __future__ import annotations

import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from mplus.config.rl import RL_ALGOS
from mplus.errors import CheckpointError
from mplus.rundir import SHARED_STATE_KEYS, rl_state_key

# ``ckpt_path=last``: the newest checkpoint of this run dir, found by the pipeline at resume time.
LAST = "last"

# the algorithms that resume from ckpt_path, and the stages whose checkpoints they take
_RESUMABLE = ("rm", "sft", "dpo", *RL_ALGOS)
# one-file checkpoints up to this size have every member's CRC checked (~1 s per GiB)
CRC_CHECK_MAX_BYTES = 2 << 30


# ---------------------------------------------------------------- checkpoints


@dataclass
class _Scan:
    """What a pickle would do, read without running it: its strings and the globals it imports."""

    strings: set[str] = field(default_factory=set)
    globals: set[str] = field(default_factory=set)  # "module.name"; "?" when not determinable


# Globals every mplus/Lightning checkpoint imports, all of which torch.load(weights_only=True)
# allows: tensors and storages, dtypes, OrderedDict, bytes. Other globals of these modules are
# left to torch's judgement; any other module, torch's weights-only unpickler refuses outright.
_WEIGHTS_ONLY_MODULES = ("torch", "collections", "builtins", "_codecs")
_SAFE_MODULE_NAMES = {
    "collections": {"OrderedDict", "Counter"},
    "_codecs": {"encode"},
    "builtins": {"set", "bytearray", "complex"},
    "torch._utils": {"_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter"},
    "torch": {
        "Size",
        "device",
        "float32",
        "float16",
        "bfloat16",
        "float64",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint8",
        "bool",
    },
    "torch.serialization": {"_get_layout"},
}
# what torch.distributed.checkpoint's .metadata (a plain pickle, sharded checkpoints) imports:
# its dataclasses, and the checkpoint's path
_DCP_MODULES = (
    "torch.distributed.checkpoint.metadata",
    "torch.distributed.checkpoint.filesystem",
    "torch.distributed.checkpoint.planner",
)
_DCP_NAMES = {
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath",
}


def _is_safe(name: str, *, dcp: bool = False) -> bool:
    module, _, attr = name.rpartition(".")
    if module == "torch" and attr.endswith("Storage"):
        return True
    if dcp and (module in _DCP_MODULES or name in _DCP_NAMES):
        return True
    return attr in _SAFE_MODULE_NAMES.get(module, ())


_STRING_OPS = {
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "UNICODE",
    "BINUNICODE8",
    "SHORT_BINSTRING",
    "BINSTRING",
    "STRING",
}


def _scan_pickle(data: bytes) -> _Scan:
    """Strings and imported globals of a pickle, via :func:`pickletools.genops` (no unpickling).

    A protocol-4 ``STACK_GLOBAL`` takes its module and name from the two values pushed just
    before it (strings, or strings fetched from the memo); when the two last steps were anything
    else the global is recorded as ``"?"`` (not determinable, so never judged safe here).

    Raises:
        ValueError: the bytes are not a complete pickle.
    """
    scan = _Scan()
    memo: dict[int, str | None] = {}
    last: list[str | None] = [None, None]  # the values of the last two pushes; None: not a str
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name in _STRING_OPS and isinstance(arg, str | bytes):
            s = arg if isinstance(arg, str) else arg.decode("latin-1")
            scan.strings.add(s)
            last = [last[-1], s]
        elif name == "MEMOIZE":
            memo[len(memo)] = last[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = last[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            last = [last[-1], memo.get(int(arg))]
        else:
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                scan.globals.add(f"{module}.{attr}")
            elif name == "STACK_GLOBAL":
                scan.globals.add(f"{last[0]}.{last[1]}" if None not in last else "?")
            elif name in ("EXT1", "EXT2", "EXT4"):  # the copyreg extension registry: not followed
                scan.globals.add("?")
            last = [last[-1], None]
    return scan


def _read_pickle(path: Path, key: str, *, torch_file: bool) -> bytes:
    """The pickle of a checkpoint: a torch zip archive's ``data.pkl`` (``torch_file``), else the
    file itself (torch.distributed.checkpoint's ``.metadata``)."""
    try:
        if not torch_file:
            return path.read_bytes()
        if not zipfile.is_zipfile(path):
            # torch.save has written zip archives since torch 1.6; Lightning always uses it.
            raise CheckpointError(
                f"{key}: not a torch checkpoint (not a zip archive): "
                "truncated, corrupt, or another kind of file"
            )
        with zipfile.ZipFile(path) as z:
            members = [n for n in z.namelist() if n.endswith("data.pkl")]
            if not members:
                raise CheckpointError(
                    f"{key}: not a torch checkpoint (a zip file without data.pkl)"
                )
            data = z.read(min(members, key=len))  # read() checks the member's CRC
            # torch does not check the tensors' CRCs when it loads: a flipped byte would resume
            # with wrong weights. Checked here up to a size that reads in seconds.
            if path.stat().st_size <= CRC_CHECK_MAX_BYTES and (bad := z.testzip()) is not None:
                raise CheckpointError(
                    f"{key}: corrupt checkpoint: {bad} does not match its checksum"
                )
            return data
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{key}: cannot read the checkpoint, it is corrupt or incomplete "
            f"({type(e).__name__}: {e})"
        ) from e


def _weights_only_refuses(path: Path) -> str | None:
    """torch's own verdict on a pickle that names an unusual global: the first line of the
    refusal of ``torch.load(weights_only=True)``, or None if it loads."""
    import pickle

    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        why = next((x for x in lines if "Unsupported" in x or "global" in x.lower()), lines[0])
        return why.removeprefix("WeightsUnpickler error: ")
    except Exception:  # noqa: BLE001  anything else is reported by the scan's own checks
        return None
    return None


def _inspect_file(path: Path, key: str, *, dcp: bool = False, torch_file: bool = True) -> _Scan:
    data = _read_pickle(path, key, torch_file=torch_file)
    try:
        scan = _scan_pickle(data)
    except ValueError as e:
        raise CheckpointError(
            f"{key}: cannot read the checkpoint, it is corrupt or incomplete (bad pickle: {e})"
        ) from e
    unknown = sorted(g for g in scan.globals if not _is_safe(g, dcp=dcp))
    if unknown:
        # Only a global of torch's own modules (or one the scan could not name) needs torch's
        # verdict; anything else a weights-only load refuses, so torch is not even imported.
        judge = torch_file and all(
            g == "?" or g.split(".")[0] in _WEIGHTS_ONLY_MODULES for g in unknown
        )
        why = _weights_only_refuses(path) if judge else None
        if not judge or why is not None:
            detail = f" ({why})" if why else ""
            raise CheckpointError(
                f"{key}: refusing to load {path.name}: unpickling it would import "
                f"{', '.join(unknown)}, which a weights-only load does not allow{detail}"
            )
    return scan


def checkpoint_stage(strings: set[str]) -> str | None:
    """The stage (algo name) a checkpoint's keys belong to, or None if none matches.

    An RL stage saves its state under ``mplus_<algo>`` (``mplus_ppo``, ``mplus_grpo``: see
    :func:`mplus.rundir.rl_state_key`) and ``policy.*`` (PPO also ``value_model.*``); DPO
    ``policy.*``; the reward model ``model.*`` with a ``score`` head; SFT ``model.*`` with an
    ``lm_head``. Sharded checkpoints name their keys ``state_dict.<key>``.
    """
    keys = {s.removeprefix("state_dict.") for s in strings}
    rl = sorted(
        k.removeprefix(rl_state_key(""))
        for k in keys
        if k.startswith(rl_state_key("")) and k not in SHARED_STATE_KEYS
    )
    if rl:
        return rl[0]
    if any(k.startswith("value_model.") for k in keys):
        return "ppo"
    if any(k.startswith("policy.") for k in keys):
        return "dpo"
    model_keys = [k for k in keys if k.startswith("model.")]
    if any(".score." in k or k.endswith(".score.weight") for k in model_keys):
        return "rm"
    if any(".lm_head." in k or k.endswith(".lm_head.weight") for k in model_keys):
        return "sft"
    return None


def check_checkpoint(ckpt_path: str | None, algo: str) -> None:
    """``ckpt_path`` is a readable checkpoint of ``algo``'s stage that a weights-only load takes.

    ``None`` and :data:`LAST` pass (``last`` is looked up in the run dir when the stage starts).
    One-file checkpoints are torch zip archives; sharded ones (``hardware.strategy=fsdp``) are
    folders with Lightning's ``meta.pt`` and torch.distributed.checkpoint's ``.metadata``.

    Raises:
        CheckpointError: naming ``ckpt_path`` and what is wrong.
    """
    if ckpt_path is None or str(ckpt_path) == LAST:
        return
    key = f"ckpt_path={ckpt_path}"
    if algo not in _RESUMABLE:
        raise CheckpointError(
            f"{key}: algo={algo} trains nothing, so there is nothing to resume; drop ckpt_path"
        )
    p = Path(str(ckpt_path)).expanduser()
    if not p.exists():
        raise CheckpointError(f"{key}: no such file")
    if p.is_dir():
        if not (p / "meta.pt").is_file() or not (p / ".metadata").is_file():
            raise CheckpointError(
                f"{key}: a directory, but not a sharded checkpoint (no meta.pt "
                "and .metadata); give a .ckpt file or a sharded checkpoint"
            )
        strings = _inspect_file(p / "meta.pt", key).strings
        strings |= _inspect_file(p / ".metadata", key, dcp=True, torch_file=False).strings
    else:
        strings = _inspect_file(p, key).strings
    stage = checkpoint_stage(strings)
    if stage is None:
        raise CheckpointError(
            f"{key}: not an mplus training checkpoint (no state_dict keys of a known stage)"
        )
    if stage != algo:
        raise CheckpointError(
            f"{key}: a checkpoint of the {stage} stage (algo={stage}), not of algo={algo}; "
            f"resume algo={algo} from its own checkpoints/{algo}/ or drop ckpt_path"
        )
