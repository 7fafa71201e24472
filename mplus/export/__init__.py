"""Exports in Hugging Face format that downstream tools load with ``from_pretrained`` alone.

A run writes two kinds of export, each usable as it is by plain transformers:

``policy/`` (PPO, SFT, DPO)
    The causal LM (LoRA merged in); a tokenizer that pads on the **left** (what batched
    ``generate`` needs; training keeps its own right-padded copy) with ``model_max_length`` equal
    to the model's context; a ``generation_config.json`` holding EOS and pad only, so a plain
    ``model.generate(**inputs)`` works (no ``stop_strings`` there: transformers then refuses every
    ``generate`` call made without ``tokenizer=``); and a ``README.md`` model card with the base,
    data, algorithm and hyperparameters, final metrics, the HH prompt format and a generation
    snippet that stops at the next ``"\\n\\nHuman:"`` turn.

``reward_model/``
    The scalar-head model; its tokenizer keeps **right** padding, as the model was trained
    (transformers' sequence-classification pooling reads the rightmost non-pad token, so left
    padding scores the same); a ``README.md`` saying what the score means, with its
    normalisation stats.

Saved JSON configs carry nothing machine-specific (``is_local``, ``local_files_only``,
``name_or_path``, absolute paths).
"""

from __future__ import annotations

from mplus.export.cards import policy_card, reward_model_card
from mplus.export.files import (
    MACHINE_KEYS,
    context_length,
    finish_tokenizer_files,
    sanitize_json_file,
    write_generation_config,
)
from mplus.export.model import export_model, infer_kind
from mplus.export.sections import CARD_PROMPTS, HH_STOP, generation_snippet, sampling_settings

__all__ = [
    "CARD_PROMPTS",
    "HH_STOP",
    "MACHINE_KEYS",
    "context_length",
    "export_model",
    "finish_tokenizer_files",
    "generation_snippet",
    "infer_kind",
    "policy_card",
    "reward_model_card",
    "sampling_settings",
    "sanitize_json_file",
    "write_generation_config",
]
