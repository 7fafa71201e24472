"""The export itself: gather the weights, merge LoRA, cast, save, then finish the files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mplus import distributed as D
from mplus.export.cards import policy_card, reward_model_card
from mplus.export.files import (
    _set_config_pad,
    finish_tokenizer_files,
    sanitize_json_file,
    write_generation_config,
)

_CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def export_model(
    model,
    tokenizer,
    out: Path,
    dtype: str | None = None,
    *,
    kind: str | None = None,
    cfg=None,
    algo=None,
    summary: Mapping | None = None,
) -> None:
    """Save in Hugging Face format (LoRA merged in), loadable with ``from_pretrained`` alone.

    A sharded model is gathered into one full state dict (every rank takes part) and written once,
    by rank 0. ``dtype`` (``model.dtype``): weights trained as fp32 masters under mixed precision
    are written in the model's own dtype (bf16 for a 7B), not doubled. Neither ``model`` nor
    ``tokenizer`` is changed: LoRA is merged into a CPU copy, and the saved tokenizer files are
    rewritten on disk.

    Args:
        kind: ``"policy"`` or ``"reward_model"``; None infers it from the model class.
        cfg: The run's validated config, for the model card (None: a card without run details).
        algo: The config of the stage that trained this model (default ``cfg.algo``; the reward
            model a PPO run trains has its own, ``cfg.algo.rm``).
        summary: The run's flat metrics so far; the card lists them as the final results.
    """
    from mplus.models.builders import torch_dtype

    full = D.full_state_dict(model)  # None unless sharded
    if D.is_rank_zero():
        if hasattr(model, "merge_and_unload"):  # peft: merge into a CPU copy, `model` untouched
            if full is None:
                full = _cpu_copy(model.state_dict())
            model, full = D.unsharded_peft_copy(model, full), None
            model = model.merge_and_unload()
        kind = kind or infer_kind(model)
        if kind not in ("policy", "reward_model"):
            raise ValueError(f"kind must be 'policy' or 'reward_model', got {kind!r}")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        sd = full if full is not None else model.state_dict()
        dt = torch_dtype(dtype) if dtype and dtype != "auto" else None
        if dt is not None:
            sd = {k: v.to(dt) if v.is_floating_point() else v for k, v in sd.items()}
        model.save_pretrained(out, safe_serialization=True, state_dict=sd)
        tokenizer.save_pretrained(out)
        finish_tokenizer_files(
            out, tokenizer, model.config, padding_side="left" if kind == "policy" else "right"
        )
        if kind == "policy":
            write_generation_config(out, model, tokenizer)
        else:
            _set_config_pad(out, tokenizer)
        for name in _CONFIG_FILES:
            sanitize_json_file(out / name)
        card = (policy_card if kind == "policy" else reward_model_card)(
            cfg=cfg, algo=algo, summary=summary, model=model, tokenizer=tokenizer, out=out
        )
        (out / "README.md").write_text(card)
    D.barrier()


def _cpu_copy(sd: dict) -> dict:
    """A CPU copy of a state dict; tensors shared in it (tied weights) stay shared."""
    copies: dict = {}
    out = {}
    for k, v in sd.items():
        key = (v.device, v.data_ptr())
        if key not in copies:
            copies[key] = v.detach().to("cpu", copy=True)
        out[k] = copies[key]
    return out


def infer_kind(model) -> str:
    """``"reward_model"`` for a sequence-classification (scalar head) model, else ``"policy"``."""
    names = [type(model).__name__, *(getattr(model.config, "architectures", None) or [])]
    return "reward_model" if any("ForSequenceClassification" in n for n in names) else "policy"
