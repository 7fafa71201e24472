"""What every stage is given: the typed config and what the run resolved once, with one model
factory bound to it (policy, reference, reward model, value model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mplus.config import TrainConfig
from mplus.data.build import PreferenceData


@dataclass(frozen=True)
class RunContext:
    """The run's resolved inputs, shared read-only by its stages.

    ``empty``: under multi-process FSDP, True on ranks that build models without weights (they
    receive rank 0's when sharded), False on rank 0; None otherwise (a plain load everywhere).
    """

    cfg: TrainConfig
    base_path: str
    tokenizer: Any
    data: PreferenceData
    attn: str  # attention implementation
    train_dtype: str  # parameters that train (fp32 master weights under mixed precision)
    frozen_dtype: str  # reference / reward models
    empty: bool | None
    # engines held for the run's length: the colocated vLLM engine (mplus.stages.evaluation)
    engines: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run_dir)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    # ------------------------------------------------------------ the model factory
    # ``sharded``: the model goes into a LightningModule that FSDP shards (built empty on ranks
    # other than 0 and filled from rank 0); False for a model every rank loads whole (the
    # held-out evaluation's reference and reward model, which are never sharded).

    def _empty(self, sharded: bool) -> bool | None:
        return self.empty if sharded else None

    def causal_lm(self, *, trainable: bool, sharded: bool = True):
        """The base as a causal LM: trainable (train dtype, train mode, LoRA when configured) or
        frozen (frozen dtype, eval mode, no gradients)."""
        from mplus.models.builders import apply_lora, load_causal_lm

        dtype = self.train_dtype if trainable else self.frozen_dtype
        model = load_causal_lm(
            self.base_path, self.cfg.model, self.attn, dtype=dtype, empty=self._empty(sharded)
        )
        if not trainable:
            return model.eval().requires_grad_(False)
        model.generation_config.pad_token_id = self.pad_id
        # from_pretrained returns eval mode and Lightning's fit keeps each module's mode:
        # trained in eval mode, dropout and activation checkpointing would silently be off
        return apply_lora(model.train(), self.cfg.model.lora, "CAUSAL_LM")

    def policy(self):
        """The trainable policy (its generation config pads with the tokenizer's pad)."""
        return self.causal_lm(trainable=True)

    def reference(self):
        """The frozen base a trained policy is held to, or None under LoRA (the policy with its
        adapters off is the reference)."""
        if self.cfg.model.lora.enabled:
            return None
        return self.causal_lm(trainable=False)

    def scalar_model(self, path: str | Path | None = None, *, trainable: bool, sharded=True):
        """A scalar-head model (reward or value model) from ``path`` (default: the base, with a
        fresh head): trainable (train dtype, train mode, LoRA when configured) or frozen (frozen
        dtype)."""
        from mplus.models.builders import apply_lora, load_reward_model

        model = load_reward_model(
            str(path or self.base_path),
            self.cfg.model,
            self.attn,
            pad_token_id=self.pad_id,
            dtype=self.train_dtype if trainable else self.frozen_dtype,
            empty=self._empty(sharded),
        )
        if not trainable:
            return model
        return apply_lora(model.train(), self.cfg.model.lora, "SEQ_CLS")  # train mode: as above
