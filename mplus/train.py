"""Entry point: ``python -m mplus.train [group=option ...] [key=value ...]``, and from Python
(a notebook) ``mplus.train.run(overrides=[...])``, which returns the run's summary.

Compose (Hydra) -> validate (typed schema) -> preflight (paths, checkpoints, data files; no model
yet) -> run the stages.

A user's mistake (:class:`mplus.errors.UserError` and the few other errors listed in
``USER_ERRORS``, a Hydra composition error) ends the command with one line naming the key, path
or step, and exit status 2; anything else is a bug and keeps its traceback. :func:`run` raises
instead of exiting.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from mplus.config import ConfigError, register_configs, validate
from mplus.config_paths import config_dir
from mplus.errors import UserError
from mplus.eval.common import EvalError

register_configs()
log = logging.getLogger("mplus")
VERSION_BASE = "1.3"

# Raised by mplus for bad input besides the UserError family: HardwareError (mplus.hardware,
# added at first use: it imports torch), EvalError (an evaluation suite's input), and
# FloatingPointError (a loss went NaN/inf, e.g. mplus.modules.optim's TrainingDiverged: the
# message names the step and what to change).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, EvalError, FloatingPointError)
_started = False  # main() has begun: later Hydra/OmegaConf/OS errors are not the command line's


def _user_errors() -> tuple[type[BaseException], ...]:
    """:data:`USER_ERRORS` and ``HardwareError`` once :mod:`mplus.hardware` (torch) is loaded:
    before that, nothing can have raised it."""
    hardware = sys.modules.get("mplus.hardware")
    return (*USER_ERRORS, hardware.HardwareError) if hardware else USER_ERRORS


@hydra.main(version_base=VERSION_BASE, config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    global _started
    _started = True
    try:
        typed = validate(cfg)
    except ConfigError as e:
        _fail(f"Invalid config: {e}", e)
    except OmegaConfBaseException as e:  # a missing value (???), an interpolation that fails
        _fail(f"Invalid config: {_omegaconf_line(e)}", e)
    from mplus.preflight import preflight

    try:
        preflight(typed)  # paths, checkpoint, data files: before torch and any model
    except UserError as e:
        _fail(_describe(e), e)
    from mplus.pipeline import run as run_pipeline

    try:
        summary = run_pipeline(typed)
    except _user_errors() as e:
        _fail(_describe(e), e)
    except (RuntimeError, pickle.UnpicklingError) as e:
        # A checkpoint that Lightning cannot read (or a weights-only load refuses) when the stage
        # resumes from it: torch's errors, translated when a checkpoint was asked for.
        if typed.ckpt_path is None or not _is_checkpoint_read_error(e):
            raise
        _fail(
            f"CheckpointError: ckpt_path={typed.ckpt_path}: cannot load the checkpoint "
            f"({type(e).__name__}: {_first_line(e)})",
            e,
        )
    # The return value is what an Optuna sweeper optimises: the summary key named by `objective`.
    value = summary.get(typed.objective)
    if value is None and typed.objective.startswith("ppo/"):  # the name before rl/*
        value = summary.get("rl/" + typed.objective.removeprefix("ppo/"))
    if value is None and HydraConfig.get().mode == RunMode.MULTIRUN:
        log.warning(
            "objective=%s is not in summary.json (keys: %s)",
            typed.objective,
            ", ".join(sorted(summary)),
        )
    return value


def _first_line(e: BaseException) -> str:
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return lines[0] if lines else type(e).__name__


def _one_line(text: str) -> str:
    return "; ".join(x.strip() for x in str(text).splitlines() if x.strip())


def _describe(e: BaseException) -> str:
    if isinstance(e, ConfigError):
        return f"Invalid config: {_one_line(e)}"
    return f"{type(e).__name__}: {_one_line(e)}"


def _is_checkpoint_read_error(e: BaseException) -> bool:
    return isinstance(e, pickle.UnpicklingError) or "PytorchStreamReader" in str(e)


def _fail(message: str, error: Exception):
    """One line and exit 2; in a multirun, fail this point only: Hydra records the exception,
    runs the remaining points and reports the failure at the end (``mplus.analyze`` lists the
    point as failed)."""
    log.error(_one_line(message))
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise error
    sys.exit(2)


def _omegaconf_line(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None)
    msg = getattr(e, "msg", None) or _first_line(e)
    return f"{key}: {_first_line(msg)}" if key else _first_line(msg)


def _composition_line(e: BaseException) -> str:
    """One line for what Hydra refuses before :func:`main` runs: a misspelt key, a value of the
    wrong type, an unknown group option, an override that does not parse."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    if isinstance(e, MissingConfigException):
        # "In 'train': Could not find 'algo/ppoo'" + "Available options in 'algo':" + options
        head, options, group = lines[0], [], None
        for line in lines[1:]:
            if line.startswith("Config search path"):
                break
            if line.startswith("Available options in"):
                group = line.rstrip(":")
            elif group and not line.endswith("_schema"):
                options.append(line)
        return f"{head}; {group.lower()}: {', '.join(options)}" if group else head
    if isinstance(e, OverrideParseException):
        msg = "; ".join(x for x in lines if not x.startswith("See https"))
        return msg if e.override in msg else f"{e.override}: {msg}"
    cause = e.__cause__
    if isinstance(cause, OmegaConfBaseException):
        out = _omegaconf_line(cause)
        hint = next((x for x in lines if x.startswith("To append")), None)
        if hint:  # a misspelt key: "To append to your config use +algo.kl_coeff=0.1"
            out += f" ({hint[0].lower()}{hint[1:]})"
        elif lines and lines[0].startswith("Error merging override "):
            override = lines[0].removeprefix("Error merging override ")
            out = f"{override}: {_first_line(cause.msg)}"
            out += _group_hint(override)
        return out
    if isinstance(e, OmegaConfBaseException):
        return _omegaconf_line(e)
    return "; ".join(lines)


