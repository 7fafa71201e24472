"""Model builders: the same code path loads the cached tiny base and a 7B hub model.

Real models load with ``from_pretrained`` (safetensors only unless ``model.allow_pickle``,
``trust_remote_code`` off unless configured, attention implementation from the hardware group).
``build_meta_model`` builds the architecture from the config YAML's ``hf_config`` on the meta
device, downloading nothing.
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


def from_pretrained_kwargs(
    dtype: str,
    attn_implementation: str,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> dict:
    """``from_pretrained`` arguments for a dtype name and an attention implementation.

    Weights load from safetensors only: a pickled ``pytorch_model.bin`` can run code when it is
    unpickled. ``allow_pickle`` (``model.allow_pickle``) lets a model without safetensors load its
    ``.bin`` weights (transformers then unpickles them with ``torch.load(weights_only=True)``).
    """
    kw = {
        "dtype": torch_dtype(dtype),
        "trust_remote_code": trust_remote_code,
        # None: prefer safetensors, fall back to .bin; True: safetensors or an error
        "use_safetensors": None if allow_pickle else True,
    }
    if attn_implementation != "auto":
        kw["attn_implementation"] = attn_implementation
    return kw


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

    Loading a causal-LM checkpoint here keeps the backbone and initialises a fresh ``score`` head.
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
        model = _from_pretrained(
            AutoModelForSequenceClassification,
            path,
            model_cfg,
            num_labels=1,
            revision=revision,
            **_common_kwargs(model_cfg, attn_implementation, dtype),
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


def tiny_hf_config(arch, **overrides):
    """The embedded tiny model's Mistral config from ``model.arch``."""
    from transformers import MistralConfig

    kw = dict(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        max_position_embeddings=arch.max_position_embeddings,
        sliding_window=None,
        tie_word_embeddings=False,
    )
    return MistralConfig(**{**kw, **overrides})


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
