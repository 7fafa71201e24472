"""The stages a run is made of, behind one registry keyed by ``algo.name``.

A stage module in this package registers its entry point with :func:`register`::

    @register("rm")
    def run(rc: RunContext, summary: Summary) -> None: ...

:func:`mplus.pipeline.run` looks the stage up by ``algo.name`` (no if-chain), so adding an
algorithm is one new module here (found by :func:`discover`) and one ``conf/algo/<name>.yaml``.
The YAML's defaults list names the config schema it extends (``ppo_schema``, ``sft_schema``
... from :mod:`mplus.config`'s ``ALGO_SCHEMAS``); an algorithm with keys of its own adds its
dataclass there too.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

_REGISTRY: dict[str, Stage] = {}


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable  # (RunContext, Summary) -> None
    check: Callable | None = None  # (TrainConfig) -> None: refuse an unsupported plan at start


def register(name: str, check: Callable | None = None):
    """Decorator: ``fn`` runs ``algo=<name>``; ``check(cfg)`` raises, at start, for a
    combination (hardware, sizes) the stage cannot run."""

    def deco(fn):
        if name in _REGISTRY and _REGISTRY[name].run is not fn:
            raise ValueError(f"stage {name!r} registered twice ({_REGISTRY[name].run} and {fn})")
        _REGISTRY[name] = Stage(name, fn, check)
        return fn

    return deco


def discover() -> dict[str, Stage]:
    """Import every module of this package (every folder on its ``__path__``), so each
    registers its stage; returns the registry."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    return _REGISTRY


def get(name: str) -> Stage:
    stages = discover()
    if name not in stages:
        from mplus.config import ConfigError

        raise ConfigError(f"algo.name={name!r}: no stage registered (known: {sorted(stages)})")
    return stages[name]
