"""The root of ``conf/train.yaml`` (:class:`TrainConfig`), its ``evaluation`` and ``logger`` nodes,
the registration of every schema in Hydra's ConfigStore, and :func:`validate`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from mplus.config.algo import DPOConfig, NoneConfig, RLConfig, RMConfig, SFTConfig
from mplus.config.data import HHDataConfig, SyntheticDataConfig
from mplus.config.model import ModelConfig
from mplus.config_common import ConfigError, HardwareConfig, _check, register_common_configs
from mplus.eval.config import suite_settings, suite_values


@dataclass
class HeldoutEvalConfig:
    """The held-out evaluation run at the end of every policy-producing run (mplus.eval.heldout)."""

    enabled: bool = True  # run it at the end of the run
    # an exported reward_model/ to score base/SFT/DPO with (PPO scores with its own); also
    # PPO's reward model when given (algo.reward_model)
    reward_model: str | None = None
    temperature: float = 1.0  # fixed-seed sampling; 0 = greedy
    max_new_tokens: int = 24  # longest response, tokens
    # where a response ends besides EOS: the next turn of the HH format; PPO's rollouts default
    # to the same (algo.generation.stop_strings), every algorithm's evaluation uses this one
    stop_strings: list[str] = field(default_factory=lambda: ["\n\nHuman:"])
    # held-out pretraining-style transcripts of the corpus probe (heldout/corpus_nll); the
    # knowledge probe (heldout/knowledge_*) always asks every question of its table
    probe_docs: int = 200
    seed: int = 12345  # sampling seed: the same prompts and random stream for every run
    # `python -m mplus.eval` suites run at the end on policy/ and the base (general, conversation,
    # toxicity, harmlessness, all; empty = none)
    suites: list[str] = field(default_factory=list)
    # the suites' settings: the keys of conf/eval.yaml's `eval` node (e.g.
    # +evaluation.suite.toxicity.k=5), checked at start
    suite: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.temperature >= 0, "evaluation.temperature", "must be >= 0")
        _check(self.max_new_tokens > 0, "evaluation.max_new_tokens", "must be > 0")
        _check(self.probe_docs >= 0, "evaluation.probe_docs", "must be >= 0")
        if self.suites:
            # names, keys and ranges only; the files they name are checked by validate()
            suite_values(self.suites, self.suite)


# ---------------------------------------------------------------- logger / root (hardware: config_common)


@dataclass
class LoggerConfig:
    """Where the metrics go."""

    # the option's name (conf/logger/<name>.yaml): tensorboard, csv, wandb or mlflow; TensorBoard
    # is always written (mplus.analyze reads it), another option adds its logger (mplus/loggers.py)
    name: str = "tensorboard"
    subdir: str = "tb"  # TensorBoard event files under <run_dir>/<subdir>
    project: str = "mplus"  # the wandb project / MLflow experiment (logger=wandb|mlflow)
    # steps between logged training metrics (rm/sft/dpo; the RL stage logs every step) and
    # between the progress lines printed where there is no progress bar (mplus.modules.progress)
    log_every: int = 10

    def __post_init__(self) -> None:
        from mplus.loggers import LOGGERS

        _check(self.log_every > 0, "logger.log_every", "must be > 0")
        _check(self.name in LOGGERS, "logger.name", f"must be one of {', '.join(LOGGERS)}")


@dataclass
class TrainConfig:
    """Root of ``conf/train.yaml``: ``python -m mplus.train [group=option ...] [key=value ...]``."""

    model: ModelConfig = MISSING  # the base model (group model)
    data: Any = MISSING  # the data (group data)
    algo: Any = MISSING  # the algorithm and its settings (group algo)
    hardware: HardwareConfig = MISSING  # where it computes (group hardware)
    logger: LoggerConfig = MISSING  # where the metrics go (group logger)
    # held-out evaluation at the end of every policy-producing run (mplus/eval/heldout.py)
    evaluation: HeldoutEvalConfig = field(default_factory=HeldoutEvalConfig)
    seed: int = 0  # the run's seed: every stage seeds itself from (seed, stage name)
    run_dir: str = "."  # outputs, checkpoints and exports (train.yaml: Hydra's run dir)
    # the tiny base model (and its tokenizer) is cached here by a hash of its config
    cache_dir: str = MISSING
    ckpt_path: str | None = None  # checkpoint to resume from, or "last" (this run dir's newest)
    # a progress bar per stage on a terminal; false, or no terminal (a log file): a progress
    # line every logger.log_every steps instead
    progress_bar: bool = True
    # the summary.json key the entry point returns (what an Optuna sweeper optimises)
    objective: str = "rl/gold_reward_end"


ALGO_SCHEMAS = {
    "rm": RMConfig,
    "ppo": RLConfig,  # every RL algorithm (algo=grpo, rloo, reinforce_pp: over algo/ppo.yaml)
    "dpo": DPOConfig,
    "sft": SFTConfig,
    "none": NoneConfig,
}
DATA_SCHEMAS = {"synthetic": SyntheticDataConfig, "hh_rlhf": HHDataConfig}


def register_configs() -> None:
    """Store the schemas so YAML options can name them in their defaults lists."""
    register_common_configs()
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    for name, node in DATA_SCHEMAS.items():
        cs.store(group="data", name=f"{name}_schema", node=node)
    for name, node in ALGO_SCHEMAS.items():
        cs.store(group="algo", name=f"{name}_schema", node=node)


def validate(cfg: DictConfig) -> TrainConfig:
    """Resolve ``cfg`` and build the typed dataclasses, running every range check, then the
    checks that look outside the config (what the entry points call right after composing).

    The dataclasses' ``__post_init__`` only compares values, so they can be built anywhere (tests,
    the planner, another process) without touching the filesystem. What needs the filesystem or
    an optional package is checked here: the files and the packages of ``evaluation.suites``,
    the package of ``logger``
    (the model folders, checkpoint and data files are :func:`mplus.preflight.preflight`'s).

    Raises:
        ConfigError: naming the first key that is out of range, or a file the evaluation suites
            name that is not there.
    """
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj.algo, tuple(ALGO_SCHEMAS.values())):
        raise ConfigError(f"algo: unknown algorithm config {type(obj.algo).__name__}")
    if not isinstance(obj.data, tuple(DATA_SCHEMAS.values())):
        raise ConfigError(f"data: unknown data config {type(obj.data).__name__}")
    if obj.evaluation.suites:
        suite_settings(obj.evaluation.suites, obj.evaluation.suite)
    from mplus.loggers import check_logger_package

    check_logger_package(obj.logger.name)
    return obj
