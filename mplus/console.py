"""What a researcher sees on the console during a run, in one place.

- :func:`run_console`: the libraries' output for the length of a run. Each message once: Lightning
  adds a console handler of its own to the ``lightning`` logger *and* propagates to the root
  logger (Hydra's console + ``train.log``), so every Lightning line showed twice; while Hydra's
  root logger has handlers, Lightning's own are set aside and its records go through the root
  once. Lightning's device lines (``GPU available ...``) are printed once per process, not once
  per Trainer. Only warnings a user can act on: the messages in :data:`IGNORED_WARNINGS` and
  :data:`IGNORED_LOGS` are dropped, each by its exact text (see the comments there for why each
  is not actionable); nothing else is filtered. Without progress bars (no terminal, or
  ``progress_bar=false``) transformers' and huggingface_hub's download/load/save bars are off too.
- :func:`load_scalar_head`: transformers' LOAD REPORT replaced by one line where it is expected (a
  reward/value head initialised fresh on a causal-LM checkpoint).
- :func:`bars_enabled`: whether this run draws progress bars (a terminal and ``progress_bar``);
  without them every stage logs one progress line every ``logger.log_every`` steps
  (:mod:`mplus.modules.progress`).
- :func:`stage_label`: the name a stage goes by on the console (``reward model``, ``PPO``).
- :func:`headline`: the closing summary's first lines (the result, before -> after).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# (message regex, category, module regex) for warnings.filterwarnings: matched against the start
# of the message (and the module the warning is attributed to), nothing broader.
IGNORED_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # Lightning's own use of a torch API torch deprecated (lightning/pytorch/utilities/_pytree.py):
    # not mplus's code, nothing a user can change.
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"lightning\.pytorch\.utilities\._pytree",
    ),
    # The tiny base's pretraining module has a validation_step (it validates when the stage is
    # given val data) and the pretraining loop gives it none, on purpose.
    (r"You defined a `validation_step` but have no `val_dataloader`", UserWarning, r"lightning"),
    # Lightning counts every module in eval mode, the frozen reference and reward models of
    # PPO/DPO among them (eval mode on purpose). mplus checks the trainable models itself
    # (mplus.modules.progress.TrainModeCheck), which is the case the warning is there for.
    (r"Found \d+ module\(s\) in eval mode at the start of training", UserWarning, r"lightning"),
)

# Lightning INFO records dropped by their message's start: an advertisement, not about the run.
IGNORED_LOGS: tuple[str, ...] = ("💡 Tip: For seamless cloud logging",)

# The loggers Lightning's rank_zero_info/_warn log through.
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)
# The loggers Lightning gives a console handler of their own at import.
LIGHTNING_HANDLER_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")

STAGE_LABELS = {
    "base": "base",
    "rm": "reward model",
    "sft": "SFT",
    "dpo": "DPO",
    "none": "base model",
    "ppo": "PPO",
    "grpo": "GRPO",
    "rloo": "RLOO",
    "reinforce_pp": "REINFORCE++",
}


def stage_label(stage: str) -> str:
    """How a stage is named on the console: ``reward model``, ``PPO``, ``REINFORCE++``."""
    return STAGE_LABELS.get(stage, stage)


def bars_enabled(progress_bar: bool = True) -> bool:
    """Progress bars are drawn on a terminal only (stdout a TTY) and only with ``progress_bar``;
    otherwise progress is one log line every ``logger.log_every`` steps."""
    return bool(progress_bar) and sys.stdout.isatty()


class _LightningInfoFilter(logging.Filter):
    """Drops :data:`IGNORED_LOGS` and an INFO message Lightning already printed in this process
    (its device lines come once per Trainer: the reward model's, then the RL stage's)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith(IGNORED_LOGS):
            return False
        if record.levelno > logging.INFO:
            return True
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


@contextlib.contextmanager
def run_console(progress_bar: bool = True) -> Iterator[None]:
    """The libraries' console output for the length of one run (see the module docstring);
    everything set here is put back as it was on exit (``mplus.train.run`` in a notebook)."""
    import lightning  # noqa: F401  (its loggers and their handlers exist from its import)
    from transformers.utils import logging as hf_logging

    root = logging.getLogger()
    removed: list[tuple[logging.Logger, logging.Handler, bool]] = []
    if root.handlers:  # Hydra's console + train.log: Lightning's records go there, once
        for name in LIGHTNING_HANDLER_LOGGERS:
            lg = logging.getLogger(name)
            for h in list(lg.handlers):
                if type(h) is logging.StreamHandler:  # Lightning's own console handler
                    removed.append((lg, h, lg.propagate))
                    lg.removeHandler(h)
                    lg.propagate = True
    info_filter = _LightningInfoFilter()
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).addFilter(info_filter)
    hf_bars = hf_logging.is_progress_bar_enabled()
    if hf_bars and not bars_enabled(progress_bar):
        hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            for message, category, module in IGNORED_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category, module=module)
            yield
    finally:
        if hf_bars:
            hf_logging.enable_progress_bar()
        for name in LIGHTNING_LOGGERS:
            logging.getLogger(name).removeFilter(info_filter)
        for lg, h, propagate in removed:
            lg.addHandler(h)
            lg.propagate = propagate


