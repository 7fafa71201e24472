"""Shared fixtures: one cached tiny base per test session, and a runner for the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HH_FILE = REPO.parent / "shared/data/hh-rlhf/harmless-base-test.head1800.jsonl.gz"

# A cheaper base than the default (fewer pretraining steps): tests check the pipeline's outcomes,
# not the base's quality, and the base is built once per session.
TEST_MODEL = ["model.pretrain.steps=120"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Session cache holding the tiny base, built once through the real builder."""
    from hydra import compose, initialize_config_dir

    from mplus.config import register_configs, validate
    from mplus.models.base import ensure_tiny_base

    d = tmp_path_factory.mktemp("mplus-cache")
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = validate(compose("train", overrides=[*TEST_MODEL, f"cache_dir={d}", "run_dir=."]))
    ensure_tiny_base(cfg.model, d)
    return d


@pytest.fixture
def run_train(cache_dir, tmp_path):
    """Run ``python -m mplus.train`` in a subprocess; returns (CompletedProcess, run_dir)."""

    def _run(*overrides: str, run_dir: Path | None = None, check: bool = True):
        run_dir = run_dir or tmp_path / "run"
        cmd = [sys.executable, "-m", "mplus.train", *TEST_MODEL, f"cache_dir={cache_dir}",
               f"hydra.run.dir={run_dir}", "progress_bar=false", *overrides]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc, run_dir

    return _run


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar events under ``tb_dir`` (every event file), as tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(tb_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out
