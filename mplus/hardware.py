"""The hardware group -> Lightning Trainer arguments and the model's attention implementation."""

from __future__ import annotations

import importlib.util
import logging

import torch

log = logging.getLogger(__name__)


class HardwareError(RuntimeError):
    """The machine cannot run the hardware option; the message says what to change."""


def resolve_attn_implementation(hw) -> str:
    """``flash_attention_2`` needs CUDA and the flash-attn package; ``auto`` falls back to sdpa."""
    want = hw.attn_implementation
    have_fa = importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()
    if want == "auto":
        if have_fa:
            return "flash_attention_2"
        log.warning("attn_implementation=auto: flash-attn/CUDA unavailable, using sdpa")
        return "sdpa"
    if want == "flash_attention_2" and not have_fa:
        raise HardwareError(
            "hardware.attn_implementation=flash_attention_2 needs a CUDA GPU and the flash-attn "
            "package: `pip install -e '.[gpu]'` on a GPU machine, or set "
            "hardware.attn_implementation=auto (falls back to sdpa) or hardware=cpu."
        )
    return want


def check_hardware(hw) -> None:
    """Fail at start, before any model loads, when the option asks for GPUs that are not there."""
    if hw.accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise HardwareError(
                f"hardware={hw.name} needs CUDA GPUs but torch sees none "
                f"(torch {torch.__version__}); use hardware=cpu on this machine."
            )
        want = hw.devices if isinstance(hw.devices, int) else None
        if want is not None and want > torch.cuda.device_count():
            raise HardwareError(
                f"hardware={hw.name} asks for {want} GPUs per node, this node has "
                f"{torch.cuda.device_count()}."
            )
    if hw.strategy == "fsdp" and hw.accelerator == "cpu" and hw.process_group_backend == "nccl":
        raise HardwareError("hardware.process_group_backend=nccl needs GPUs; use gloo on CPU")
    if hw.num_threads:
        torch.set_num_threads(hw.num_threads)


def make_strategy(hw):
    """The Lightning strategy for ``hardware.strategy``.

    ``fsdp`` is Lightning's ``ModelParallelStrategy`` (FSDP2: the modules call
    :func:`mplus.distributed.shard_model` in ``configure_model``, so parameters are sharded as
    the model is set up, and checkpoints are sharded, one file per rank). Lightning's FSDP1
    ``FSDPStrategy`` refuses CPUs; FSDP2 runs on CPU processes over gloo, so the same code path is
    tested here and used on GPUs.
    """
    backend = hw.process_group_backend or ("gloo" if hw.accelerator == "cpu" else None)
    if hw.strategy == "fsdp":
        from lightning.pytorch.strategies import ModelParallelStrategy

        world = hw.devices * hw.num_nodes if isinstance(hw.devices, int) else "auto"
        return ModelParallelStrategy(
            data_parallel_size=world,
            tensor_parallel_size=1,
            save_distributed_checkpoint=True,
            process_group_backend=backend,
        )
    if hw.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(process_group_backend=backend)
    return "auto"


def model_dtypes(model_cfg, hw) -> tuple[str, str]:
    """(trainable, frozen) parameter dtypes for the model config under the hardware option.

    Mixed precision keeps fp32 master weights for what trains (bf16 compute comes from autocast
    or FSDP's mixed-precision policy) and holds frozen models (reference, reward model) in the
    half-precision compute dtype. Otherwise both are ``model.dtype``.
    """
    if hw.precision in ("bf16-mixed", "16-mixed"):
        return "float32", "bfloat16" if hw.precision == "bf16-mixed" else "float16"
    if hw.precision == "bf16-true":
        return "bfloat16", "bfloat16"
    return model_cfg.dtype, model_cfg.dtype


def uses_fsdp(hw) -> bool:
    return hw.strategy == "fsdp"


def trainer_kwargs(hw) -> dict:
    """Accelerator, devices, nodes, strategy and precision for ``lightning.Trainer``.

    Data loading is sharded by mplus's own samplers (each rank takes its slice of the same global
    batch), so Lightning's ``DistributedSampler`` injection is off.
    """
    return {
        "accelerator": hw.accelerator,
        "devices": hw.devices,
        "num_nodes": hw.num_nodes,
        "strategy": make_strategy(hw),
        "precision": hw.precision,
        "use_distributed_sampler": False,
    }
