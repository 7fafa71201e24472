"""Schemas of the ``data`` group: what every data source has, the synthetic task, HH-RLHF."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from mplus.config_common import _check

# ---------------------------------------------------------------- data


@dataclass
class DataConfig:
    """What every data source has; its option (``data=<name>``) has its own subclass."""

    name: str = MISSING  # the option's name (conf/data/<name>.yaml)
    max_length: int = 256  # tokens of prompt + response; longer pairs are skipped and counted
    num_eval_prompts: int = 64  # held-out prompts for before/after PPO measurement
    seed: int = 0  # seed of the data's draws and splits (the options set it to the run's seed)

    def __post_init__(self) -> None:
        _check(self.max_length > 8, "data.max_length", "must be > 8")
        _check(self.num_eval_prompts > 0, "data.num_eval_prompts", "must be > 0")


@dataclass
class SyntheticDataConfig(DataConfig):
    """The embedded synthetic task (:mod:`mplus.data.synthetic`): HH-format dialogues with harmful
    and benign requests and a ground-truth reward (``gold_reward``)."""

    max_length: int = 160  # tokens of prompt + response; longer pairs are skipped and counted
    num_eval_prompts: int = 128  # held-out prompts for before/after PPO measurement
    num_train_pairs: int = 4000  # preference pairs for the reward model / DPO / SFT
    num_val_pairs: int = 400  # held-out preference pairs (validation accuracy)
    num_prompts: int = 2048  # PPO rollout prompts
    label_noise: float = 0.0  # fraction of pairs whose chosen/rejected labels are swapped
    multi_turn_fraction: float = 0.3  # fraction of dialogues with an earlier exchange
    harmful_fraction: float = 0.5  # fraction of prompts with a harmful request

    def __post_init__(self) -> None:
        super().__post_init__()
        for k in ("num_train_pairs", "num_val_pairs", "num_prompts"):
            _check(getattr(self, k) > 0, f"data.{k}", "must be > 0")
        _check(0.0 <= self.label_noise <= 0.5, "data.label_noise", "must be in [0, 0.5]")
        for k in ("multi_turn_fraction", "harmful_fraction"):
            _check(0.0 <= getattr(self, k) <= 1.0, f"data.{k}", "must be in [0, 1]")


@dataclass
class HHDataConfig(DataConfig):
    """Anthropic HH-RLHF from the hub (one data_dir per subset), or local JSONL(.gz) files in
    the same format (``data.files=/path/to/file.jsonl.gz``)."""

    max_length: int = 512  # tokens of prompt + response; longer pairs are skipped and counted
    hub_path: str = "Anthropic/hh-rlhf"  # hub dataset id
    files: Any = None  # local JSONL(.gz) path(s) in the hub format; replaces the hub download
    # subset (hub data_dir) -> share of the train pairs drawn from it
    mix: dict[str, float] = field(default_factory=lambda: {"harmless-base": 1.0})
    max_pairs: int | None = None  # total train pairs drawn by the mix; null = as many as it allows
    val_fraction: float = 0.05  # share of the pairs held out for validation
    num_prompts: int | None = None  # PPO prompts (from train pairs); null = all

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 < self.val_fraction < 0.5, "data.val_fraction", "must be in (0, 0.5)")
        _check(len(self.mix) > 0, "data.mix", "needs at least one subset")
        for k, w in self.mix.items():
            _check(w >= 0, f"data.mix.{k}", f"weight must be >= 0, got {w}")
        _check(sum(self.mix.values()) > 0, "data.mix", "weights must not all be 0")
