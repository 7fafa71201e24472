"""Typed schema of every config group, registered in Hydra's ConfigStore.

Each option YAML under ``conf/<group>/`` starts from one of these schemas (its defaults list names
``<group>_schema`` or ``<algo>_schema``), so a misspelt key fails at composition and a wrong type
fails at load. Range checks run in ``__post_init__`` when :func:`validate` turns the composed
config into these dataclasses, before any model is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from mplus.errors import UserError


class ConfigError(UserError, ValueError):
    """A config value is out of range or inconsistent; the message names the key.

    A :class:`mplus.errors.UserError` (one line, exit 2 from the command line), and still a
    ``ValueError`` for code that catches it as one.
    """


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


def _in(value: Any, allowed: tuple, key: str) -> None:
    _check(value in allowed, key, f"must be one of {list(allowed)}, got {value!r}")


# ---------------------------------------------------------------- model


@dataclass
class TinyArch:
    """Shape of the embedded Mistral-architecture model (vocab comes from its tokenizer)."""

    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512

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

    steps: int = 400
    batch_size: int = 32
    lr: float = 5e-3
    warmup_steps: int = 30
    corpus_docs: int = 20000
    seq_len: int = 96
    seed: int = 0  # the base model's own seed: run seeds do not rebuild the cached base

    def __post_init__(self) -> None:
        for k in ("steps", "batch_size", "corpus_docs", "seq_len"):
            _check(getattr(self, k) > 0, f"model.pretrain.{k}", "must be > 0")
        _check(self.lr > 0, "model.pretrain.lr", "must be > 0")


@dataclass
class LoraSettings:
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )

    def __post_init__(self) -> None:
        _check(self.r > 0, "model.lora.r", "must be > 0")
        _check(0.0 <= self.dropout < 1.0, "model.lora.dropout", "must be in [0, 1)")


@dataclass
class ModelConfig:
    """``name_or_path`` null means the embedded tiny model built from ``arch`` + ``pretrain``."""

    name: str = MISSING
    name_or_path: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    # Load pickled ``pytorch_model.bin`` weights when a model has no safetensors. Off: unpickling
    # can run code, so such a model is refused at start, naming this key.
    allow_pickle: bool = False
    dtype: str = "float32"
    num_parameters: float | None = None  # published size, for the planner and meta-device checks
    # The hub model's config.json values, so meta-device builds and the planner need no download.
    hf_config: dict[str, Any] | None = None
    arch: TinyArch | None = None
    pretrain: PretrainConfig | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)

    def __post_init__(self) -> None:
        _in(self.dtype, ("float32", "bfloat16", "float16", "auto"), "model.dtype")
        _check(
            self.name_or_path is not None or self.arch is not None,
            "model.name_or_path",
            "set a hub id / local path, or model.arch for the embedded tiny model",
        )


# ---------------------------------------------------------------- data


@dataclass
class DataConfig:
    name: str = MISSING
    max_length: int = 256  # tokens of prompt + response; longer pairs are skipped and counted
    num_eval_prompts: int = 64  # held-out prompts for before/after PPO measurement
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.max_length > 8, "data.max_length", "must be > 8")
        _check(self.num_eval_prompts > 0, "data.num_eval_prompts", "must be > 0")


@dataclass
class SyntheticDataConfig(DataConfig):
    num_train_pairs: int = 4000
    num_val_pairs: int = 400
    num_prompts: int = 2048
    label_noise: float = 0.0
    multi_turn_fraction: float = 0.3
    harmful_fraction: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        for k in ("num_train_pairs", "num_val_pairs", "num_prompts"):
            _check(getattr(self, k) > 0, f"data.{k}", "must be > 0")
        _check(0.0 <= self.label_noise <= 0.5, "data.label_noise", "must be in [0, 0.5]")
        for k in ("multi_turn_fraction", "harmful_fraction"):
            _check(0.0 <= getattr(self, k) <= 1.0, f"data.{k}", "must be in [0, 1]")


@dataclass
class HHDataConfig(DataConfig):
    hub_path: str = "Anthropic/hh-rlhf"
    files: Any = None  # local JSONL(.gz) path(s) in the hub format; replaces the hub download
    mix: dict[str, float] = field(default_factory=lambda: {"harmless-base": 1.0})
    max_pairs: int | None = (
        None  # total train pairs drawn by the mix; null = as many as the mix allows
    )
    val_fraction: float = 0.05
    num_prompts: int | None = None  # PPO prompts (from train pairs); null = all

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0.0 < self.val_fraction < 0.5, "data.val_fraction", "must be in (0, 0.5)")
        _check(len(self.mix) > 0, "data.mix", "needs at least one subset")
        for k, w in self.mix.items():
            _check(w >= 0, f"data.mix.{k}", f"weight must be >= 0, got {w}")
        _check(sum(self.mix.values()) > 0, "data.mix", "weights must not all be 0")


# ---------------------------------------------------------------- algo


@dataclass
class StageConfig:
    """What every supervised-style stage (rm, dpo, sft) shares: batches, AdamW, schedule."""

    name: str = MISSING
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_steps: int = 200
    grad_clip: float = 1.0
    val_every: int = 100
    accumulate_grad_batches: int = 1

    def __post_init__(self) -> None:
        for k in ("batch_size", "max_steps", "val_every", "accumulate_grad_batches"):
            _check(getattr(self, k) > 0, f"algo.{k}", "must be > 0")
        _check(self.lr > 0, "algo.lr", "must be > 0")
        _check(0 <= self.warmup_ratio < 1, "algo.warmup_ratio", "must be in [0, 1)")
        _check(self.grad_clip >= 0, "algo.grad_clip", "must be >= 0")


@dataclass
class RMConfig(StageConfig):
    """Reward-model stage (Bradley-Terry on preference pairs)."""

    name: str = "rm"
    max_steps: int = 300
    margin: float = 0.0


@dataclass
class GenerationConfig:
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: list[str] = field(default_factory=lambda: ["\n\nHuman:"])
    max_prompt_length: int = 192
    # Greedy rollouts for reproducibility checks and debugging only (e.g. one process vs two must
    # generate the same tokens): log-probs stay at `temperature`, so PPO's ratio is that of the
    # sampling policy the greedy one approximates. Not for real training.
    greedy: bool = False

    def __post_init__(self) -> None:
        _check(self.max_new_tokens > 0, "algo.generation.max_new_tokens", "must be > 0")
        # PPO's rollouts: the update scores the sampled tokens with log-probs at this temperature,
        # so it must be a sampling temperature; greedy decoding (0) is for held-out evaluation
        _check(
            self.temperature > 0,
            "algo.generation.temperature",
            f"must be > 0 for PPO rollouts, got {self.temperature}: the policy is trained on "
            "log-probs of sampled responses at this temperature, and 0 (greedy) has none. "
            "For greedy held-out evaluation set evaluation.temperature=0 (greedy rollouts for "
            "reproducibility checks: algo.generation.greedy=true)",
        )
        _check(0 < self.top_p <= 1, "algo.generation.top_p", "must be in (0, 1]")
        _check(self.top_k >= 0, "algo.generation.top_k", "must be >= 0")


@dataclass
class LengthPenaltyConfig:
    coef: float = 0.0
    kind: str = "linear"
    threshold: int | None = None  # tokens, for kind=overlong (default 0.75 * max_new_tokens)

    def __post_init__(self) -> None:
        _check(self.coef >= 0, "algo.length_penalty.coef", f"must be >= 0, got {self.coef}")
        _in(self.kind, ("linear", "overlong"), "algo.length_penalty.kind")


@dataclass
class KLConfig:
    coef: float = 0.05
    estimator: str = "k1"
    controller: str = "fixed"
    target: float = 6.0
    horizon: int = 10000
    in_reward: bool = True

    def __post_init__(self) -> None:
        _check(self.coef >= 0, "algo.kl.coef", f"must be >= 0, got {self.coef}")
        _in(self.estimator, ("k1", "k2", "k3"), "algo.kl.estimator")
        _in(self.controller, ("fixed", "adaptive"), "algo.kl.controller")
        _check(self.target > 0, "algo.kl.target", "must be > 0")
        _check(self.horizon > 0, "algo.kl.horizon", "must be > 0")
        # As a loss term the estimator is differentiated through log p at fixed samples: k1's
        # expected gradient is E[grad log p] = 0, k2's is exactly grad KL(policy || ref), k3's is
        # grad KL(ref || policy) (GRPO's choice). In the reward any of them works.
        _check(
            self.in_reward or self.estimator != "k1",
            "algo.kl.estimator",
            "k1 has zero expected gradient as a loss term (algo.kl.in_reward=false): "
            "use k2 (exact gradient of KL) or k3",
        )


@dataclass
class RewardConfig:
    normalize: bool = True  # with the reward model's validation mean/std
    clip: float | None = 5.0

    def __post_init__(self) -> None:
        _check(self.clip is None or self.clip > 0, "algo.reward.clip", "must be > 0 or null")


@dataclass
class PPOConfig:
    name: str = "ppo"
    reward_model: str | None = None  # exported reward_model/ dir; null = train one in this run
    rm: RMConfig = field(default_factory=RMConfig)
    value_init: str = "reward_model"
    steps: int = 60
    rollout_batch_size: int = 32
    minibatch_size: int = 16
    grad_accum: int = 1
    ppo_epochs: int = 2
    policy_lr: float = 1e-4
    value_lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 5
    grad_clip: float = 1.0
    gamma: float = 1.0
    lam: float = 0.95
    clip_eps: float = 0.2
    value_clip_eps: float | None = 0.2
    dual_clip: float | None = None
    entropy_coef: float = 0.0
    whiten_advantages: bool = True
    missing_stop_penalty: float = 0.0
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    length_penalty: LengthPenaltyConfig = field(default_factory=LengthPenaltyConfig)
    kl: KLConfig = field(default_factory=KLConfig)
    sample_every: int = 10
    ckpt_every: int = 10

    def __post_init__(self) -> None:
        _in(self.value_init, ("reward_model", "base"), "algo.value_init")
        for k in ("steps", "rollout_batch_size", "minibatch_size", "grad_accum", "ppo_epochs"):
            _check(getattr(self, k) > 0, f"algo.{k}", "must be > 0")
        _check(
            self.rollout_batch_size % self.minibatch_size == 0,
            "algo.minibatch_size",
            "must divide algo.rollout_batch_size",
        )
        _check(
            (self.rollout_batch_size // self.minibatch_size) % self.grad_accum == 0,
            "algo.grad_accum",
            "must divide the number of minibatches per rollout",
        )
        for k in ("policy_lr", "value_lr"):
            _check(getattr(self, k) > 0, f"algo.{k}", "must be > 0")
        _check(0 <= self.gamma <= 1, "algo.gamma", "must be in [0, 1]")
        _check(0 <= self.lam <= 1, "algo.lam", "must be in [0, 1]")
        _check(self.clip_eps > 0, "algo.clip_eps", "must be > 0")
        _check(self.dual_clip is None or self.dual_clip > 1, "algo.dual_clip", "must be > 1")
        _check(self.missing_stop_penalty >= 0, "algo.missing_stop_penalty", "must be >= 0")
        _check(self.entropy_coef >= 0, "algo.entropy_coef", "must be >= 0")
        lp = self.length_penalty
        if lp.kind == "overlong" and lp.threshold is not None:
            _check(
                0 <= lp.threshold < self.generation.max_new_tokens,
                "algo.length_penalty.threshold",
                "must be in [0, algo.generation.max_new_tokens)",
            )


@dataclass
class DPOConfig(StageConfig):
    """DPO from the base (no SFT first): frozen reference = the base (LoRA: adapter disabled)."""

    name: str = "dpo"
    lr: float = 1e-4
    beta: float = 0.3
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    precompute_ref: bool = True  # reference log-probs once for the dataset, before training

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.beta > 0, "algo.beta", "must be > 0")
        _in(self.loss_type, ("sigmoid", "ipo", "hinge"), "algo.loss_type")
        _check(0 <= self.label_smoothing <= 0.5, "algo.label_smoothing", "must be in [0, 0.5]")
        _check(
            self.label_smoothing == 0 or self.loss_type == "sigmoid",
            "algo.label_smoothing",
            "only applies to loss_type=sigmoid",
        )


@dataclass
class SFTConfig(StageConfig):
    """Supervised fine-tuning on the chosen responses (loss on response tokens only)."""

    name: str = "sft"


@dataclass
class NoneConfig:
    """No training: evaluate the base model itself on the held-out evaluation."""

    name: str = "none"


@dataclass
class HeldoutEvalConfig:
    """The held-out evaluation run at the end of every policy-producing run (mplus.evaluate)."""

    enabled: bool = True
    reward_model: str | None = None  # exported reward_model/ to score with (PPO: its own)
    temperature: float = 1.0  # fixed-seed sampling; 0 = greedy
    max_new_tokens: int = 24
    # where a response ends besides EOS: the next turn of the HH format; PPO's rollouts default
    # to the same (algo.generation.stop_strings), every algorithm's evaluation uses this one
    stop_strings: list[str] = field(default_factory=lambda: ["\n\nHuman:"])
    probe_docs: int = 200  # held-out pretraining-style texts for the capability probe
    seed: int = 12345
    # `python -m mplus.eval` suites run at the end on policy/ and the base (general, conversation,
    # toxicity, harmlessness, all; empty = none); `suite` holds their settings (the keys of
    # conf/eval.yaml's `eval` node, e.g. +evaluation.suite.toxicity.k=5), checked at start.
    suites: list[str] = field(default_factory=list)
    suite: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.temperature >= 0, "evaluation.temperature", "must be >= 0")
        _check(self.max_new_tokens > 0, "evaluation.max_new_tokens", "must be > 0")
        _check(self.probe_docs >= 0, "evaluation.probe_docs", "must be >= 0")
        if self.suites:
            from mplus.eval.config import suite_settings

            suite_settings(self.suites, self.suite)


# ---------------------------------------------------------------- hardware / logger / root


@dataclass
class SlurmConfig:
    """Cluster settings the SLURM launcher (``hydra/launcher=slurm``) reads from the hardware option."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 1440
    cpus_per_task: int = 8
    mem_gb: int | None = None
    max_num_timeout: int = 3  # requeues after preemption/timeout before giving up

    def __post_init__(self) -> None:
        _check(self.time_min > 0, "hardware.slurm.time_min", "must be > 0")
        _check(self.cpus_per_task > 0, "hardware.slurm.cpus_per_task", "must be > 0")


