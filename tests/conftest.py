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

    # MPLUS_TEST_CACHE=<dir> keeps the test base between sessions (local iteration); CI builds it
    d = (
        Path(os.environ["MPLUS_TEST_CACHE"])
        if os.environ.get("MPLUS_TEST_CACHE")
        else (tmp_path_factory.mktemp("mplus-cache"))
    )
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = validate(compose("train", overrides=[*TEST_MODEL, f"cache_dir={d}", "run_dir=."]))
    ensure_tiny_base(cfg.model, d)
    return d


def cached_test_base(cache_dir: Path) -> Path:
    """The tiny base of :data:`TEST_MODEL` in ``cache_dir`` (a kept ``MPLUS_TEST_CACHE`` may
    also hold bases of older corpus versions, under other keys)."""
    from hydra import compose, initialize_config_dir

    from mplus.config import register_configs, validate
    from mplus.models.base import base_key

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = validate(
            compose("train", overrides=[*TEST_MODEL, f"cache_dir={cache_dir}", "run_dir=."])
        )
    return Path(cache_dir) / "tiny-base" / base_key(cfg.model)


def train_command(cache_dir: Path, run_dir: Path, *overrides: str, model=TEST_MODEL) -> list[str]:
    """``python -m mplus.train`` on the test base, writing into ``run_dir``, no progress bars."""
    return [
        sys.executable,
        "-m",
        "mplus.train",
        *model,
        f"cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
        "progress_bar=false",
        *overrides,
    ]


@pytest.fixture
def run_train(cache_dir, tmp_path):
    """Run ``python -m mplus.train`` in a subprocess; returns (CompletedProcess, run_dir)."""

    def _run(*overrides: str, run_dir: Path | None = None, check: bool = True):
        run_dir = run_dir or tmp_path / "run"
        cmd = train_command(cache_dir, run_dir, *overrides)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            )
        return proc, run_dir

    return _run


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def read_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar events under ``tb_dir`` (every event file, the stages' runs ``tb/<stage>``
    included), as tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(tb_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


# ---------------------------------------------------------------- the real Mistral-7B tokenizer

# tokenizer_config.json of mistralai/Mistral-7B-v0.1 (the keys that matter): adds BOS, no pad.
MISTRAL_TOKENIZER_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": None,
    "legacy": False,
    "clean_up_tokenization_spaces": False,
}


def write_mistral_tokenizer(folder: Path) -> Path:
    """The real Mistral-7B-v0.1 SentencePiece model (shipped by ``mistral-common``) as a folder
    ``AutoTokenizer.from_pretrained`` loads: 32,000 tokens, BOS 1, EOS 2, unk 0, no pad."""
    import shutil

    import mistral_common

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(
        Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1",
        folder / "tokenizer.model",
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(MISTRAL_TOKENIZER_CONFIG))
    return folder


@pytest.fixture(scope="session")
def mistral_tokenizer_dir(tmp_path_factory) -> Path:
    return write_mistral_tokenizer(tmp_path_factory.mktemp("mistral-tokenizer"))


@pytest.fixture(scope="session")
def mistral_model_dir(tmp_path_factory) -> Path:
    """A small random Mistral with the real tokenizer's vocabulary (32,000), saved as a local
    model folder for ``model.name_or_path=<folder>``."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    folder = write_mistral_tokenizer(tmp_path_factory.mktemp("mistral-small"))
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=32000,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        sliding_window=None,
        tie_word_embeddings=False,
    )
    MistralForCausalLM(config).save_pretrained(folder)
    return folder
