"""Generate ``docs/config.md``, the reference of every train and eval config key.

``python -m mplus.config_doc`` rewrites the file; ``python -m mplus.config_doc --check`` exits 1
when it is out of date (``tests/test_config_truth.py`` does the same check).

Generated, not written, so it cannot drift: each key's type and one-line meaning come from its
dataclass field (the annotation and the comment above or beside it, in :mod:`mplus.config`,
:mod:`mplus.config_common` and :mod:`mplus.eval.config`), and each value from Hydra composing the
real ``conf/`` (the effective value: the dataclass default unless the option's YAML changes it).
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mplus.config import DATA_SCHEMAS, HeldoutEvalConfig, ModelConfig, TrainConfig, register_configs
from mplus.config_common import HardwareConfig
from mplus.config_fields import FieldDoc, field_doc, rows  # noqa: F401  (re-exported)
from mplus.config_paths import config_dir
from mplus.eval.config import EvalRunConfig, SuitesConfig, register_eval_configs

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"
VERSION_BASE = "1.3"


# ---------------------------------------------------------------- composing


@functools.cache
def composed(config_name: str, overrides: tuple[str, ...] = ()) -> dict:
    """The composed config as Hydra builds it for the command line, interpolations unresolved
    (``${seed}`` stays ``${seed}``), as a plain container. Cached: the docs and the tests
    compose the same options."""
    from hydra import compose, initialize_config_dir

    register_configs()
    register_eval_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base=VERSION_BASE):
        cfg = compose(config_name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=False)


def options(group: str) -> list[str]:
    """The options of a config group: its YAML files under ``conf/<group>/``."""
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


# ---------------------------------------------------------------- markdown


def fmt(value: Any) -> str:
    """A value as one would write it in YAML or an override, in a code span."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = (
            value if value.isprintable() and value.strip() == value and value else json.dumps(value)
        )
    elif isinstance(value, list | dict):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = repr(value)
    return "`" + text.replace("|", "\\|") + "`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(entries: list[tuple]) -> list[str]:
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, typ, value, meaning in entries:
        out.append(f"| `{key}` | `{_cell(typ)}` | {fmt(value)} | {_cell(meaning)} |")
    return [*out, ""]


_ABSENT = object()


