"""Data-parallel helpers: ranks, global statistics, and FSDP2 sharding of Hugging Face models.

Everything here is a no-op in a single process, so the same code runs on one CPU and on N GPUs.
Sharding uses ``torch.distributed.fsdp.fully_shard`` (FSDP2) under Lightning's
``ModelParallelStrategy``: each decoder layer becomes one FSDP unit, then the whole model (the
embeddings, final norm and heads). The decoder-layer class is read from the loaded model
(``_no_split_modules``, which transformers declares for every architecture), not hard-coded.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- ranks and reductions


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_rank_zero() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy; ``t`` is left alone): the ``reduce`` of :mod:`mplus.algo`'s stats."""
    t = t.detach().clone()
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def global_mean(x) -> float:
    """Mean over ranks of a per-rank scalar (each rank holds the same number of items)."""
    t = torch.as_tensor(float(x), dtype=torch.float64)
    return float(all_reduce_sum(t)) / world_size()


def token_share(mask: torch.Tensor) -> torch.Tensor:
    """Scale that turns a rank-local token mean into its share of the global token mean.

    Data-parallel gradients are averaged over ranks, so a loss of ``local_mean * token_share``
    has the gradient of the mean over all ranks' tokens (1.0 in a single process).
    """
    n_local = mask.sum().to(torch.float64)
    n_global = all_reduce_sum(n_local)
    return (n_local * world_size() / n_global.clamp_min(1)).to(torch.float32)


def shard_of(
    items: list, r: int | None = None, n: int | None = None, *, skip_short: bool = False
) -> list | None:
    """This rank's share of a global batch: items ``r, r+n, ...`` (equal sizes when n divides).

    With ``skip_short``, a batch of fewer items than ranks gives None on every rank alike, so
    all ranks skip it together instead of one rank running an empty step (or waiting in a
    collective the others never enter).
    """
    r = rank() if r is None else r
    n = world_size() if n is None else n
    if skip_short and len(items) < n:
        return None
    return items[r::n]


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def launch_rank(hw) -> int:
    """This process's global rank from the launcher's environment, before any process group.

    Lightning's own launcher sets ``NODE_RANK``/``LOCAL_RANK``, torchrun sets ``RANK``, SLURM
    ``SLURM_PROCID``; a process with none of them is rank 0 (it launches the others).
    """
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    per_node = hw.devices if isinstance(hw.devices, int) else 1
    return int(os.environ.get("NODE_RANK", 0)) * per_node + int(os.environ.get("LOCAL_RANK", 0))


def builds_empty(hw) -> bool:
    """Whether models this process builds for sharding start without weights.

    Under multi-process FSDP only global rank 0 reads the checkpoint; the others build the
    architecture with parameters on the meta device and receive rank 0's weights, shard by
    shard, after ``fully_shard`` (:func:`shard_model`). A 7B model is then in CPU memory once
    per node-set, not once per rank.
    """
    world = hw.devices * hw.num_nodes if isinstance(hw.devices, int) else 1
    return hw.strategy == "fsdp" and world > 1 and launch_rank(hw) != 0


@contextlib.contextmanager
def parameters_on_meta():
    """Parameters created inside go to the meta device; buffers (rotary tables) stay real."""
    register = torch.nn.Module.register_parameter

    def to_meta(module, name, param):
        register(module, name, param)
        if param is not None:
            p = module._parameters[name]
            module._parameters[name] = type(p)(p.to("meta"), requires_grad=p.requires_grad)

    torch.nn.Module.register_parameter = to_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


# ---------------------------------------------------------------- FSDP2


def decoder_layer_classes(model: torch.nn.Module) -> set[type]:
    """The transformer-block classes of a Hugging Face model (from ``_no_split_modules``)."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    classes = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not classes:
        raise ValueError(
            f"{type(model).__name__}: no decoder-layer class found to wrap "
            f"(_no_split_modules={sorted(names)})"
        )
    return classes


def wrap_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that become FSDP units, innermost first: each decoder layer, then the root.

    For a peft model the root unit is the HF model inside it: ``generate`` calls that model
    directly, and FSDP needs every forward to enter through the same root.
    """
    classes = decoder_layer_classes(model)
    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    return [m for m in model.modules() if type(m) in classes] + [root]


