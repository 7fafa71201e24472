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
    if hw.num_threads:
        torch.set_num_threads(hw.num_threads)


def trainer_kwargs(hw) -> dict:
    """Accelerator, devices, nodes, strategy and precision for ``lightning.Trainer``."""
    return {
        "accelerator": hw.accelerator,
        "devices": hw.devices,
        "num_nodes": hw.num_nodes,
        "strategy": hw.strategy,
        "precision": hw.precision,
    }