@dataclass
class FSDPSettings:
    """FSDP2 (``fully_shard``) settings for ``hardware.strategy=fsdp``."""

    activation_checkpointing: bool = True  # on the trainable models' decoder layers
    reshard_after_forward: bool = True  # ZeRO-3 style; false keeps gathered params (ZeRO-2)
    offload_frozen: bool = False  # reference and reward model parameters on CPU between uses


@dataclass
class HardwareConfig:
    name: str = MISSING
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    attn_implementation: str = "sdpa"
    gpu_memory_gb: float | None = None
    num_threads: int | None = None  # torch intra-op threads on CPU; null = torch's default
    process_group_backend: str | None = None  # null: nccl on GPUs, gloo on CPU
    fsdp: FSDPSettings = field(default_factory=FSDPSettings)
    gpu_name: str | None = None  # for the memory planner's report
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def __post_init__(self) -> None:
        _in(self.accelerator, ("cpu", "gpu", "cuda", "auto"), "hardware.accelerator")
        _in(self.strategy, ("auto", "ddp", "fsdp"), "hardware.strategy")
        _in(
            self.precision,
            ("32-true", "bf16-mixed", "bf16-true", "16-mixed"),
            "hardware.precision",
        )
        _in(
            self.attn_implementation,
            ("eager", "sdpa", "flash_attention_2", "auto"),
            "hardware.attn_implementation",
        )
        _check(self.num_nodes >= 1, "hardware.num_nodes", "must be >= 1")
        _check(
            isinstance(self.devices, int) and self.devices >= 1 or self.devices == "auto",
            "hardware.devices",
            f"must be a positive int or 'auto', got {self.devices!r}",
        )
        if self.process_group_backend is not None:
            _in(self.process_group_backend, ("nccl", "gloo"), "hardware.process_group_backend")
        if self.gpu_memory_gb is not None:
            _check(self.gpu_memory_gb > 0, "hardware.gpu_memory_gb", "must be > 0")