def shard_model(
    model: torch.nn.Module,
    mesh,
    settings,
    *,
    precision: str = "32-true",
    trainable: bool = True,
    device=None,
) -> torch.nn.Module:
    """Apply FSDP2 ``fully_shard`` to each decoder layer and the root of ``model`` (in place).

    Args:
        model: an HF model (or a wrapper holding one, e.g. a peft model or ValueModel).
        mesh: the 1-D data-parallel device mesh (Lightning's ``self.device_mesh``).
        settings: ``hardware.fsdp`` (activation checkpointing, reshard after forward, offload).
        precision: the hardware option's precision; ``bf16*`` keeps bf16 parameters for compute
            and reduces gradients in fp32.
        trainable: frozen models (reference, reward model) skip activation checkpointing and may
            be offloaded to CPU.
        device: where ranks that built the model empty materialise their shards.

    A model marked ``_mplus_from_rank0`` (every rank marks it; ranks other than 0 built it
    empty, see :func:`builds_empty`) gets rank 0's weights broadcast into the shards.
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    if getattr(model, "_mplus_sharded", False):
        return model
    if trainable and settings.activation_checkpointing:
        inner = model
        while not hasattr(inner, "gradient_checkpointing_enable") and hasattr(inner, "model"):
            inner = inner.model
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    kw = {"mesh": mesh, "reshard_after_forward": settings.reshard_after_forward}
    if precision.startswith("bf16"):
        kw["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32
        )
    if not trainable and settings.offload_frozen:
        kw["offload_policy"] = CPUOffloadPolicy()
    # marked by the builder on the HF model, which may sit inside a wrapper (ValueModel)
    from_rank0 = any(getattr(m, "_mplus_from_rank0", False) for m in model.modules())
    full = model.state_dict() if from_rank0 and is_rank_zero() else {}  # references, no copy
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()} if from_rank0 else {}
    units = wrap_units(model)
    for unit in units:
        fully_shard(unit, **kw)
    if from_rank0:
        _fill_from_rank0(model, full, buffers, device or torch.device("cpu"))
    model._mplus_sharded = True
    model._mplus_reshard = settings.reshard_after_forward
    log.info(
        "FSDP: %s sharded in %d units (%d decoder layers) over %d ranks",
        type(model).__name__,
        len(units),
        len(units) - 1,
        mesh.size(),
    )
    return model


def _fill_from_rank0(model, full: dict, buffers: dict, device) -> None:
    """Materialise empty shards and copy rank 0's full state dict into every rank's shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    # a DTensor reports its local shard's device through ``_local_tensor``
    if any(getattr(p, "_local_tensor", p).is_meta for p in model.parameters()):
        model.to_empty(device=device)
        own = dict(model.named_buffers())
        with torch.no_grad():
            for name, b in buffers.items():  # non-persistent buffers are not in the state dict
                own[name].copy_(b)
    set_model_state_dict(
        model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    )


def _fsdp_units(model: torch.nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model: torch.nn.Module):
    """Hold a sharded model's full parameters for a whole phase (rollout generation).

    Without it, every forward (one per generated token) all-gathers every layer again. Here each
    unit is gathered once and kept until the phase ends; a model that is not sharded is untouched.
    """
    units = _fsdp_units(model)
    restore = getattr(model, "_mplus_reshard", True)
    for u in units:
        u.set_reshard_after_forward(False, recurse=False)
    for u in units:
        u.unshard()
    try:
        yield model
    finally:
        for u in units:
            u.reshard()
            u.set_reshard_after_forward(restore, recurse=False)


def unsharded_peft_copy(model: torch.nn.Module, full: dict) -> torch.nn.Module:
    """A plain CPU copy of a sharded peft model holding ``full`` (its gathered state dict).

    peft cannot merge adapters into sharded (DTensor) weights; the copy is built with its
    parameters on the meta device, gets the same adapter config, and takes ``full`` by
    assignment, so peft's own ``merge_and_unload`` can then run on it (rank 0, once).
    """
    from peft import get_peft_model
    from torch.distributed.fsdp import FSDPModule
    from transformers import PreTrainedModel

    base = model.get_base_model()
    cls = next(
        c
        for c in type(base).__mro__
        if issubclass(c, PreTrainedModel) and not issubclass(c, FSDPModule)
    )
    with parameters_on_meta():
        fresh = cls(base.config)
    peft_cfg = next(iter(model.peft_config.values()))
    fresh = get_peft_model(fresh, peft_cfg)
    fresh.load_state_dict(full, assign=True)
    return fresh


def full_state_dict(model: torch.nn.Module) -> dict | None:
    """The full (unsharded) state dict on CPU for rank 0; every rank must call it when sharded."""
    if not _fsdp_units(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return sd if is_rank_zero() else None