def _diff(default: Any, other: Any, key: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` where ``other`` differs from ``default``, mappings flattened."""
    if isinstance(other, dict) and (other or isinstance(default, dict)):
        out = []
        for k, v in other.items():
            base = default.get(k, _ABSENT) if isinstance(default, dict) else _ABSENT
            out += _diff(base, v, f"{key}.{k}" if key else k)
        return out
    return [] if default is not _ABSENT and default == other else [(key, other)]


def option_changes(title: str, group: str, default: dict, values: dict[str, dict]) -> list[str]:
    out = [f"{title}:", ""]
    for name, node in values.items():
        changes = _diff(default, node, "")
        sets = ", ".join(f"`{group}.{k}`={fmt(v)}" for k, v in changes) or "nothing"
        out.append(f"- **{group}={name}**: {sets}")
    return [*out, ""]


def _intro(cls: type) -> list[str]:
    doc = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", " ".join((cls.__doc__ or "").split()))
    doc = doc.replace("``", "`")
    return [f"`{_public_path(cls)}`: {doc}", ""]


def _public_path(cls: type) -> str:
    """Where users import ``cls`` from: the shortest parent package that exports it."""
    import importlib

    parts = cls.__module__.split(".")
    for n in range(1, len(parts) + 1):
        if getattr(importlib.import_module(".".join(parts[:n])), cls.__name__, None) is cls:
            return f"{'.'.join(parts[:n])}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__name__}"


def _yaml_leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [k for key, v in node.items() for k in _yaml_leaves(v, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def _get(node: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        node = node[part]
    return node


# ---------------------------------------------------------------- the document


def render() -> str:
    """The text of ``docs/config.md``."""
    train = composed("train")
    default_choice = {g: train[g]["name"] for g in ("model", "data", "algo", "hardware", "logger")}
    out = [
        "# Config reference",
        "",
        "<!-- Generated by `python -m mplus.config_doc` from the config dataclasses and conf/; do",
        "not edit. tests/test_config_truth.py fails when this file is out of date. -->",
        "",
        "One rule keeps each value in one place: **a dataclass default is the default, and an",
        "option YAML under `conf/` sets only what that option changes from it** (a YAML line that",
        "repeats a default fails `tests/test_config_truth.py`). The defaults below are the",
        "effective values: the dataclass's, or the option YAML's where it changes one. `???` is",
        "required (the option sets it); `${...}` is an interpolation, resolved at run time.",
        "",
        "## `python -m mplus.train` (`conf/train.yaml`)",
        "",
        "Groups and their default options: "
        + ", ".join(f"`{g}={o}`" for g, o in default_choice.items())
        + ", `experiment=null`.",
        "",
        "### Top level",
        "",
        *_intro(TrainConfig),
        *table(
            rows(
                TrainConfig,
                train,
                "",
                skip=("model", "data", "algo", "hardware", "logger", "evaluation"),
            )
        ),
        "### `evaluation`",
        "",
        *_intro(HeldoutEvalConfig),
        *table(rows(HeldoutEvalConfig, train["evaluation"], "evaluation.")),
    ]

    models = {o: composed("train", (f"model={o}",))["model"] for o in options("model")}
    out += [
        f"### `model` (options: {', '.join(options('model'))})",
        "",
        *_intro(ModelConfig),
        f"Defaults are those of `model={default_choice['model']}`.",
        "",
        *table(rows(ModelConfig, train["model"], "model.")),
        *option_changes("What each option sets", "model", train["model"], models),
    ]

    out += [f"### `data` (options: {', '.join(options('data'))})", ""]
    for o in options("data"):
        node = composed("train", (f"data={o}",))["data"]
        cls = DATA_SCHEMAS[o]
        out += [f"#### `data={o}`", "", *_intro(cls), *table(rows(cls, node, "data."))]

    from mplus.config import ALGO_SCHEMAS, RL_ALGOS

    algos = sorted(options("algo"), key=lambda a: (a != default_choice["algo"], a))
    out += [f"### `algo` (options: {', '.join(options('algo'))})", ""]
    ppo = composed("train", ("algo=ppo",))["algo"]
    for o in algos:
        if o in RL_ALGOS and o != "ppo":  # algo=ppo's schema and values, a few keys changed
            continue
        node = composed("train", (f"algo={o}",))["algo"]
        cls = ALGO_SCHEMAS[o]
        out += [f"#### `algo={o}`", "", *_intro(cls), *table(rows(cls, node, "algo."))]
        if o == "ppo" and any(a in RL_ALGOS for a in algos if a != "ppo"):
            out += option_changes(
                "The critic-free RL algorithms are `algo=ppo` with these keys changed",
                "algo",
                ppo,
                {a: composed("train", (f"algo={a}",))["algo"] for a in RL_ALGOS if a != "ppo"},
            )

    hardware = {o: composed("train", (f"hardware={o}",))["hardware"] for o in options("hardware")}
    out += [
        f"### `hardware` (options: {', '.join(options('hardware'))})",
        "",
        *_intro(HardwareConfig),
        f"Defaults are those of `hardware={default_choice['hardware']}`.",
        "",
        *table(rows(HardwareConfig, train["hardware"], "hardware.")),
        *option_changes("What each option sets", "hardware", train["hardware"], hardware),
    ]

    from mplus.config import LoggerConfig

    out += [
        f"### `logger` (options: {', '.join(options('logger'))})",
        "",
        *_intro(LoggerConfig),
        *table(rows(LoggerConfig, train["logger"], "logger.")),
        "### `experiment`",
        "",
        "An experiment (`@package _global_`) picks group options and sets keys anywhere:",
        "",
    ]
    for o in options("experiment"):
        raw = OmegaConf.to_container(
            OmegaConf.load(Path(config_dir()) / "experiment" / f"{o}.yaml")
        )
        picks = [
            f"`{next(iter(d))[len('override /') :]}={next(iter(d.values()))}`"
            for d in raw.pop("defaults", [])
            if isinstance(d, dict)
        ]
        exp = composed("train", (f"experiment={o}",))
        sets = [f"`{k}`={fmt(_get(exp, k))}" for k in _yaml_leaves(raw) if k]
        out.append(f"- **experiment={o}**: " + ", ".join(picks + sets))
    out.append("")

    ev = composed("eval")
    suites = {o: composed("eval", (f"eval={o}",))["eval"] for o in options("eval")}
    out += [
        "## `python -m mplus.eval` (`conf/eval.yaml`)",
        "",
        f"Groups and their default options: `eval={ev['eval']['name']}`, "
        f"`hardware={ev['hardware']['name']}` (the `hardware` group of the train config above).",
        "",
        "### Top level",
        "",
        *_intro(EvalRunConfig),
        *table(rows(EvalRunConfig, ev, "", skip=("eval", "hardware"))),
        f"### `eval` (options: {', '.join(options('eval'))})",
        "",
        *_intro(SuitesConfig),
        "Every suite's settings are always there; an option only picks `eval.suites`. A training",
        "run's `evaluation.suite` takes the same keys (without `eval.`).",
        "",
        *table(rows(SuitesConfig, ev["eval"], "eval.")),
        *option_changes(
            f"What each option sets (defaults: `eval={ev['eval']['name']}`)",
            "eval",
            ev["eval"],
            suites,
        ),
    ]
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if argv == ["--check"]:
        if not DOC.is_file() or DOC.read_text() != text:
            print(f"{DOC} is out of date: run python -m mplus.config_doc", file=sys.stderr)
            return 1
        return 0
    if argv:
        print("usage: python -m mplus.config_doc [--check]", file=sys.stderr)
        return 2
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
