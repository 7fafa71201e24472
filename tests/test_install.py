"""Installed as users install it: the wheel carries every config, ``mplus.train.run`` is the
entry point for notebooks, and (slow) a wheel installed in a fresh venv runs from another folder."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_MODEL, read_summary

# What the wheel is built from: the repository's fixed top level, less tests/ (copied, so the
# build's build/ and *.egg-info/ land in a temporary folder, not in the checkout).
SOURCES = ["mplus", "conf", "sweeps", "pyproject.toml", "README.md"]
RM_TINY = [
    "algo=rm",
    "algo.val_every=2",
    "data.num_train_pairs=64",
    "data.num_val_pairs=32",
    "evaluation.enabled=false",
    "progress_bar=false",
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel`` of a copy of the checkout, offline: no build isolation, no dependencies."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools (the build backend) is not installed")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-q",
        "-w",
        str(tmp / "dist"),
        str(src),
    ]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    (whl,) = (tmp / "dist").glob("mplus-*.whl")
    return whl


def test_the_wheel_ships_every_config_and_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"mplus/conf/{p.relative_to(REPO / 'conf').as_posix()}"
        for p in (REPO / "conf").rglob("*.yaml")
    }
    expected |= {f"mplus/sweeps/{p.name}" for p in (REPO / "sweeps").glob("*.yaml")}
    # pyproject lists the packages (find cannot map conf/ into mplus/): a new one must be added
    expected |= {p.relative_to(REPO).as_posix() for p in (REPO / "mplus").rglob("*.py")}
    assert len(expected) > 40
    assert not expected - names, f"missing from the wheel: {sorted(expected - names)}"
    assert not [n for n in names if n.split("/")[0] in ("conf", "sweeps", "tests")], names


def test_run_returns_the_summary_and_writes_the_run_dir(cache_dir, tmp_path):
    from mplus.train import run

    run_dir = tmp_path / "run"
    summary = run(
        [
            *TEST_MODEL,
            f"cache_dir={cache_dir}",
            f"hydra.run.dir={run_dir}",
            *RM_TINY,
            "algo.max_steps=2",
        ]
    )
    assert isinstance(summary, dict) and "rm/val_accuracy" in summary, summary
    assert summary == read_summary(run_dir)
    # the same run dir as the command line's: resolved config, overrides, the job's log
    assert "algo.max_steps=2" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "train.log").is_file()


def test_run_raises_on_bad_config_instead_of_exiting(tmp_path):
    from hydra.errors import HydraException

    from mplus.config import ConfigError
    from mplus.train import run

    base = [f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={tmp_path}"]
    with pytest.raises(ConfigError, match="algo.lr"):  # out of range: before any model loads
        run([*base, "algo=rm", "algo.lr=-1"])
    with pytest.raises(HydraException):  # misspelt key: at composition
        run([*base, "algo.no_such_key=1"])
    with pytest.raises(TypeError):
        run("algo=rm")


@pytest.mark.slow
def test_a_wheel_install_runs_from_another_directory(wheel, cache_dir, tmp_path):
    """A venv with the wheel installed non-editable (``--system-site-packages`` only supplies the
    dependencies; mplus itself is asserted to come from the venv), run from a folder holding no
    configs: train, plan, eval and a sweep config compose from what the wheel shipped."""
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300
    )
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONUNBUFFERED="1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def sh(*args, timeout=900):
        proc = subprocess.run(
            args, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, (
            f"{' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
        return proc.stdout

    sh(py, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", str(wheel))
    where = json.loads(
        sh(
            py,
            "-c",
            "import json, mplus, mplus.config_paths as c; print(json.dumps("
            "[mplus.__file__, c.config_dir(), c.sweeps_dir()]))",
        )
    )
    site = Path(sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    assert all(Path(p).is_relative_to(site / "mplus") for p in where), where  # not the checkout

    run_dir = elsewhere / "run"
    sh(
        py,
        "-m",
        "mplus.train",
        *TEST_MODEL,
        f"cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        *RM_TINY,
        "algo.max_steps=5",
    )
    assert "rm/val_accuracy" in read_summary(run_dir)
    sources = (run_dir / ".hydra" / "hydra.yaml").read_text()
    assert str(site / "mplus" / "conf") in sources and str(REPO) not in sources

    assert "verdict:" in sh(
        py, "-m", "mplus.plan", "model=mistral-7b", "algo=ppo", "hardware=8xa100"
    )
    assert "models:" in sh(py, "-m", "mplus.eval", "--cfg", "job")
    assert "algo.kl.coef" in sh(
        py,
        "-m",
        "mplus.train",
        "--config-dir",
        where[2],
        "--config-name",
        "kl_short",
        "--cfg",
        "hydra",
    )
