"""Schema of the ``model`` group: the base model, the embedded tiny model's shape and
pretraining, LoRA."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from mplus.config_common import _check, _in

# ---------------------------------------------------------------- model


@dataclass
class TinyArch:
    """Shape of the embedded Mistral-architecture model (vocab comes from its tokenizer)."""

    vocab_size: int = 1024  # tokens of the tokenizer trained on the synthetic corpus
    hidden_size: int = 128  # width of the residual stream
    intermediate_size: int = 384  # width of each MLP
    num_hidden_layers: int = 4  # decoder layers
    num_attention_heads: int = 4  # query heads; must divide hidden_size
    num_key_value_heads: int = 2  # key/value heads (grouped-query attention)
    max_position_embeddings: int = 512  # longest sequence, tokens

    def __post_init__(self) -> None:
        for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers"):
            _check(getattr(self, k) > 0, f"model.arch.{k}", "must be > 0")
        _check(
            self.hidden_size % self.num_attention_heads == 0,
            "model.arch.num_attention_heads",
            "must divide hidden_size",
        )
        _check(
            self.num_attention_heads % self.num_key_value_heads == 0,
            "model.arch.num_key_value_heads",
            "must divide num_attention_heads",
        )


@dataclass
class PretrainConfig:
    """Causal-LM pretraining that turns the random tiny model into a base model (cached)."""

    steps: int = 400  # optimizer steps of causal-LM pretraining
    batch_size: int = 32  # packed sequences per step
    lr: float = 5e-3  # peak AdamW learning rate (linear warmup, then cosine decay)
    warmup_steps: int = 30  # steps of linear warmup
    corpus_docs: int = 20000  # synthetic documents in the pretraining corpus
    seq_len: int = 96  # tokens per packed sequence
    seed: int = 0  # the base model's own seed: run seeds do not rebuild the cached base

    def __post_init__(self) -> None:
        for k in ("steps", "batch_size", "corpus_docs", "seq_len"):
            _check(getattr(self, k) > 0, f"model.pretrain.{k}", "must be > 0")
        _check(self.lr > 0, "model.pretrain.lr", "must be > 0")


@dataclass
class LoraSettings:
    """A peft LoRA adapter on the trained models instead of full fine-tuning."""

    enabled: bool = False  # train LoRA adapters (the frozen reference is the adapter disabled)
    r: int = 8  # adapter rank
    alpha: int = 16  # LoRA scaling numerator (the update is scaled by alpha / r)
    dropout: float = 0.0  # dropout on the adapter's input (turned off for RL anyway)
    # the linear layers that get adapters (names inside the transformers model)
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )

    def __post_init__(self) -> None:
        _check(self.r > 0, "model.lora.r", "must be > 0")
        _check(0.0 <= self.dropout < 1.0, "model.lora.dropout", "must be in [0, 1)")


@dataclass
class ModelConfig:
    """``name_or_path`` null means the embedded tiny model built from ``arch`` + ``pretrain``."""

    name: str = MISSING  # the option's name (conf/model/<name>.yaml)
    # hub id or local Hugging Face folder of the base model; null = the embedded tiny model
    name_or_path: str | None = None
    revision: str | None = None  # hub revision (branch, tag or commit) of name_or_path
    trust_remote_code: bool = False  # run the model repository's own Python code when loading
    # Load pickled ``pytorch_model.bin`` weights when a model has no safetensors. Off: unpickling
    # can run code, so such a model is refused at start, naming this key.
    allow_pickle: bool = False
    dtype: str = "float32"  # weights' dtype: float32 | bfloat16 | float16 | auto (the checkpoint's)
    num_parameters: float | None = None  # published size, for the planner and meta-device checks
    # The hub model's config.json values, so meta-device builds and the planner need no download.
    hf_config: dict[str, Any] | None = None
    arch: TinyArch | None = None  # the embedded tiny model's shape; null for a hub model
    pretrain: PretrainConfig | None = None  # how the tiny base is pretrained; null for a hub model
    lora: LoraSettings = field(default_factory=LoraSettings)  # LoRA instead of full fine-tuning

    def __post_init__(self) -> None:
        _in(self.dtype, ("float32", "bfloat16", "float16", "auto"), "model.dtype")
        _check(
            self.name_or_path is not None or self.arch is not None,
            "model.name_or_path",
            "set a hub id / local path, or model.arch for the embedded tiny model",
        )
