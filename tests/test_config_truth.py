"""One source of config truth: a dataclass default is the default, and a YAML under ``conf/`` sets
only what it changes; ``docs/config.md`` is generated from both and up to date.

A YAML line that repeats what the config would be without it is a second copy of a value, free
to drift from the first (four had: ``rm.val_every``, ``synthetic.max_length``,
``synthetic.num_eval_prompts``, ``hh_rlhf.max_length``). The check is Hydra's own composition,
not a re-implementation of it: for every YAML it composes the real config twice, as is and with
that file's values removed (its defaults list and its mappings kept), and fails on each value
the removal leaves unchanged. So it sees the schema defaults (nested ones too, e.g. ``arch: {}``
building ``TinyArch``), a parent option (``hardware/multinode`` on ``8xh100``), and an
experiment's line shadowed by ``train.yaml``'s ``_self_``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mplus.config import register_configs
from mplus.config_doc import DOC, composed, render
from mplus.eval.config import register_eval_configs
from tests.conftest import REPO

CONF = REPO / "conf"
TRAIN_GROUPS = ("model", "data", "algo", "hardware", "logger", "experiment")


def _cases() -> list[tuple[str, str, tuple[str, ...], str]]:
    """``(file under conf/, config name, overrides that select it, package)`` of every YAML
    whose values a schema types (``conf/hydra/`` holds Hydra plugins' settings: not ours)."""
    cases = [("train.yaml", "train", (), ""), ("eval.yaml", "eval", (), "")]
    for config_name, groups in (("train", TRAIN_GROUPS), ("eval", ("eval",))):
        for group in groups:
            for path in sorted((CONF / group).glob("*.yaml")):
                glob = "# @package _global_" in path.read_text()
                cases.append(
                    (
                        f"{group}/{path.name}",
                        config_name,
                        (f"{group}={path.stem}",),
                        "" if glob else group,
                    )
                )
    return cases


CASES = _cases()


def _body(path: Path) -> dict:
    """The file's values: everything but its defaults list and (primary configs) ``hydra``."""
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return {k: v for k, v in raw.items() if k not in ("defaults", "hydra")}


def _leaves(node, key: str = ""):
    """``(dotted key, value)`` of every value in a YAML mapping; an empty mapping is a value."""
    if isinstance(node, dict) and (node or not key):
        for k, v in node.items():
            yield from _leaves(v, f"{key}.{k}" if key else str(k))
    else:
        yield key, node


def _skeleton(node: dict) -> dict:
    """The mappings of ``node`` without any value in them."""
    return {k: _skeleton(v) for k, v in node.items() if isinstance(v, dict) and v}


def _at(cfg: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return "<absent>"
        cfg = cfg[part]
    return cfg


@pytest.fixture(scope="module")
def conf_copy(tmp_path_factory) -> Path:
    """A copy of ``conf/`` whose files a test may rewrite (one at a time, restored after)."""
    register_configs()
    register_eval_configs()
    d = tmp_path_factory.mktemp("conf") / "conf"
    shutil.copytree(CONF, d)
    return d


def _compose_without_values(conf: Path, rel: str, config_name: str, overrides) -> dict:
    path = conf / rel
    original = path.read_text()
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    stripped = {
        **({"defaults": raw["defaults"]} if "defaults" in raw else {}),
        **({"hydra": raw["hydra"]} if "hydra" in raw else {}),
        **_skeleton(_body(path)),
    }
    header = "# @package _global_\n" if "# @package _global_" in original else ""
    path.write_text(header + yaml.safe_dump(stripped, sort_keys=False))
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=False)
    finally:
        path.write_text(original)


@pytest.mark.parametrize(
    ("rel", "config_name", "overrides", "package"), CASES, ids=[c[0] for c in CASES]
)
def test_no_yaml_line_repeats_what_the_config_already_is(
    conf_copy, rel, config_name, overrides, package
):
    with_values = composed(config_name, overrides)
    without = _compose_without_values(conf_copy, rel, config_name, overrides)
    redundant = []
    for key, value in _leaves(_body(CONF / rel)):
        full = f"{package}.{key}" if package else key
        if _at(with_values, full) == _at(without, full):
            redundant.append(f"{key}: {value!r}")
    assert not redundant, (
        f"conf/{rel} sets what the config already is without it (the dataclass default, a parent "
        f"option, or a later YAML that overrides it); delete these lines: {redundant}"
    )


def _own_schema_options() -> list[Path]:
    """Options whose schema is theirs alone (``data/synthetic`` -> ``synthetic_schema``)."""
    out = []
    for group in ("model", "data", "algo", "hardware", "logger", "eval"):
        for path in sorted((CONF / group).glob("*.yaml")):
            defaults = OmegaConf.load(path).get("defaults", [])
            if f"{path.stem}_schema" in list(defaults):
                out.append(path)
    return out


@pytest.mark.parametrize("path", _own_schema_options(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_an_option_with_its_own_schema_keeps_its_values_in_the_dataclass(path):
    """A value that such an option changed from its own dataclass would make the dataclass
    default one that no run gets: change the default instead. Its YAML may only name itself
    and interpolate other keys (``seed: ${seed}``)."""
    literal = [
        f"{k}: {v!r}"
        for k, v in _leaves(_body(path))
        if k != "name" and not (isinstance(v, str) and v.startswith("${"))
    ]
    assert not literal, f"conf/{path.parent.name}/{path.name}: move into the dataclass: {literal}"


def test_every_schema_option_is_checked():
    assert {p.stem for p in _own_schema_options()} >= {"synthetic", "hh_rlhf", "ppo", "rm", "dpo"}
    assert len(CASES) >= 30, [c[0] for c in CASES]


def test_docs_config_md_is_up_to_date():
    assert DOC.is_file(), f"{DOC} is missing: run python -m mplus.config_doc"
    assert DOC.read_text() == render(), f"{DOC} is out of date: run python -m mplus.config_doc"


def test_the_docs_list_every_key_with_its_effective_value():
    text = DOC.read_text()
    # the four values a YAML used to repeat differently from the dataclass: now the default
    for row in (
        "| `algo.rm.val_every` | `int` | `150` |",
        "| `data.max_length` | `int` | `160` |",
        "| `data.num_eval_prompts` | `int` | `128` |",
        "| `data.max_length` | `int` | `512` |",
    ):
        assert row in text, row
    for key in ("algo.kl.coef", "hardware.fsdp.offload_frozen", "eval.toxicity.classifier.label"):
        assert f"| `{key}` |" in text, key
