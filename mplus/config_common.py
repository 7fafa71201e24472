"""What the train and the eval config schemas share: the error type, the check helpers and the
``hardware`` group.

Its own module so that :mod:`mplus.eval.config` needs nothing of :mod:`mplus.config` (which
imports the eval schema for ``evaluation.suites``): the two schemas import this one and neither
imports the other both ways. :mod:`mplus.config` re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from mplus.errors import UserError

__all__ = [
    "ConfigError",
    "FSDPSettings",
    "HardwareConfig",
    "SlurmConfig",
    "register_common_configs",
]


class ConfigError(UserError, ValueError):
    """A config value is out of range or inconsistent; the message names the key.

    A :class:`mplus.errors.UserError` (one line, exit 2 from the command line), and still a
    ``ValueError`` for code that catches it as one.
    """


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


def _in(value: Any, allowed: tuple, key: str) -> None:
    _check(value in allowed, key, f"must be one of {list(allowed)}, got {value!r}")


@dataclass
class SlurmConfig:
    """Cluster settings the SLURM launcher (``hydra/launcher=slurm``) reads from the hardware option."""

    partition: str | None = None  # SLURM partition; null = the cluster's default
    account: str | None = None  # account charged for the job; null = the user's default
    qos: str | None = None  # quality of service; null = the cluster's default
    time_min: int = 1440  # wall-clock limit of one job, minutes
    cpus_per_task: int = 8  # CPU cores per task (one task per GPU)
    mem_gb: int | None = None  # memory per node, GiB; null = the cluster's default
    max_num_timeout: int = 3  # requeues after preemption/timeout before giving up

    def __post_init__(self) -> None:
        _check(self.time_min > 0, "hardware.slurm.time_min", "must be > 0")
        _check(self.cpus_per_task > 0, "hardware.slurm.cpus_per_task", "must be > 0")


@dataclass
class FSDPSettings:
    """FSDP2 (``fully_shard``) settings for ``hardware.strategy=fsdp``."""

    activation_checkpointing: bool = True  # on the trainable models' decoder layers
    reshard_after_forward: bool = True  # ZeRO-3 style; false keeps gathered params (ZeRO-2)
    offload_frozen: bool = False  # reference and reward model parameters on CPU between uses


@dataclass
class HardwareConfig:
    """Where a run computes: accelerator, processes, sharding, precision, attention kernel."""

    name: str = MISSING  # the option's name (conf/hardware/<name>.yaml)
    accelerator: str = "cpu"  # Lightning accelerator: cpu | gpu | cuda | auto
    devices: Any = 1  # processes (GPUs) per node: a positive int, or "auto"
    num_nodes: int = 1  # machines; launch one process per device on each
    strategy: str = "auto"  # auto (one process) | ddp | fsdp (FSDP2, each decoder layer a unit)
    precision: str = "32-true"  # Lightning precision: 32-true | bf16-mixed | bf16-true | 16-mixed
    # transformers' attention kernel: eager | sdpa | flash_attention_2 | auto (the model's own)
    attn_implementation: str = "sdpa"
    gpu_memory_gb: float | None = None  # memory of one GPU, GiB, for the memory planner
    num_threads: int | None = None  # torch intra-op threads on CPU; null = torch's default
    process_group_backend: str | None = None  # null: nccl on GPUs, gloo on CPU
    fsdp: FSDPSettings = field(default_factory=FSDPSettings)  # for strategy=fsdp
    gpu_name: str | None = None  # for the memory planner's report
    # share of one GPU's memory the colocated vLLM engine (algo.rollout.engine=vllm) takes for
    # its weights and KV cache, beside training; null = 0.4
    vllm_gpu_memory_utilization: float | None = None
    slurm: SlurmConfig = field(default_factory=SlurmConfig)  # for hydra/launcher=slurm

    def __post_init__(self) -> None:
        _in(self.accelerator, ("cpu", "gpu", "cuda", "auto"), "hardware.accelerator")
        _in(self.strategy, ("auto", "ddp", "fsdp"), "hardware.strategy")
        _in(
            self.precision,
            ("32-true", "bf16-mixed", "bf16-true", "16-mixed"),
            "hardware.precision",
        )
        _in(
            self.attn_implementation,
            ("eager", "sdpa", "flash_attention_2", "auto"),
            "hardware.attn_implementation",
        )
        _check(self.num_nodes >= 1, "hardware.num_nodes", "must be >= 1")
        _check(
            isinstance(self.devices, int) and self.devices >= 1 or self.devices == "auto",
            "hardware.devices",
            f"must be a positive int or 'auto', got {self.devices!r}",
        )
        if self.process_group_backend is not None:
            _in(self.process_group_backend, ("nccl", "gloo"), "hardware.process_group_backend")
        if self.gpu_memory_gb is not None:
            _check(self.gpu_memory_gb > 0, "hardware.gpu_memory_gb", "must be > 0")
        if self.vllm_gpu_memory_utilization is not None:
            _check(
                0 < self.vllm_gpu_memory_utilization < 1,
                "hardware.vllm_gpu_memory_utilization",
                "must be in (0, 1)",
            )


def register_common_configs() -> None:
    """Store the schema of the ``hardware`` group (the train and the eval config both have it)."""
    ConfigStore.instance().store(group="hardware", name="hardware_schema", node=HardwareConfig)
