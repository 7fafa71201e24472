"""The ``eval`` group's node (:class:`SuitesConfig`), the root of ``conf/eval.yaml``
(:class:`EvalRunConfig`), their registration, and the checks a training run's
``evaluation.suites`` reuses (:func:`suite_values`, :func:`suite_settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mplus.config_common import ConfigError, HardwareConfig, _check, register_common_configs
from mplus.eval.config.paths import EvalError, check_local
from mplus.eval.config.suites import (
    SUITES,
    ConversationConfig,
    GeneralConfig,
    HarmlessnessConfig,
    ToxicityConfig,
    _positive_or_none,
)

# ---------------------------------------------------------------- the suite group and the root


@dataclass
class SuitesConfig:
    """The ``eval`` node: which suites run, a global quick-run limit, and each suite's settings."""

    name: str = MISSING  # the option's name (conf/eval/<name>.yaml)
    # which suites run: general | conversation | toxicity | harmlessness, or all
    suites: list[str] = field(default_factory=lambda: ["general"])
    limit: int | None = None  # caps every suite's items (tasks' examples, questions, prompts)
    seed: int = 1234  # generation seed (same prompts and sampling stream for every model)
    general: GeneralConfig = field(default_factory=GeneralConfig)  # lm-eval-harness benchmarks
    # MT-Bench-style questions graded by a judge
    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    toxicity: ToxicityConfig = field(default_factory=ToxicityConfig)  # RealToxicityPrompts
    # HH-RLHF prompts scored by a reward model
    harmlessness: HarmlessnessConfig = field(default_factory=HarmlessnessConfig)

    def __post_init__(self) -> None:
        if "all" in self.suites:
            self.suites = list(SUITES)
        for s in self.suites:
            _check(
                s in SUITES, "eval.suites", f"unknown suite {s!r}; choose from {[*SUITES, 'all']}"
            )
        _check(len(self.suites) > 0, "eval.suites", "needs at least one suite")
        _positive_or_none(self.limit, "eval.limit")


@dataclass
class EvalRunConfig:
    """Root of ``conf/eval.yaml``."""

    # Hugging Face model dirs or hub ids, side by side; the first is the reference for win rates.
    # A training run dir stands for its policy/; "base:<run dir>" for the base that run started from.
    models: list[str] = field(default_factory=list)
    labels: list[str] | None = None  # column names; default: derived from the paths
    eval: SuitesConfig = MISSING  # the suites and their settings (group eval)
    hardware: HardwareConfig = MISSING  # where the models run (group hardware)
    dtype: str = "auto"  # "auto" = the checkpoint's own dtype; bfloat16 for a 7B on GPU
    trust_remote_code: bool = False  # run the model repositories' own Python code when loading
    revision: str | None = None  # hub revision (branch, tag or commit) of hub models
    run_dir: str = "."  # where the outputs go (eval.yaml: Hydra's run dir)

    def __post_init__(self) -> None:
        _check(
            len(self.models) > 0,
            "models",
            "give one or more model paths or hub ids: models=[<base>,<run>/policy]",
        )
        _check(
            self.labels is None or len(self.labels) == len(self.models),
            "labels",
            f"needs one label per model ({len(self.models)}), got {self.labels}",
        )
        if self.labels is not None:
            _check(len(set(self.labels)) == len(self.labels), "labels", "must be unique")
        _check(
            self.dtype in ("auto", "float32", "bfloat16", "float16"),
            "dtype",
            f"must be one of ['auto', 'float32', 'bfloat16', 'float16'], got {self.dtype!r}",
        )


def register_eval_configs() -> None:
    """Store the eval schemas and the shared ``hardware`` group's (the training schemas are
    :func:`mplus.config.register_configs`'s; ``conf/eval.yaml`` needs none of them)."""
    register_common_configs()
    cs = ConfigStore.instance()
    cs.store(name="eval_schema", node=EvalRunConfig)
    cs.store(group="eval", name="suites_schema", node=SuitesConfig)


def validate_eval(cfg: DictConfig) -> EvalRunConfig:
    """Resolve ``cfg`` into :class:`EvalRunConfig`, running every range check.

    Raises:
        ConfigError: naming the first key that is out of range.
    """
    return OmegaConf.to_object(cfg)


def suite_values(suites: list[str], overrides: dict | None) -> SuitesConfig:
    """The suites a training run asks for (``evaluation.suites``), with ``evaluation.suite`` on
    top; values only (the files they name are :func:`suite_settings`'s to check).

    Raises:
        ConfigError: an unknown suite, a misspelt key or an out-of-range value (names the key).
    """
    base = OmegaConf.structured(SuitesConfig(name="train", suites=list(suites)))
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(dict(overrides or {})))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(f"evaluation.suite: {str(e).splitlines()[0]}") from e


def suite_settings(suites: list[str], overrides: dict | None) -> SuitesConfig:
    """:func:`suite_values`, and every local file they name exists and the packages they need
    are installed (:func:`check_local_paths`).

    Raises:
        ConfigError: an unknown suite, a misspelt key, an out-of-range value or a missing file
            (names the key).
    """
    settings = suite_values(suites, overrides)
    try:
        check_local_paths(settings)
    except EvalError as e:
        raise ConfigError(str(e)) from e
    return settings


def check_local_paths(s: SuitesConfig) -> None:
    """Every local file or folder the chosen suites name exists (hub ids are not contacted).

    Raises:
        EvalError: ``"eval.<suite>.<key>=<path>: ... not found"``.
    """
    if "general" in s.suites:
        import importlib.util

        if importlib.util.find_spec("lm_eval") is None:
            raise EvalError("the general suite needs lm-eval-harness: pip install -e '.[eval]'")
        check_local(s.general.include_path, "eval.general.include_path", want="folder")
    if "conversation" in s.suites:
        check_local(s.conversation.questions, "eval.conversation.questions")
        if s.conversation.judge.kind == "hf":
            check_local(
                s.conversation.judge.model, "eval.conversation.judge.model", want="judge model"
            )
    if "toxicity" in s.suites:
        check_local(s.toxicity.prompts, "eval.toxicity.prompts")
        check_local(
            s.toxicity.classifier.model, "eval.toxicity.classifier.model", want="classifier"
        )
    if "harmlessness" in s.suites:
        files = s.harmlessness.files
        for f in [files] if isinstance(files, str) else list(files or []):
            check_local(f if "/" in str(f) else f"./{f}", "eval.harmlessness.files")
        check_local(
            s.harmlessness.reward_model, "eval.harmlessness.reward_model", want="reward model"
        )