@dataclass
class LoggerConfig:
    name: str = "tensorboard"
    subdir: str = "tb"
    log_every: int = 10

    def __post_init__(self) -> None:
        _check(self.log_every > 0, "logger.log_every", "must be > 0")


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    data: Any = MISSING
    algo: Any = MISSING
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = MISSING
    evaluation: HeldoutEvalConfig = field(default_factory=HeldoutEvalConfig)
    seed: int = 0
    run_dir: str = "."
    cache_dir: str = MISSING
    ckpt_path: str | None = None
    progress_bar: bool = True
    # the summary.json key the entry point returns (what an Optuna sweeper optimises)
    objective: str = "ppo/gold_reward_end"


ALGO_SCHEMAS = {
    "rm": RMConfig,
    "ppo": PPOConfig,
    "dpo": DPOConfig,
    "sft": SFTConfig,
    "none": NoneConfig,
}
DATA_SCHEMAS = {"synthetic": SyntheticDataConfig, "hh_rlhf": HHDataConfig}


def register_configs() -> None:
    """Store the schemas so YAML options can name them in their defaults lists."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="hardware", name="hardware_schema", node=HardwareConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    for name, node in DATA_SCHEMAS.items():
        cs.store(group="data", name=f"{name}_schema", node=node)
    for name, node in ALGO_SCHEMAS.items():
        cs.store(group="algo", name=f"{name}_schema", node=node)


def validate(cfg: DictConfig) -> TrainConfig:
    """Resolve ``cfg`` and build the typed dataclasses, running every range check.

    Raises:
        ConfigError: naming the first key that is out of range.
    """
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj.algo, tuple(ALGO_SCHEMAS.values())):
        raise ConfigError(f"algo: unknown algorithm config {type(obj.algo).__name__}")
    if not isinstance(obj.data, tuple(DATA_SCHEMAS.values())):
        raise ConfigError(f"data: unknown data config {type(obj.data).__name__}")
    return obj
