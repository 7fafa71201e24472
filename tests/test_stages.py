"""The stage registry: every algorithm is one module in ``mplus/stages`` behind ``algo.name``,
and a new one needs only its module and its YAML."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import TEST_MODEL

ECHO_STAGE = '''
from mplus.stages import register


@register("echo")
def run(rc, summary):
    """Records what the run context hands a stage."""
    summary["echo/prompts"] = len(rc.data.prompts)
    summary["echo/pad_id"] = rc.pad_id
    summary["echo/train_dtype"] = rc.train_dtype
    summary["echo/lora"] = rc.reference() is None
'''


def test_the_built_in_algorithms_are_registered_by_their_modules():
    from mplus import stages

    found = stages.discover()
    assert {"rm", "ppo", "dpo", "sft", "none"} <= set(found)
    for name, stage in found.items():
        assert stage.run.__module__.startswith("mplus.stages."), name
    assert found["ppo"].check is not None  # PPO refuses unsupported plans at start


def test_an_unknown_stage_is_a_one_line_config_error():
    from mplus import stages
    from mplus.config import ConfigError

    with pytest.raises(ConfigError, match=r"algo.name='nope': no stage registered"):
        stages.get("nope")


def test_a_new_algorithm_is_one_stage_module_and_one_yaml(cache_dir, tmp_path, monkeypatch):
    """A stage module in a folder on the package's path and an algo YAML on Hydra's search
    path: ``algo=echo`` runs it through ``mplus.train.run``, no other file touched."""
    import mplus.stages as stages
    from mplus.train import run

    plugin = tmp_path / "plugin_stages"
    plugin.mkdir()
    (plugin / "echo.py").write_text(ECHO_STAGE)
    conf = tmp_path / "conf" / "algo"
    conf.mkdir(parents=True)
    (conf / "echo.yaml").write_text("defaults:\n  - none_schema\n  - _self_\n\nname: echo\n")
    monkeypatch.setattr(stages, "__path__", [*stages.__path__, str(plugin)])
    monkeypatch.setattr(stages, "_REGISTRY", dict(stages._REGISTRY))
    try:
        summary = run(
            [
                "algo=echo",
                f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                f"hydra.run.dir={tmp_path / 'run'}",
                f"cache_dir={cache_dir}",
                *TEST_MODEL,
                "data.num_prompts=40",
                "progress_bar=false",
            ]
        )
    finally:
        sys.modules.pop("mplus.stages.echo", None)
    assert summary["echo/prompts"] == summary["data/prompts"] == 40
    assert summary["echo/pad_id"] is not None and summary["echo/train_dtype"] == "float32"
    assert summary["echo/lora"] is False and "time/total_s" in summary
