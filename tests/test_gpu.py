"""GPU check (``pytest -m gpu``): a few PPO steps on one GPU with flash-attn and bf16.

The model is a small Mistral built from config (hidden 512, 8 layers; no download), briefly
pretrained on the synthetic corpus. Prints rollout tokens/s, training tokens/s and peak GPU memory.
Fits in a few minutes on one modern GPU. Skipped without CUDA or without flash-attn.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import read_scalars, read_summary

pytestmark = pytest.mark.gpu

SMALL = [
    "model.arch.hidden_size=512",
    "model.arch.intermediate_size=1536",
    "model.arch.num_hidden_layers=8",
    "model.arch.num_attention_heads=8",
    "model.arch.num_key_value_heads=4",
    "model.pretrain.steps=60",
]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ppo_on_one_gpu_with_flash_attention_and_bf16(run_train, tmp_path):
    pytest.importorskip("flash_attn", reason="flash-attn not installed: pip install -e '.[gpu]'")
    proc, run_dir = run_train(
        *SMALL,
        "hardware=1xgpu",
        "algo=ppo",
        "algo.rm.max_steps=60",
        "algo.rm.val_every=60",
        "algo.steps=6",
        "algo.rollout_batch_size=64",
        "algo.minibatch_size=32",
        "algo.generation.max_new_tokens=32",
        run_dir=tmp_path / "gpu",
    )
    s = read_summary(run_dir)
    assert s["rl/steps"] == 6
    tb = read_scalars(run_dir / "tb")
    last = {k: v[-1][1] for k, v in tb.items() if k.startswith("perf/")}
    print(
        f"\nGPU PPO ({torch.cuda.get_device_name()}): "
        f"rollout {last['perf/rollout_tokens_per_s']:.0f} tokens/s, "
        f"training {last['perf/train_tokens_per_s']:.0f} tokens/s, "
        f"peak memory {last['perf/peak_gpu_mem_gib']:.2f} GiB, "
        f"step {last['perf/step_s']:.2f} s"
    )
    assert last["perf/rollout_tokens_per_s"] > 0 and last["perf/train_tokens_per_s"] > 0
    assert 0 < last["perf/peak_gpu_mem_gib"] < 40
