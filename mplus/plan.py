"""Per-GPU memory plan for a run, without allocating a model.

``python -m mplus.plan <the same overrides as mplus.train>`` builds the model on the meta device
(from the config's ``hf_config``: no download, no memory), counts parameters, and prints for each
model the run trains or holds (PPO: policy, value, reference, reward model; GRPO, RLOO and
REINFORCE++ the same without the value model) its bytes per GPU:

- trainable, mixed precision (``bf16-mixed``): fp32 master weights 4 + fp32 gradients 4 + Adam's
  two fp32 moments 8 = **16 bytes per parameter**; frozen models hold their bf16 weights, **2
  bytes per parameter** (see :func:`mplus.hardware.model_dtypes`);
- sharded by FSDP over all data-parallel ranks (``devices x num_nodes``), replicated otherwise;
- plus an activation estimate for one training micro-batch and, for RL, the rollout phase
  (the policy gathered in bf16 once per rollout phase, and the KV cache).

The peak is compared with ``hardware.gpu_memory_gb`` less a 10% reserve (CUDA context, allocator
fragmentation, communication buffers). Estimates, not measurements.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from mplus.config.rl import is_rl

GIB = 1024**3
RESERVE = 0.10  # of the GPU's memory, kept back for the CUDA context, allocator and NCCL buffers
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class ModelRow:
    name: str
    params: int
    trainable: int
    bytes_per_trainable: float  # weights + gradients + optimiser states
    bytes_per_frozen: float
    shards: int

    @property
    def per_gpu(self) -> float:
        frozen = self.params - self.trainable
        return (
            self.trainable * self.bytes_per_trainable + frozen * self.bytes_per_frozen
        ) / self.shards


@dataclass
class Plan:
    rows: list[ModelRow]
    activations: float  # bytes per GPU, training micro-batch
    rollout: float  # bytes per GPU on top of the states during generation (PPO)
    gpu_bytes: float | None
    world: int
    notes: list[str]

    @property
    def states(self) -> float:
        return sum(r.per_gpu for r in self.rows)

    @property
    def peak(self) -> float:
        return self.states + max(self.activations, self.rollout)

    @property
    def budget(self) -> float | None:
        return None if self.gpu_bytes is None else self.gpu_bytes * (1 - RESERVE)

    @property
    def fits(self) -> bool | None:
        return None if self.budget is None else self.peak <= self.budget


def _lora_params(model, lora) -> int:
    """LoRA adds r x (in + out) per targeted linear layer."""
    n = 0
    for name, m in model.named_modules():
        if name.split(".")[-1] in lora.target_modules and hasattr(m, "in_features"):
            n += lora.r * (m.in_features + m.out_features)
    return n


def _model_rows(cfg) -> list[tuple[str, object, bool]]:
    """(name, meta model, trainable) for every model the algorithm holds."""
    from mplus.models.builders import build_meta_model

    algo = cfg.algo.name
    if algo == "rm":
        return [("reward model", build_meta_model(cfg.model, "seq_cls"), True)]
    lm = build_meta_model(cfg.model, "causal_lm")
    if algo == "sft":
        return [("policy", lm, True)]
    if algo == "dpo":
        return [("policy", lm, True), ("reference", lm, False)]
    if algo == "none":
        return [("base", lm, False)]
    seq = build_meta_model(cfg.model, "seq_cls")
    rows = [("policy", lm, True)]
    if cfg.algo.critic:  # PPO's value model; GRPO, RLOO, REINFORCE++ have none
        rows.append(("value", seq, True))
    if not cfg.model.lora.enabled:  # with LoRA the reference is the policy, adapter off
        rows.append(("reference", lm, False))
    return rows + [("reward model", seq, False)]


def _dims(cfg) -> dict:
    from mplus.models.builders import hf_config_from

    c = hf_config_from(cfg.model)
    head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return {
        "h": c.hidden_size,
        "L": c.num_hidden_layers,
        "V": c.vocab_size,
        "kv": c.num_key_value_heads * head,
    }


def _batch_shape(cfg, world: int) -> tuple[int, int, int]:
    """(micro-batch rows per GPU, tokens per row, rollout rows per GPU)."""
    a = cfg.algo
    if is_rl(a):
        g = a.generation
        return (
            max(1, a.minibatch_size // world),
            g.max_prompt_length + g.max_new_tokens,
            max(1, a.rollout_batch_size // world),
        )
    if a.name in ("rm", "dpo"):  # chosen and rejected rows
        return max(1, 2 * a.batch_size // world), cfg.data.max_length, 0
    if a.name == "sft":
        return max(1, a.batch_size // world), cfg.data.max_length, 0
    return 1, cfg.data.max_length, 0


def activation_bytes(b: int, t: int, d: dict, checkpointing: bool, half: bool = True) -> float:
    """Training activations on one GPU for ``n_trained`` models, run one after the other.

    Per decoder layer, with flash attention (no T x T scores kept) and bf16, Korthikanti et al.
    (2022) give ~34·b·t·h bytes. Checkpointing keeps only each layer's input (2·b·t·h) and
    recomputes one layer at a time. The logits add b·t·V x (2 bf16 + 4 fp32 copy + 4 gradient).
    Models backpropagate one after another, so this is the largest one's, not a sum. Without
    half precision (``32-true``) the layer activations double.
    """
    per_layer = 34 * b * t * d["h"]
    layers = d["L"] * 2 * b * t * d["h"] + per_layer if checkpointing else d["L"] * per_layer
    return layers * (1 if half else 2) + b * t * d["V"] * 10


def rollout_bytes(b: int, t: int, d: dict, gathered_params: float) -> float:
    """Generation: the policy gathered in bf16 for the phase, plus the bf16 KV cache."""
    kv = 2 * d["L"] * b * t * d["kv"] * 2
    return gathered_params + kv + b * d["V"] * 4 * 2  # last-step logits


def plan(cfg) -> Plan:
    from mplus.hardware import model_dtypes

    hw = cfg.hardware
    world = hw.devices * hw.num_nodes if isinstance(hw.devices, int) else 1
    shards = world if hw.strategy == "fsdp" else 1
    train_dt, frozen_dt = model_dtypes(cfg.model, hw)
    # weights + gradients in the master dtype, Adam's two moments in fp32
    per_trainable = 2 * _BYTES[train_dt] + 8
    notes = [
        f"precision {hw.precision}: trainable {train_dt} weights+grads + fp32 Adam moments "
        f"= {per_trainable} B/param; frozen {frozen_dt} = {_BYTES[frozen_dt]} B/param",
        f"strategy {hw.strategy}: states divided by {shards} (world size {world})",
    ]
    rows = []
    for name, model, trainable in _model_rows(cfg):
        total = sum(p.numel() for p in model.parameters())
        n_train = 0
        if trainable:
            n_train = _lora_params(model, cfg.model.lora) if cfg.model.lora.enabled else total
            if cfg.model.lora.enabled:
                total += n_train
        rows.append(
            ModelRow(
                name,
                total,
                n_train,
                per_trainable,
                _BYTES[frozen_dt] if not trainable or cfg.model.lora.enabled else per_trainable,
                shards,
            )
        )
    if is_rl(cfg.algo) and not cfg.algo.critic:
        notes.append(
            f"no value model: advantage.estimator={cfg.algo.advantage.estimator} is critic-free "
            "(algo=ppo would add one more trainable row the size of the reward model)"
        )
    d = _dims(cfg)
    b, t, rb = _batch_shape(cfg, world)
    ckpt = hw.strategy == "fsdp" and hw.fsdp.activation_checkpointing
    act = activation_bytes(b, t, d, ckpt, half="16" in hw.precision)
    notes.append(
        f"activations: micro-batch {b} x {t} tokens per GPU, checkpointing "
        f"{'on' if ckpt else 'off'}"
    )
    roll = 0.0
    if is_rl(cfg.algo):
        policy = rows[0]
        gathered = policy.params * 2 if shards > 1 else 0.0  # full bf16 copy during the phase
        roll = rollout_bytes(rb, t, d, gathered)
        notes.append(
            f"rollout: {rb} sequences x {t} tokens per GPU"
            + (f", policy gathered in bf16 ({gathered / GIB:.1f} GiB)" if gathered else "")
        )
    gpu = hw.gpu_memory_gb * GIB if hw.gpu_memory_gb else None
    return Plan(rows, act, roll, gpu, world, notes)


def format_plan(p: Plan, cfg) -> str:
    hw = cfg.hardware
    lines = [
        f"memory plan: model={cfg.model.name} algo={cfg.algo.name} hardware={hw.name} "
        f"({hw.num_nodes} node(s) x {hw.devices} {hw.gpu_name or hw.accelerator}, "
        f"strategy {hw.strategy}, {hw.precision})",
        "",
    ]
    head = f"{'model':<14}{'params':>14}{'trainable':>14}{'B/param':>9}{'shards':>8}{'GiB/GPU':>10}"
    lines += [head, "-" * len(head)]
    for r in p.rows:
        bpp = r.bytes_per_trainable if r.trainable else r.bytes_per_frozen
        lines.append(
            f"{r.name:<14}{r.params:>14,}{r.trainable:>14,}{bpp:>9g}{r.shards:>8}"
            f"{r.per_gpu / GIB:>10.2f}"
        )
    lines += [
        "-" * len(head),
        f"{'model states':<59}{p.states / GIB:>10.2f}",
        f"{'activations (training micro-batch)':<59}{p.activations / GIB:>10.2f}",
    ]
    if p.rollout:
        lines.append(f"{'rollout phase (gathered policy + KV cache)':<59}{p.rollout / GIB:>10.2f}")
    lines.append(f"{'peak estimate':<59}{p.peak / GIB:>10.2f}")
    lines += ["", *(f"  {n}" for n in p.notes), ""]
    if p.fits is None:
        lines.append("verdict: unknown (hardware.gpu_memory_gb is not set for this option)")
    else:
        word = "FITS" if p.fits else "DOES NOT FIT"
        lines.append(
            f"verdict: {word}: peak {p.peak / GIB:.1f} GiB vs {p.budget / GIB:.1f} GiB "
            f"usable per GPU ({hw.gpu_memory_gb:g} GiB less {RESERVE:.0%} reserve)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from mplus.config import ConfigError, register_configs, validate
    from mplus.config_paths import config_dir

    argv = sys.argv[1:] if argv is None else argv
    register_configs()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = validate(compose("train", overrides=[*argv, "run_dir=.", "cache_dir=."]))
        print(format_plan(plan(cfg), cfg))
    except (ConfigError, ValueError, HydraException) as e:
        print(f"mplus.plan: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