def _is_causal_lm_checkpoint(path: str, **kw) -> bool:
    """Whether ``path``'s config names only ``*ForCausalLM`` architectures (the base: a scalar
    head built on it is initialised fresh)."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(path, **kw)
    except (OSError, ValueError):
        return False
    archs = config.get("architectures") or []
    return bool(archs) and all(a.endswith("ForCausalLM") for a in archs)


def load_scalar_head(load: Callable[[], tuple], path: str, **config_kw):
    """``load()`` (a ``from_pretrained(path, ..., output_loading_info=True)`` of a scalar-head
    model) and its model. When ``path`` is a causal LM, the head is new by design and
    transformers' LOAD REPORT for it (``score.weight MISSING``, ``lm_head.weight UNEXPECTED``) is
    expected noise: transformers' verbosity is raised to errors for this call only and mplus
    writes one line instead; any other missing, unexpected or mismatched key is still reported,
    as a warning naming it."""
    from transformers.utils import logging as hf_logging

    if not _is_causal_lm_checkpoint(path, **config_kw):
        return load()[0]
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = load()
    finally:
        hf_logging.set_verbosity(level)
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(
        k for k in info.get("unexpected_keys") or () if not k.startswith("lm_head.")
    )
    head = [k for k in missing if k.split(".")[-2:-1] == ["score"]]
    other = [k for k in missing if k not in head]
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or ())
    if head:
        log.info(
            "reward head initialised fresh (%s): expected for a reward/value model built from a "
            "causal LM",
            ", ".join(head),
        )
    if other or unexpected or mismatched:
        log.warning(
            "%s: building a scalar-head model from it left weights missing %s, unexpected %s, "
            "mismatched %s",
            path,
            other or "none",
            unexpected or "none",
            mismatched or "none",
        )
    return model


# ---------------------------------------------------------------- the closing summary's headline


def _num(v) -> str:
    return f"{v:.3f}" if isinstance(v, float | int) else "-"


def _before_after(summary, key: str, label: str) -> str | None:
    a, b = summary.get(f"rl/{key}_start"), summary.get(f"rl/{key}_end")
    if a is None or b is None:
        return None
    return f"{label} {_num(a)} -> {_num(b)} ({b - a:+.3f})"


def headline(summary, cfg, base_path: str, run_dir: Path) -> list[str]:
    """3-5 lines for the top of the closing summary: the held-out result (before -> after for
    the RL algorithms), the reward model's accuracy and where it came from, the base model, the
    run dir."""
    algo = cfg.algo
    label = stage_label(algo.name)
    n_eval = summary.get("data/eval_prompts")
    where = f"held-out, {n_eval} prompts" if n_eval else "held-out"
    lines = []
    if "rl/reward_end" in summary or "rl/gold_reward_end" in summary:
        parts = [
            _before_after(summary, "gold_reward", "gold"),
            _before_after(summary, "reward", "RM reward"),
            _before_after(summary, "kl", "KL to base"),
        ]
        steps = summary.get("rl/steps")
        title = f"{label}, {steps} steps" if steps is not None else label
        lines.append(f"{title} ({where}): " + " · ".join(p for p in parts if p))
    elif any(k.startswith("heldout/") for k in summary):
        names = (("gold_reward", "gold"), ("reward", "RM reward"), ("kl", "KL to base"))
        parts = [
            f"{n} {_num(summary[f'heldout/{k}'])}" for k, n in names if f"heldout/{k}" in summary
        ]
        lines.append(f"{label} ({where}): " + " · ".join(parts))
    rm_line = _reward_model_line(summary, cfg, run_dir)
    if rm_line:
        lines.append(rm_line)
    lines.append(f"base model: {_base_name(cfg, base_path)}")
    lines.append(f"run dir: {run_dir}")
    return lines


def _reward_model_line(summary, cfg, run_dir: Path) -> str | None:
    from mplus import rundir

    algo = cfg.algo
    rewards = getattr(algo, "rewards", None)
    if rewards:  # several reward models (algo.rewards): one entry each
        constraint = getattr(algo, "constraint", None)
        cost = constraint.cost if constraint is not None and constraint.enabled else None
        parts = []
        for name, spec in rewards.items():
            acc = summary.get(f"rm_{name}/val_accuracy")
            role = "cost" if name == cost else f"weight {_num(spec.weight)}"
            where = f"given ({spec.path})" if spec.path else "trained in this run"
            what = f", val accuracy {_num(acc)}" if acc is not None else ""
            parts.append(f"{name} ({role}{what}, {where})")
        trained_here = any(not spec.path for spec in rewards.values())
        where = f" ({run_dir / rundir.REWARD_MODELS})" if trained_here else ""
        return f"reward models: {'; '.join(parts)}{where}"
    given = getattr(algo, "reward_model", None) or cfg.evaluation.reward_model
    trained = algo.name == "rm" or (
        getattr(algo, "rm", None) is not None and getattr(algo, "reward_model", None) is None
    )
    acc = summary.get("rm/val_accuracy")
    if trained and acc is not None:
        where = run_dir / rundir.REWARD_MODEL
        return f"reward model: val accuracy {_num(acc)}, trained in this run ({where})"
    if given:
        stats = Path(given) / rundir.REWARD_STATS
        if acc is None and stats.exists():
            import json

            acc = json.loads(stats.read_text()).get("val_accuracy")
        what = f"val accuracy {_num(acc)}, " if acc is not None else ""
        return f"reward model: {what}given ({given})"
    return None


def _base_name(cfg, base_path: str) -> str:
    if cfg.model.name_or_path is None:
        return f"{cfg.model.name} (embedded, pretrained and cached at {base_path})"
    return str(cfg.model.name_or_path)


def strip_log_prefix(line: str) -> str:
    """A console line without Hydra's ``[time][logger][LEVEL] - `` prefix."""
    return re.sub(r"^\[[^\]]*\]\[[^\]]*\]\[[A-Z]+\] - ", "", line)
