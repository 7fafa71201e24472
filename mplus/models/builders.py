"""Model builders: the same code path loads the cached tiny base and a 7B hub model.

Real models load with ``from_pretrained`` (safetensors preferred, ``trust_remote_code`` off unless
configured, attention implementation from the hardware group). ``build_meta_model`` builds the
architecture from the config YAML's ``hf_config`` on the meta device, downloading nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str):
    return "auto" if name == "auto" else _DTYPES[name]


def resolve_base(model_cfg, cache_dir: str) -> str:
    """Path or hub id of the base model; builds (once) the tiny base for ``model=tiny``."""
    if model_cfg.name_or_path is not None:
        return model_cfg.name_or_path
    from mplus.models.base import ensure_tiny_base

    return str(ensure_tiny_base(model_cfg, Path(cache_dir)))


def _common_kwargs(model_cfg, attn_implementation: str) -> dict:
    kw = {
        "dtype": torch_dtype(model_cfg.dtype),
        "trust_remote_code": model_cfg.trust_remote_code,
        "use_safetensors": None,  # prefer safetensors, fall back to .bin if that is all there is
    }
    if attn_implementation != "auto":
        kw["attn_implementation"] = attn_implementation
    return kw


def load_causal_lm(path: str, model_cfg, attn_implementation: str = "sdpa", revision=None):
    """``AutoModelForCausalLM.from_pretrained`` with the configured dtype/attention."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, revision=revision, **_common_kwargs(model_cfg, attn_implementation)
    )


def load_reward_model(path: str, model_cfg, attn_implementation: str = "sdpa", pad_token_id=None,
                      revision=None):
    """A scalar head (``num_labels=1``) on the backbone, reading the last non-pad token.

    Loading a causal-LM checkpoint here keeps the backbone and initialises a fresh ``score`` head.
    """
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, revision=revision, **_common_kwargs(model_cfg, attn_implementation)
    )
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    return model


def apply_lora(model, lora_cfg, task_type: str):
    """Wrap ``model`` with a peft LoRA adapter when ``lora_cfg.enabled`` (task SEQ_CLS/CAUSAL_LM)."""
    if not lora_cfg.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules), task_type=task_type,
    )
    model = get_peft_model(model, cfg)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA r=%d: %d trainable parameters", lora_cfg.r, n_train)
    return model


def hf_config_from(model_cfg):
    """A transformers config built from the YAML's ``hf_config`` (no download)."""
    from transformers import AutoConfig

    if model_cfg.hf_config is None:
        raise ValueError(f"model.hf_config is not set for model={model_cfg.name}")
    kw = dict(model_cfg.hf_config)
    return AutoConfig.for_model(kw.pop("model_type"), **kw)


def build_meta_model(model_cfg, kind: str = "causal_lm"):
    """Instantiate the architecture on the meta device: shapes and counts, no memory, no weights."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = hf_config_from(model_cfg)
    with torch.device("meta"):
        if kind == "causal_lm":
            return AutoModelForCausalLM.from_config(config)
        config.num_labels = 1
        return AutoModelForSequenceClassification.from_config(config)


def count_parameters(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
