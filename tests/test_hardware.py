"""The hardware group: options, refusal without CUDA, the FSDP2 path on two CPU processes, the
7B wrap policy on the meta device."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mplus.config import register_configs, validate
from tests.conftest import REPO, cached_test_base, read_scalars, read_summary

register_configs()

GPU_OPTIONS = ["1xgpu", "8xa100", "8xh100", "multinode"]


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return validate(compose("train", overrides=["cache_dir=/x", "run_dir=.", *overrides]))


@pytest.mark.parametrize("opt", ["cpu", "2xcpu", *GPU_OPTIONS])
def test_hardware_options_compose_to_trainer_arguments(opt):
    from lightning.pytorch.strategies import ModelParallelStrategy

    from mplus.hardware import trainer_kwargs

    hw = _compose(f"hardware={opt}").hardware
    kw = trainer_kwargs(hw)
    assert kw["devices"] == hw.devices and kw["num_nodes"] == hw.num_nodes
    if opt in ("cpu", "1xgpu"):
        assert kw["strategy"] == "auto"
    else:  # FSDP2 through Lightning's ModelParallelStrategy, one data-parallel dimension
        assert isinstance(kw["strategy"], ModelParallelStrategy)
        assert kw["strategy"]._data_parallel_size == hw.devices * hw.num_nodes
        assert kw["strategy"]._tensor_parallel_size == 1
    if opt in GPU_OPTIONS:
        assert hw.attn_implementation == "flash_attention_2"
        assert hw.precision == "bf16-mixed" and hw.gpu_memory_gb
    else:
        assert hw.attn_implementation == "sdpa" and hw.precision == "32-true"


def test_multinode_is_8xh100_with_more_nodes():
    a, b = _compose("hardware=8xh100").hardware, _compose("hardware=multinode").hardware
    assert b.num_nodes == 2 and b.devices == a.devices == 8 and b.strategy == a.strategy
    assert _compose("hardware=multinode", "hardware.num_nodes=4").hardware.num_nodes == 4


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")


@NO_CUDA
@pytest.mark.parametrize("opt", GPU_OPTIONS)
def test_gpu_options_refuse_without_cuda(opt):
    from mplus.hardware import HardwareError, check_hardware

    with pytest.raises(HardwareError, match=f"hardware={opt} needs CUDA GPUs but torch sees none"):
        check_hardware(_compose(f"hardware={opt}").hardware)


@pytest.mark.slow  # end to end through a subprocess: CI's slow set runs it
@NO_CUDA
def test_gpu_option_refusal_is_one_clear_line_from_the_cli(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mplus.train",
            "hardware=8xa100",
            f"hydra.run.dir={tmp_path}",
            f"cache_dir={tmp_path}/cache",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "hardware=8xa100 needs CUDA GPUs but torch sees none" in out
    assert "Traceback" not in out
    assert not (tmp_path / "cache").exists()  # refused before building anything


@pytest.mark.slow  # end to end through a subprocess: CI's slow set runs it
def test_flash_attention_without_the_package_says_how_to_install(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mplus.train",
            "hardware.attn_implementation=flash_attention_2",
            f"hydra.run.dir={tmp_path}",
            f"cache_dir={tmp_path}/cache",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "pip install -e '.[gpu]'" in out and "Traceback" not in out


def test_unsupported_parallel_plans_fail_at_start():
    from mplus.hardware import HardwareError
    from mplus.pipeline import check_parallel_plan

    check_parallel_plan(_compose("hardware=2xcpu"))  # the default PPO batch divides by 2
    with pytest.raises(HardwareError, match="rollout_batch_size=33 must be divisible by the 2"):
        check_parallel_plan(
            _compose("hardware=2xcpu", "algo.rollout_batch_size=33", "algo.minibatch_size=11")
        )
    with pytest.raises(HardwareError, match="minibatch_size=17 must be divisible by the 2"):
        check_parallel_plan(
            _compose("hardware=2xcpu", "algo.rollout_batch_size=34", "algo.minibatch_size=17")
        )
    with pytest.raises(HardwareError, match="DDP"):
        check_parallel_plan(_compose("hardware=2xcpu", "hardware.strategy=ddp"))
    # groups stay whole on one rank: 32 / 8 = 4 prompts of 8 samples cannot fill 8 ranks
    check_parallel_plan(_compose("algo=grpo", "hardware=2xcpu"))
    with pytest.raises(HardwareError, match=r"4 prompts per step .* 8 data-parallel ranks") as e:
        check_parallel_plan(_compose("algo=grpo", "hardware=8xa100"))
    assert "algo.rollout_batch_size=64" in str(e.value)
    check_parallel_plan(_compose("algo=grpo", "hardware=8xa100", "algo.rollout_batch_size=64"))


# ---------------------------------------------------------------- the 7B wrap policy


META_SHARD = textwrap.dedent("""
    import os, sys, torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule
    from hydra import compose, initialize_config_dir
    from mplus.config import register_configs, validate
    from mplus.distributed import shard_model, wrap_units
    from mplus.models.builders import build_meta_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2], RANK="0", WORLD_SIZE="1")
    register_configs()
    with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
        cfg = validate(compose("train", overrides=["model=mistral-7b", "hardware=8xa100",
                                                   "cache_dir=/x", "run_dir=."]))
    model = build_meta_model(cfg.model)
    n_params = sum(p.numel() for p in model.parameters())
    units = wrap_units(model)
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (1,))
    shard_model(model, mesh, cfg.hardware.fsdp, precision=cfg.hardware.precision)
    fsdp = [m for m in model.modules() if isinstance(m, FSDPModule)]
    layers = [m for m in fsdp if m is not model]
    print("RESULT", n_params, len(units) - 1, len(layers), type(layers[0]).__name__,
          all(p.device.type == "meta" for p in model.parameters()),
          model.model.layers[0].self_attn.q_proj.weight.dtype)
    dist.destroy_process_group()
