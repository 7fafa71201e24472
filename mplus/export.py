"""Exports in Hugging Face format that downstream tools load with ``from_pretrained`` alone."""

from __future__ import annotations

from pathlib import Path

from mplus import distributed as D


def export_model(model, tokenizer, out: Path, dtype: str | None = None) -> None:
    """Save in Hugging Face format (LoRA merged in), loadable with ``from_pretrained`` alone.

    A sharded model is gathered into one full state dict (every rank takes part) and written once,
    by rank 0. ``dtype`` (``model.dtype``): weights trained as fp32 masters under mixed precision
    are written in the model's own dtype (bf16 for a 7B), not doubled.
    """
    from mplus.models.builders import torch_dtype

    full = D.full_state_dict(model)  # None unless sharded
    if D.is_rank_zero():
        if full is not None and hasattr(model, "merge_and_unload"):  # sharded LoRA model
            model, full = D.unsharded_peft_copy(model, full), None
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        out.mkdir(parents=True, exist_ok=True)
        sd = full if full is not None else model.state_dict()
        dt = torch_dtype(dtype) if dtype and dtype != "auto" else None
        if dt is not None:
            sd = {k: v.to(dt) if v.is_floating_point() else v for k, v in sd.items()}
        model.save_pretrained(out, safe_serialization=True, state_dict=sd)
        tokenizer.save_pretrained(out)
    D.barrier()
