"""Model builders: the same code path loads the cached tiny base and a 7B hub model.

Real models load with ``from_pretrained`` (safetensors only unless ``model.allow_pickle``,
``trust_remote_code`` off unless configured, attention implementation from the hardware group).
``build_meta_model`` builds the architecture from the config YAML's ``hf_config`` on the meta
device, downloading nothing.

The embedded tiny model's code (:func:`tiny_hf_config`, :func:`resolve_base`) lives in
:mod:`mplus.models.base` and the ``from_pretrained`` policy (:func:`from_pretrained_kwargs`,
:func:`torch_dtype`) in :mod:`mplus.models.pretrained`; this module imports them, neither imports
it, and all four names stay importable from here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mplus.models.base import resolve_base, tiny_hf_config  # noqa: F401  (resolve_base: re-export)
from mplus.models.pretrained import from_pretrained_kwargs, torch_dtype  # noqa: F401

log = logging.getLogger(__name__)


def _common_kwargs(model_cfg, attn_implementation: str, dtype: str | None = None) -> dict:
    return from_pretrained_kwargs(
        dtype or model_cfg.dtype,
        attn_implementation,
        model_cfg.trust_remote_code,
        getattr(model_cfg, "allow_pickle", False),
    )


def _from_pretrained(auto_cls, path: str, model_cfg, **kw):
    """``auto_cls.from_pretrained`` that refuses pickled-only weights with one clear line.

    Raises:
        mplus.errors.ModelFilesError: ``path`` has only ``.bin`` weights (a local folder: before
            reading them; a hub id: transformers finds no safetensors) and ``model.allow_pickle``
            is off.
    """
    from mplus.errors import ModelFilesError
    from mplus.preflight import check_model_weights

    allow = getattr(model_cfg, "allow_pickle", False)
    if Path(path).is_dir():
        check_model_weights(path, allow_pickle=allow)
    try:
        return auto_cls.from_pretrained(path, **kw)
    except OSError as e:
        if allow or "safetensors" not in str(e):
            raise
        raise ModelFilesError(
            f"{path}: no safetensors weights ({str(e).strip().splitlines()[0]}); set "
            "model.allow_pickle=true to load pickled .bin weights if you trust them"
        ) from e


def _empty(auto_cls, path: str, model_cfg, attn_implementation, dtype, revision, **config_kw):
    """The architecture of ``path`` with parameters on the meta device: no weights read.

    Used on FSDP ranks other than 0, which receive rank 0's weights after sharding
    (:func:`mplus.distributed.builds_empty`).
    """
    from transformers import AutoConfig

    from mplus.distributed import parameters_on_meta

    kw = _common_kwargs(model_cfg, attn_implementation, dtype)
    kw.pop("use_safetensors")  # from_config reads no weights
    config = AutoConfig.from_pretrained(
        path, revision=revision, trust_remote_code=kw.pop("trust_remote_code"), **config_kw
    )
    with parameters_on_meta():
        model = auto_cls.from_config(config, **kw)
    return model


def _mark_for_broadcast(model, hw_empty: bool | None):
    if hw_empty is not None:
        model._mplus_from_rank0 = True  # every rank: shard_model broadcasts rank 0's weights
    return model


def load_causal_lm(
    path: str,
    model_cfg,
    attn_implementation: str = "sdpa",
    revision=None,
    dtype: str | None = None,
    empty: bool | None = None,
):
    """``AutoModelForCausalLM.from_pretrained`` with the configured dtype/attention.

    ``dtype`` overrides ``model.dtype`` (see :func:`mplus.hardware.model_dtypes`). ``empty``:
    None for a plain load; False/True under multi-process FSDP, where True builds the model
    without weights (ranks other than 0) and both mark it to receive rank 0's weights.
    """
    from transformers import AutoModelForCausalLM

    if empty:
        model = _empty(AutoModelForCausalLM, path, model_cfg, attn_implementation, dtype, revision)
    else:
        model = _from_pretrained(
            AutoModelForCausalLM,
            path,
            model_cfg,
            revision=revision,
            **_common_kwargs(model_cfg, attn_implementation, dtype),
        )
    return _mark_for_broadcast(model, empty)


def load_reward_model(
    path: str,
    model_cfg,
    attn_implementation: str = "sdpa",
    pad_token_id=None,
    revision=None,
    dtype: str | None = None,
    empty: bool | None = None,
):
    """A scalar head (``num_labels=1``) on the backbone, reading the last non-pad token.

    Loading a causal-LM checkpoint here keeps the backbone and initialises a fresh ``score`` head
    (transformers' load report for it is replaced by one line: :func:`mplus.console.load_scalar_head`).
    ``dtype`` and ``empty`` as in :func:`load_causal_lm`.
    """
    from transformers import AutoModelForSequenceClassification

    if empty:
        model = _empty(
            AutoModelForSequenceClassification,
            path,
            model_cfg,
            attn_implementation,
            dtype,
            revision,
            num_labels=1,
        )
    else:
        from mplus.console import load_scalar_head

        model = load_scalar_head(
            lambda: _from_pretrained(
                AutoModelForSequenceClassification,
                path,
                model_cfg,
                num_labels=1,
                revision=revision,
                output_loading_info=True,
                **_common_kwargs(model_cfg, attn_implementation, dtype),
            ),
            path,
            revision=revision,
        )
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    return _mark_for_broadcast(model, empty)


def apply_lora(model, lora_cfg, task_type: str):
    """Wrap ``model`` with a peft LoRA adapter when ``lora_cfg.enabled`` (task SEQ_CLS/CAUSAL_LM)."""
    if not lora_cfg.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules),
        task_type=task_type,
    )
    model = get_peft_model(model, cfg)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA r=%d: %d trainable parameters", lora_cfg.r, n_train)
    return model


def disable_dropout(model):
    """Turn every dropout off (``nn.Dropout`` modules, LoRA's included, and attention dropout).

    RL needs it: old log-probs are computed in eval mode and the update runs in train mode, so
    with dropout on the first minibatch's ratio would not be 1 and PPO would be off-policy (TRL
    and OpenRLHF do the same). Attention dropout is an attribute read by the attention modules,
    not a module, so it is zeroed where it lives.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):
            m.attention_dropout = 0.0
    return model


def has_dropout(model) -> bool:
    """Whether any dropout :func:`disable_dropout` turns off is still on."""
    return any(
        (isinstance(m, torch.nn.Dropout) and m.p > 0)
        or (isinstance(getattr(m, "attention_dropout", None), float) and m.attention_dropout > 0)
        for m in model.modules()
    )


def hf_config_from(model_cfg):
    """A transformers config built from the YAML's ``hf_config`` (or the tiny ``arch``), offline."""
    from transformers import AutoConfig

    if model_cfg.hf_config is None and model_cfg.arch is not None:
        return tiny_hf_config(model_cfg.arch)
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