""")


def test_mistral_7b_on_meta_device_under_the_8xa100_wrap_policy(tmp_path):
    script = tmp_path / "meta_shard.py"
    script.write_text(META_SHARD)
    proc = subprocess.run(
        [sys.executable, str(script), str(REPO / "conf"), "29561"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
    assert line, proc.stdout[-2000:] + proc.stderr[-4000:]
    _, n_params, n_units, n_wrapped, cls, on_meta, dtype = line[0].split()
    assert abs(int(n_params) - 7.24e9) < 0.01e9  # 7,241,732,096
    assert int(n_units) == 32 and int(n_wrapped) == 32
    assert cls == "FSDPMistralDecoderLayer"  # derived from the model, not hard-coded
    assert on_meta == "True"  # nothing was materialised


# ---------------------------------------------------------------- 2 processes vs 1


def _max_weight_diff(a, b) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


RM_FEW = [
    "algo=rm",
    "algo.max_steps=8",
    "algo.val_every=8",
    "data.num_train_pairs=512",
    "data.num_val_pairs=128",
]
# Greedy rollouts, so one process and two generate the same responses for the same prompts; one
# minibatch per step, because each rank shuffles its own slice into minibatches (as valid, but a
# different partition than one process shuffling the whole batch).
PPO_FEW = [
    "algo=ppo",
    "algo.steps=3",
    "algo.rollout_batch_size=16",
    "algo.minibatch_size=16",
    "algo.ppo_epochs=1",
    "algo.policy_lr=1e-4",  # a policy that moves visibly in 3 steps (the check below)
    "algo.generation.greedy=true",
    "evaluation.temperature=0",
    "evaluation.probe_docs=20",
    "data.num_eval_prompts=16",
]


GRPO_FEW = [
    *(o for o in PPO_FEW if o not in ("algo=ppo", "algo.generation.greedy=true")),
    "algo=grpo",
    "algo.samples_per_prompt=4",
    "algo.generation.seed_per_sample=true",
]


def _assert_same_rl_run(one: Path, two: Path, base: Path, tags: tuple[str, ...]) -> None:
    """A 3-step RL run on one process and on two: the same held-out numbers, curves and policy,
    and a policy that moved from the base by far more than the two runs differ (so the comparison
    means something). The move is read off the weights: the held-out KL is not a measure of it
    (greedy held-out samples make its k1 sum no KL estimate; after GRPO's 3 steps it was 4.5e-4
    on one base and 1.4e-2 on another, equally valid, one)."""
    s1, s2 = read_summary(one), read_summary(two)
    assert s2["rl/steps"] == 3
    for k in ("rl/reward_end", "rl/kl_end", "rl/gold_reward_end", "heldout/corpus_nll"):
        assert abs(s1[k] - s2[k]) < 1e-4, (k, s1[k], s2[k])
    c1, c2 = read_scalars(one / "tb"), read_scalars(two / "tb")
    for tag in ("rl/reward_mean", "rl/kl", "rl/policy_loss", "rl/response_length_mean", *tags):
        assert len(c1[tag]) == len(c2[tag]) == 3, tag
        for (st1, v1), (st2, v2) in zip(c1[tag], c2[tag], strict=True):
            assert st1 == st2 and abs(v1 - v2) < 1e-4 * max(1.0, abs(v1)), (tag, st1, v1, v2)
    # Adam moves a weight by about its learning rate (1e-4) a step, whatever the gradient's scale
    moved = _max_weight_diff(base, one / "policy")
    apart = _max_weight_diff(one / "policy", two / "policy")
    assert moved > 1e-5 and apart < 0.05 * moved, (moved, apart)


@pytest.mark.slow
def test_two_processes_fsdp_match_one_process(run_train, cache_dir, tmp_path):
    """Two gloo CPU processes through FSDP2 (hardware=2xcpu) vs one process, same global batch.

    Tolerance 1e-4 on metrics and on exported weights: float32 sums in another order only
    (measured: metrics ~1e-7; weights 2e-5 for the reward model, whose Adam steps at lr 1e-3
    amplify rounding in tiny gradients; 5e-7 for the PPO and 2e-7 for the GRPO policy, which moved
    1.2e-4 from the base).
    """
    one, two = tmp_path / "rm1", tmp_path / "rm2"
    run_train(*RM_FEW, "hardware=cpu", run_dir=one)
    proc, _ = run_train(*RM_FEW, "hardware=2xcpu", run_dir=two)
    assert "sharded in 5 units (4 decoder layers) over 2 ranks" in proc.stdout + proc.stderr
    s1, s2 = read_summary(one), read_summary(two)
    for k in (
        "rm/val_loss",
        "rm/val_accuracy",
        "rm/reward_mean",
        "rm/reward_std",
        "rm/margin",
        "rm/train_loss",
    ):
        assert abs(s1[k] - s2[k]) < 1e-4, (k, s1[k], s2[k])
    assert s2["rm/steps"] == 8
    assert _max_weight_diff(one / "reward_model", two / "reward_model") < 1e-4

    rm = f"algo.reward_model={one / 'reward_model'}"
    p1, p2 = tmp_path / "ppo1", tmp_path / "ppo2"
    run_train(*PPO_FEW, rm, "hardware=cpu", run_dir=p1)
    run_train(*PPO_FEW, rm, "hardware=2xcpu", run_dir=p2)
    base = cached_test_base(cache_dir)
    _assert_same_rl_run(
        p1, p2, base, ("rl/value_loss", "rl/entropy", "rl/explained_variance", "rl/harmful_refusal")
    )

    # GRPO: groups of 4 samples per prompt, each rank holding whole groups. Greedy rollouts would
    # give every sample of a prompt the same response (all advantages 0), so the rollouts sample
    # with a random stream per response (seed_per_sample), which no batch split changes.
    g1, g2 = tmp_path / "grpo1", tmp_path / "grpo2"
    grpo = [*GRPO_FEW, rm]
    run_train(*grpo, "hardware=cpu", run_dir=g1)
    run_train(*grpo, "hardware=2xcpu", run_dir=g2)
    _assert_same_rl_run(
        g1, g2, base, ("rl/group_reward_std", "rl/group_zero_std_share", "rl/advantage_std")
    )
    assert any(v > 0 for _, v in read_scalars(g1 / "tb")["rl/group_reward_std"])  # samples differ


@pytest.mark.slow
def test_lora_reward_model_on_two_processes_matches_one_and_exports_merged(run_train, tmp_path):
    """LoRA under FSDP: adapters train on sharded weights; the export is merged (plain HF)."""
    from transformers import AutoModelForSequenceClassification

    lora = [*RM_FEW, "model.lora.enabled=true", "algo.lr=5e-3"]
    one, two = tmp_path / "lora1", tmp_path / "lora2"
    run_train(*lora, "hardware=cpu", run_dir=one)
    run_train(*lora, "hardware=2xcpu", run_dir=two)
    s1, s2 = read_summary(one), read_summary(two)
    for k in ("rm/val_loss", "rm/val_accuracy", "rm/margin"):
        assert abs(s1[k] - s2[k]) < 1e-4, (k, s1[k], s2[k])
    assert _max_weight_diff(one / "reward_model", two / "reward_model") < 1e-4
    model = AutoModelForSequenceClassification.from_pretrained(two / "reward_model")
    names = [n for n, _ in model.named_parameters()]
    assert not any("lora" in n for n in names) and "score.weight" in names


@pytest.mark.slow
def test_fsdp_sharded_checkpoint_resumes_at_the_saved_step(run_train, tmp_path):
    """PPO on two processes saves a sharded checkpoint; a second run resumes from it."""
    rm_dir = tmp_path / "rm"
    run_train(*RM_FEW, "hardware=cpu", run_dir=rm_dir)
    rm = f"algo.reward_model={rm_dir / 'reward_model'}"
    run_dir = tmp_path / "ppo"
    few = [*PPO_FEW, rm, "hardware=2xcpu", "algo.ckpt_every=2"]
    run_train(*few, "algo.steps=2", run_dir=run_dir)
    ckpt = run_dir / "checkpoints" / "ppo" / "last.ckpt"
    assert ckpt.is_dir() and len(list(ckpt.glob("*.distcp"))) == 2  # one shard file per rank
    proc, _ = run_train(*few, "algo.steps=4", f"ckpt_path={ckpt}", run_dir=run_dir)
    s = read_summary(run_dir)
    assert s["rl/steps"] == 4
    steps = [st for st, _ in read_scalars(run_dir / "tb")["rl/kl"]]
    assert sorted(set(steps)) == [1, 2, 3, 4], steps  # steps 3-4 continue, none repeated
    assert (run_dir / "policy" / "model.safetensors").exists()