def _group_hint(override: str) -> str:
    """`` (a config group: use algo/rewards=two_heads)`` when ``algo.rewards=two_heads`` names
    an option of the group ``conf/algo/rewards/``, else ``""``."""
    key, _, value = override.partition("=")
    group = key.lstrip("+~").replace(".", "/")
    if value and (Path(config_dir()) / group / f"{value}.yaml").is_file():
        return f" ({value} is an option of the config group {group}/: use {group}={value})"
    return ""


def cli() -> None:
    """``python -m mplus.train``: :func:`main`, with Hydra's own refusals as one line + exit 2.

    Hydra composes the config and creates the run dir before :func:`main` runs; on an error
    there it prints a multi-line report and exits 1 (``hydra._internal.utils.run_and_report``).
    With ``HYDRA_FULL_ERROR=1`` it raises instead, so this wrapper sets it (unless the user set
    it, who then gets Hydra's full traces) and turns composition errors, a run dir that cannot be
    created, and the user errors a multirun point re-raises, into one line and exit 2. Anything
    else is raised as it is: a bug keeps its traceback (exit 1).
    """
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:  # the user-facing groups only
        from mplus.cli_help import main as print_help

        print_help()  # Hydra's own (schemas and all): --hydra-help
        return
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # inherited by DDP ranks, which rerun this command
    try:
        main()
    except (ConfigCompositionException, OverrideParseException) as e:
        _exit_line(f"Invalid config: {_composition_line(e)}")
    except Exception as e:
        if isinstance(e, _user_errors()):  # a multirun point's user error, re-raised by Hydra
            _exit_line(_describe(e))
        if _started:
            raise
        if isinstance(e, OmegaConfBaseException):  # e.g. an interpolation in hydra.run.dir
            _exit_line(f"Invalid config: {_composition_line(e)}")
        if isinstance(e, OSError):  # Hydra creating the run dir, its .hydra/ and train.log
            why = {errno.EEXIST: "a file is there", errno.ENOTDIR: "a file is in its path"}.get(
                e.errno, e.strerror or str(e)
            )
            _exit_line(f"hydra.run.dir: cannot create the run dir {e.filename or ''} ({why})")
        raise


def _exit_line(message: str) -> None:
    sys.stderr.write(_one_line(message) + "\n")
    sys.exit(2)


def _task(cfg: DictConfig) -> dict:
    """:func:`run`'s job: what :func:`main` does, raising instead of exiting."""
    from mplus.pipeline import run as run_pipeline
    from mplus.preflight import preflight

    typed = validate(cfg)
    preflight(typed)
    return run_pipeline(typed)


def run(overrides: Sequence[str] = ()) -> dict:
    """Run ``python -m mplus.train *overrides`` in this process and return its summary dict (what
    ``summary.json`` holds).

    The same composition, run dir (``hydra.run.dir``, default ``outputs/<date>/<time>_<algo>``
    under the current directory), ``.hydra/`` files and ``train.log`` as the command line; the
    root logger is Hydra's during the run (console + ``train.log``) and is given back as it was
    afterwards. Errors are raised, not turned into an exit: a bad override or unknown option
    (Hydra's exceptions), :class:`mplus.config.ConfigError` for an out-of-range value, the
    :class:`mplus.errors.UserError` of a bad path, checkpoint or data file
    (:func:`mplus.preflight.preflight`, before any model loads), the pipeline's own errors.
    Multirun (``-m``) and hardware options that start more than one process per machine
    (``hardware=2xcpu``) need the command line.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.version import setbase

    if isinstance(overrides, str):
        raise TypeError("overrides is a list of strings, e.g. ['algo=rm', 'algo.max_steps=5']")
    setbase(VERSION_BASE)
    # What @hydra.main builds, without taking over Hydra's global state (a notebook may have
    # initialised it for its own compose calls).
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(config_dir()))
    app = Hydra(task_name="train", config_loader=loader)  # hydra.job.name: train (train.log)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        return app.run(
            config_name="train", task_function=_task, overrides=list(overrides)
        ).return_value
    finally:
        for h in root.handlers:
            if h not in handlers:
                h.close()
        root.handlers[:] = handlers
        root.setLevel(level)


if __name__ == "__main__":
    cli()
    # Nothing the run made is collected any more: without this, the interpreter's last garbage
    # collection walks every object of torch, transformers and Lightning (~2 s on 2 CPU cores)
    # just before the process ends. Files are closed and flushed by then (the loggers finalise
    # at the end of each fit, the summary is written). Not after vLLM: its native bindings
    # report every object still alive at exit as a leak.
    if "vllm" not in sys.modules:
        gc.freeze()
