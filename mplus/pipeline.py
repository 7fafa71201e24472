"""Stages of a run (base -> reward model -> PPO), each writing into the run dir.

``train.py`` composes and validates the config, then calls :func:`run`. Each stage is a function
that builds its models and LightningModule, fits, exports, and adds flat metrics to the summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path

import torch

from mplus import distributed as D
from mplus.export import export_model
from mplus.hardware import (
    HardwareError,
    check_hardware,
    model_dtypes,
    resolve_attn_implementation,
    trainer_kwargs,
    uses_fsdp,
)

log = logging.getLogger(__name__)


class Summary(dict):
    """Flat ``group/name`` metrics, rewritten to ``summary.json`` after every stage."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def save(self) -> None:
        if not D.is_rank_zero():
            return
        clean = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in self.items()}
        self.path.write_text(json.dumps(clean, indent=2, sort_keys=True))


def make_trainer(
    cfg,
    stage: str,
    *,
    max_steps: int,
    val_every: int | None = None,
    ckpt_every: int | None = None,
    callbacks=(),
    grad_clip: float | None = None,
    accumulate: int = 1,
    max_epochs: int = -1,
    summary: Summary | None = None,
):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from mplus.modules.signals import AtomicCheckpointIO, fault_callbacks

    run_dir = Path(cfg.run_dir)
    logger = TensorBoardLogger(
        save_dir=str(run_dir), name=cfg.logger.subdir, version="", default_hp_metric=False
    )
    cbs = [*fault_callbacks(stage, summary), *callbacks]  # stop signals, NaN, resumed curves
    if ckpt_every:
        cbs.append(
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints" / stage,
                filename="{step}",
                save_last=True,
                save_top_k=1,
                **_ckpt_trigger(ckpt_every, val_every),
            )
        )
    return L.Trainer(
        **trainer_kwargs(cfg.hardware),
        max_steps=max_steps,
        max_epochs=max_epochs,
        logger=logger,
        callbacks=cbs,
        enable_checkpointing=bool(ckpt_every),
        val_check_interval=val_every,
        check_val_every_n_epoch=None if val_every else 1,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.logger.log_every,
        gradient_clip_val=grad_clip or None,
        accumulate_grad_batches=accumulate,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],  # temp file beside the checkpoint, not in $TMPDIR
    )


def _ckpt_trigger(ckpt_every: int, val_every: int | None) -> dict:
    """When ``ModelCheckpoint`` saves. Checkpoints at every validation are written after it (on
    validation end), not at the end of the batch before it: resumed from a batch-end checkpoint,
    Lightning counts that step's validation as done and skips it, so its point would be missing
    from the curves (and from the resumed run's callback metrics)."""
    if val_every and ckpt_every == val_every:
        return {"every_n_epochs": 1, "save_on_train_epoch_end": False}
    return {"every_n_train_steps": ckpt_every}


def _sharded(module, cfg):
    """Under ``hardware.strategy=fsdp`` the module shards its models in ``configure_model``."""
    module.shard_with = cfg.hardware if uses_fsdp(cfg.hardware) else None
    return module


def _multi_fsdp(hw) -> bool:
    return uses_fsdp(hw) and isinstance(hw.devices, int) and hw.devices * hw.num_nodes > 1


def check_parallel_plan(cfg) -> None:
    """Refuse, at start, combinations the distributed path does not support."""
    hw, algo = cfg.hardware, cfg.algo
    world = hw.devices * hw.num_nodes if isinstance(hw.devices, int) else None
    if algo.name == "ppo" and hw.strategy == "ddp":
        raise HardwareError(
            "algo=ppo trains with several backward passes per step, which DDP's "
            "reducer does not allow: use hardware.strategy=fsdp"
        )
    if algo.name == "ppo" and world and world > 1:
        for key in ("rollout_batch_size", "minibatch_size"):
            if getattr(algo, key) % world:
                raise HardwareError(
                    f"algo.{key}={getattr(algo, key)} must be divisible by the "
                    f"{world} data-parallel ranks of hardware={hw.name}"
                )


# ---------------------------------------------------------------- seeds and resuming

STAGES = ("rm", "ppo", "sft", "dpo")  # the stages that fit, each with checkpoints/<stage>/


def stage_seed(seed: int, stage: str) -> int:
    """The global seed of ``stage``: a function of the run seed and the stage name only, so a
    stage starts from the same RNG state whatever ran before it in the process (a base
    pretrained on a cold cache, a reward-model stage reused from an earlier try). sha256, not
    ``hash()``, which is salted per process."""
    digest = hashlib.sha256(f"mplus.stage|{seed}|{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _seed_stage(cfg, stage: str) -> None:
    import lightning as L

    L.seed_everything(stage_seed(cfg.seed, stage), workers=True, verbose=False)


def stage_checkpoint(cfg, stage: str) -> str | None:
    """The checkpoint ``stage`` resumes from, or None to start it fresh.

    ``ckpt_path=last``: the stage's own ``<run dir>/checkpoints/<stage>/last.ckpt`` when there
    is one, so one command resumes a whole run at whichever stage it stopped in. An explicit
    file: the stage whose ``checkpoints/<stage>/`` folder holds it, else the run's last stage
    (``algo.name``), as before.
    """
    path = cfg.ckpt_path
    if not path:
        return None
    if path == "last":
        last = Path(cfg.run_dir) / "checkpoints" / stage / "last.ckpt"
        return str(last) if last.exists() else None
    folder = Path(path).parent
    owner = folder.name if folder.parent.name == "checkpoints" and folder.name in STAGES else None
    return path if stage == (owner or cfg.algo.name) else None


def _rng_states() -> dict:
    """The global RNG states in types a ``weights_only`` checkpoint load accepts."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def _set_rng_states(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def rng_state_callback():
    """A callback that saves the global RNG states (torch, CUDA, numpy, Python) in every
    checkpoint and restores them when the fit resumes: Lightning 2.6 saves none, so dropout,
    sampling and any other draw would continue from the resumed process's fresh seed."""
    import lightning as L

    class RNGStateCheckpoint(L.Callback):
        state_key = "mplus_rng"

        def __init__(self):
            self._loaded = None

        def state_dict(self) -> dict:
            return _rng_states()

        def load_state_dict(self, state_dict: dict) -> None:
            self._loaded = state_dict

        def on_train_start(self, trainer, pl_module) -> None:
            # the last hook before the first resumed batch: setup draws nothing after it
            if self._loaded is not None:
                _set_rng_states(self._loaded)
                self._loaded = None

    return RNGStateCheckpoint()


def _grouped_loader(dataset, batch_size, collate, shuffle, seed, lengths):
    """Training batches group similar lengths (padding is most of the cost on short texts); their
    position (epoch, batches drawn) is part of every checkpoint, so a resume continues mid-epoch."""
    from mplus.data.collate import (
        LengthGroupedBatchSampler,
        ResumableDataLoader,
        SequentialBatchSampler,
    )

    if not shuffle:
        sampler = SequentialBatchSampler(len(dataset), batch_size)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    sampler = LengthGroupedBatchSampler(lengths, batch_size, seed=seed)
    return ResumableDataLoader(dataset, sampler, collate_fn=collate)


def _pair_loader(dataset, batch_size, collate, shuffle, seed):
    lengths = [len(it["chosen"]) + len(it["rejected"]) for it in dataset.items]
    return _grouped_loader(dataset, batch_size, collate, shuffle, seed, lengths)


def _fit_validate(cfg, stage: str, algo, module, train_dl, val_dl, summary: Summary, t0: float):
    """Fit a supervised-style stage (rm/sft/dpo), validate once more, record ``<stage>/*``."""
    val_every = min(algo.val_every, algo.max_steps)
    trainer = make_trainer(
        cfg,
        stage,
        max_steps=algo.max_steps,
        val_every=val_every,
        ckpt_every=val_every,
        grad_clip=algo.grad_clip,
        accumulate=getattr(algo, "accumulate_grad_batches", 1),
        callbacks=[rng_state_callback()],
        summary=summary,
    )
    ckpt = stage_checkpoint(cfg, stage)
    if ckpt:
        log.info("Resuming the %s stage from %s", stage, ckpt)
    trainer.fit(_sharded(module, cfg), train_dl, val_dl, ckpt_path=ckpt, weights_only=True)
    if trainer.global_step % min(algo.val_every, algo.max_steps) == 0 and any(
        k.startswith(f"{stage}/val") for k in trainer.callback_metrics
    ):
        metrics = trainer.callback_metrics  # the last step already validated
    else:
        metrics = trainer.validate(module, val_dl, verbose=False)[0]
    metrics = {k: float(v) for k, v in metrics.items()}
    summary.update({k: v for k, v in metrics.items() if k.startswith(f"{stage}/")})
    summary[f"{stage}/steps"] = trainer.global_step
    summary[f"time/{stage}_s"] = round(time.time() - t0, 1)
    return trainer, metrics


# ---------------------------------------------------------------- reward model


def run_reward_model_stage(cfg, rm_cfg, ctx, summary: Summary) -> Path:
    """Train the reward model from the base and export it to ``<run dir>/reward_model/``."""
    from mplus.data.collate import PairCollator, PairDataset
    from mplus.models.builders import apply_lora, load_reward_model
    from mplus.modules.reward_model import RewardModelModule

    t0 = time.time()
    _seed_stage(cfg, "rm")  # before the model: the score head is initialised from it
    tok = ctx["tokenizer"]
    model = load_reward_model(
        ctx["base_path"],
        cfg.model,
        ctx["attn"],
        pad_token_id=tok.pad_token_id,
        dtype=ctx["dtypes"][0],
        empty=ctx["empty"],
    )
    model = apply_lora(model, cfg.model.lora, "SEQ_CLS")
    module = RewardModelModule(model, rm_cfg)
    collate = PairCollator(tok.pad_token_id)
    data = ctx["data"]
    train_dl = _pair_loader(
        PairDataset(data.train_pairs, tok), rm_cfg.batch_size, collate, True, cfg.seed
    )
    val_dl = _pair_loader(
        PairDataset(data.val_pairs, tok), rm_cfg.batch_size * 2, collate, False, cfg.seed
    )
    _, metrics = _fit_validate(cfg, "rm", rm_cfg, module, train_dl, val_dl, summary, t0)

    out = Path(cfg.run_dir) / "reward_model"
    export_model(
        module.model,
        tok,
        out,
        dtype=cfg.model.dtype,
        kind="reward_model",
        cfg=cfg,
        algo=rm_cfg,
        summary=summary,
    )
    stats = {
        "mean": metrics["rm/reward_mean"],
        "std": metrics["rm/reward_std"],
        "val_accuracy": metrics["rm/val_accuracy"],
    }
    if D.is_rank_zero():
        (out / "reward_stats.json").write_text(json.dumps(stats, indent=2))
    D.barrier()  # the next stage reads it on every rank
    summary.save()
    log.info("Reward model: val accuracy %.3f, exported to %s", metrics["rm/val_accuracy"], out)
    return out


# ---------------------------------------------------------------- PPO


def _reward_model_for_ppo(cfg, algo, ctx, summary) -> Path:
    """The exported reward model PPO scores with: given, left by an earlier try, or trained now."""
    if algo.reward_model is not None:
        path = Path(algo.reward_model)
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"algo.reward_model={path}: no exported model (config.json) there"
            )
        return path
    path = Path(cfg.run_dir) / "reward_model"
    if (path / "reward_stats.json").exists():  # resuming a run whose RM stage finished
        log.info("Reusing the reward model in %s", path)
        return path
    return run_reward_model_stage(cfg, algo.rm, ctx, summary)


def run_ppo_stage(cfg, algo, ctx, summary: Summary) -> Path:
    """PPO from the base; exports ``<run dir>/policy/``; adds ppo/* start/end metrics."""
    from mplus.models.builders import (
        apply_lora,
        disable_dropout,
        load_causal_lm,
        load_reward_model,
    )
    from mplus.models.reward import read_reward_stats
    from mplus.models.value import ValueModel
    from mplus.modules.ppo import PPOCheckpoint, PPOModule
    from mplus.rollout import HFGenerateEngine

    rm_path = _reward_model_for_ppo(cfg, algo, ctx, summary)
    if algo.steps <= algo.warmup_steps:
        log.warning(
            "algo.steps=%d <= algo.warmup_steps=%d: the whole run is learning-rate "
            "warmup and never reaches algo.policy_lr",
            algo.steps,
            algo.warmup_steps,
        )
    t0 = time.time()
    _seed_stage(cfg, "ppo")
    tok, attn, base = ctx["tokenizer"], ctx["attn"], ctx["base_path"]
    train_dt, frozen_dt = ctx["dtypes"]
    empty = ctx["empty"]
    policy = load_causal_lm(base, cfg.model, attn, dtype=train_dt, empty=empty)
    policy.generation_config.pad_token_id = tok.pad_token_id
    policy = apply_lora(policy, cfg.model.lora, "CAUSAL_LM")
    ref = (
        None
        if cfg.model.lora.enabled
        else load_causal_lm(base, cfg.model, attn, dtype=frozen_dt, empty=empty)
    )
    reward_model = load_reward_model(
        str(rm_path), cfg.model, attn, pad_token_id=tok.pad_token_id, dtype=frozen_dt, empty=empty
    )
    value_src = str(rm_path) if algo.value_init == "reward_model" else base
    value = load_reward_model(
        value_src, cfg.model, attn, pad_token_id=tok.pad_token_id, dtype=train_dt, empty=empty
    )
    value = ValueModel(apply_lora(value, cfg.model.lora, "SEQ_CLS"))
    for m in (policy, ref, reward_model, value):  # on-policy: the update sees the rollout's model
        if m is not None:
            disable_dropout(m)

    g = algo.generation
    engine = HFGenerateEngine(
        tok,
        max_new_tokens=g.max_new_tokens,
        temperature=0.0 if g.greedy else g.temperature,
        top_p=g.top_p,
        top_k=g.top_k,
        stop_strings=tuple(g.stop_strings),
        max_prompt_length=g.max_prompt_length,
    )
    data = ctx["data"]
    start_file = Path(cfg.run_dir) / "ppo_start.json"
    ckpt = stage_checkpoint(cfg, "ppo")
    resumed = ckpt is not None and start_file.exists()

    def start_eval(m):  # before the first step, with the models set up (sharded, on device)
        out = heldout_eval(
            cfg,
            ctx,
            m.policy,
            ref_model=m.ref_model,
            reward_model=m.reward_model,
            title="before PPO",
            probe=False,
        )
        if D.is_rank_zero():
            start_file.write_text(json.dumps(out))
        return out

    module = PPOModule(
        policy=policy,
        value_model=value,
        ref_model=ref,
        reward_model=reward_model,
        tokenizer=tok,
        engine=engine,
        cfg=algo,
        prompts=data.prompts,
        reward_stats=read_reward_stats(rm_path),
        gold_fn=data.gold_fn,
        seed=cfg.seed,
        start_eval=None if resumed or not cfg.evaluation.enabled else start_eval,
    )
    _sharded(module, cfg)

    ckpt_dir = Path(cfg.run_dir) / "checkpoints" / "ppo"
    # The module stops the fit after ``algo.steps`` PPO steps (its own counter); epochs over the
    # step loader are unbounded, so a finished run resumed with a larger algo.steps goes on.
    trainer = make_trainer(
        cfg,
        "ppo",
        max_steps=-1,
        max_epochs=-1,
        callbacks=[PPOCheckpoint(ckpt_dir, algo.ckpt_every), rng_state_callback()],
        summary=summary,
    )
    steps = torch.utils.data.DataLoader(torch.arange(algo.steps), batch_size=1)
    if ckpt:
        log.info("Resuming the ppo stage from %s", ckpt)
    trainer.fit(module, steps, ckpt_path=ckpt, weights_only=True)
    start = module.start_metrics or (
        json.loads(start_file.read_text()) if start_file.exists() else {}
    )
    end = heldout_eval(
        cfg,
        ctx,
        module.policy,
        ref_model=module.ref_model,
        reward_model=module.reward_model,
        title="after PPO",
        summary=summary,
        logger=trainer.logger,
        step=module.ppo_step,
    )
    for k, v in start.items():
        summary[f"ppo/{k}_start"] = v
    for k, v in end.items():
        if k != "probe_nll":
            summary[f"ppo/{k}_end"] = v
    summary["ppo/steps"] = module.ppo_step
    summary["time/ppo_s"] = round(time.time() - t0, 1)
    out = Path(cfg.run_dir) / "policy"
    export_model(
        module.policy, tok, out, dtype=cfg.model.dtype, kind="policy", cfg=cfg, summary=summary
    )
    summary.save()
    return out


# ---------------------------------------------------------------- held-out evaluation


def heldout_eval(
    cfg,
    ctx,
    policy,
    *,
    ref_model=None,
    reward_model=None,
    title: str,
    summary: Summary | None = None,
    logger=None,
    step: int = 0,
    probe: bool = True,
) -> dict:
    """:func:`mplus.evaluate.evaluate_policy` on the held-out prompts with the run's settings.

    With ``summary``, adds ``eval/<metric>`` keys there and to TensorBoard (via ``logger``).
    """
    from mplus.evaluate import evaluate_policy
    from mplus.rollout import HFGenerateEngine

    ev, tok, data = cfg.evaluation, ctx["tokenizer"], ctx["data"]
    if not ev.enabled:
        return {}
    engine = HFGenerateEngine(
        tok,
        max_new_tokens=ev.max_new_tokens,
        temperature=ev.temperature,
        stop_strings=tuple(ev.stop_strings),
    )
    with D.gathered(policy):  # every rank evaluates the same prompts; rank 0 reports
        out = evaluate_policy(
            policy,
            tok,
            data.eval_prompts,
            engine,
            ref_model=ref_model,
            reward_model=reward_model,
            gold_fn=data.gold_fn,
            probe_texts=data.probe_texts[: ev.probe_docs] if probe else None,
            seed=cfg.seed + ev.seed,
        )
    _log_samples(title, out.pop("samples"))
    if summary is not None:
        summary.update({f"eval/{k}": v for k, v in out.items()})
        summary.save()
    if logger is not None:
        logger.log_metrics({f"eval/{k}": v for k, v in out.items()}, step=step)
    return out


def _eval_reward_model(cfg, ctx):
    """The reward model that scores base/SFT/DPO samples: ``evaluation.reward_model``, or none."""
    from mplus.models.builders import load_reward_model

    path = cfg.evaluation.reward_model
    if path is None:
        return None
    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"evaluation.reward_model={path}: no exported model there")
    return load_reward_model(
        path,
        cfg.model,
        ctx["attn"],
        pad_token_id=ctx["tokenizer"].pad_token_id,
        dtype=ctx["dtypes"][1],
    ).eval()


def _frozen_base(cfg, ctx, empty: bool | None = None):
    from mplus.models.builders import load_causal_lm

    return (
        load_causal_lm(
            ctx["base_path"], cfg.model, ctx["attn"], dtype=ctx["dtypes"][1], empty=empty
        )
        .eval()
        .requires_grad_(False)
    )


# ---------------------------------------------------------------- baselines: none, SFT, DPO


def _trainable_policy(cfg, ctx):
    """The base as a trainable causal LM (master dtype, LoRA when configured) for SFT/DPO."""
    from mplus.models.builders import apply_lora, load_causal_lm

    model = load_causal_lm(
        ctx["base_path"], cfg.model, ctx["attn"], dtype=ctx["dtypes"][0], empty=ctx["empty"]
    )
    return apply_lora(model, cfg.model.lora, "CAUSAL_LM")


def run_base_eval_stage(cfg, ctx, summary: Summary) -> None:
    """``algo=none``: the base model through the same held-out evaluation."""
    if not cfg.evaluation.enabled:
        log.warning("algo=none with evaluation.enabled=false: nothing to run")
        return
    _seed_stage(cfg, "none")
    base = _frozen_base(cfg, ctx)
    heldout_eval(
        cfg,
        ctx,
        base,
        reward_model=_eval_reward_model(cfg, ctx),
        title="base model",
        summary=summary,
    )


def run_sft_stage(cfg, algo, ctx, summary: Summary) -> Path:
    """SFT of the base on the chosen responses; exports ``policy/``."""
    from mplus.data.collate import SFTCollator, SFTDataset
    from mplus.modules.causal_lm import CausalLMModule

    t0 = time.time()
    _seed_stage(cfg, "sft")
    tok, data = ctx["tokenizer"], ctx["data"]
    policy = _trainable_policy(cfg, ctx)
    collate = SFTCollator(tok.pad_token_id)
    train_ds, val_ds = SFTDataset(data.train_pairs, tok), SFTDataset(data.val_pairs, tok)
    train_dl = _grouped_loader(
        train_ds,
        algo.batch_size,
        collate,
        True,
        cfg.seed,
        [len(it["input_ids"]) for it in train_ds.items],
    )
    val_dl = _grouped_loader(val_ds, algo.batch_size * 2, collate, False, cfg.seed, None)
    module = CausalLMModule(
        policy,
        lr=algo.lr,
        weight_decay=algo.weight_decay,
        warmup_steps=int(algo.warmup_ratio * algo.max_steps),
        total_steps=algo.max_steps,
        prefix="sft",
    )
    trainer, _ = _fit_validate(cfg, "sft", algo, module, train_dl, val_dl, summary, t0)
    return _evaluate_and_export(
        cfg, ctx, module.model, lambda: _frozen_base(cfg, ctx), "SFT", trainer, summary
    )


def run_dpo_stage(cfg, algo, ctx, summary: Summary) -> Path:
    """DPO from the base against the frozen base; exports ``policy/``."""
    from mplus.data.collate import PairCollator, PairDataset
    from mplus.evaluate import reference_context
    from mplus.modules.dpo import DPOModule, attach_reference_logps, precompute_reference_logps

    t0 = time.time()
    _seed_stage(cfg, "dpo")
    tok, data = ctx["tokenizer"], ctx["data"]
    policy = _trainable_policy(cfg, ctx)
    ref = None if cfg.model.lora.enabled else _frozen_base(cfg, ctx, empty=ctx["empty"])
    collate = PairCollator(tok.pad_token_id)
    train_ds, val_ds = PairDataset(data.train_pairs, tok), PairDataset(data.val_pairs, tok)
    if algo.precompute_ref and uses_fsdp(cfg.hardware):
        log.info("DPO under FSDP: reference log-probs computed per batch by the sharded reference")
    elif algo.precompute_ref:  # one pass of the reference over the data instead of one per step
        for ds in (train_ds, val_ds):
            plain = torch.utils.data.DataLoader(
                ds, batch_size=algo.batch_size * 2, collate_fn=collate
            )
            ref_model, ctx_mgr = reference_context(policy, ref)
            with ctx_mgr:
                attach_reference_logps(ds, precompute_reference_logps(ref_model, plain))
    train_dl = _pair_loader(train_ds, algo.batch_size, collate, True, cfg.seed)
    val_dl = _pair_loader(val_ds, algo.batch_size * 2, collate, False, cfg.seed)
    module = DPOModule(policy, ref, algo)
    trainer, _ = _fit_validate(cfg, "dpo", algo, module, train_dl, val_dl, summary, t0)
    return _evaluate_and_export(cfg, ctx, module.policy, lambda: ref, "DPO", trainer, summary)


def _evaluate_and_export(cfg, ctx, policy, reference, name: str, trainer, summary) -> Path:
    """SFT/DPO's tail: the held-out evaluation, then ``policy/`` (its card lists those metrics).

    ``reference`` builds the frozen base lazily: nothing is loaded with the evaluation off.
    """
    if cfg.evaluation.enabled:
        heldout_eval(
            cfg,
            ctx,
            policy,
            ref_model=reference(),
            reward_model=_eval_reward_model(cfg, ctx),
            title=f"after {name}",
            summary=summary,
            logger=trainer.logger,
            step=trainer.global_step,
        )
    out = Path(cfg.run_dir) / "policy"
    export_model(
        policy,
        ctx["tokenizer"],
        out,
        dtype=cfg.model.dtype,
        kind="policy",
        cfg=cfg,
        summary=summary,
    )
    return out


def _log_samples(title: str, samples, k: int = 6) -> None:
    if not D.is_rank_zero():
        return
    lines = [f"Samples {title} (held-out prompts; last request, response, gold/RM score):"]
    for p, r, s in samples[:k]:
        last = p.rsplit("Human:", 1)[-1].replace("\n\nAssistant:", "").strip()
        lines.append(f"  [{s:.2f}] {last!r} -> {r!r}")
    log.info("\n".join(lines))


# ---------------------------------------------------------------- the run


def run(cfg) -> dict:
    """Run every stage that ``cfg.algo`` needs in ``cfg.run_dir``; return the summary."""
    import lightning as L

    from mplus.data.build import build_preference_data
    from mplus.models.builders import resolve_base
    from mplus.models.tokenizer import load_tokenizer

    t0 = time.time()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary(run_dir / "summary.json")
    if cfg.ckpt_path and summary.path.exists():  # resuming: keep what finished stages recorded
        summary.update(json.loads(summary.path.read_text()))
    check_hardware(cfg.hardware)
    check_parallel_plan(cfg)
    attn = resolve_attn_implementation(cfg.hardware)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    base_path = resolve_base(cfg.model, cfg.cache_dir)
    summary["time/base_s"] = round(time.time() - t0, 1)
    tok = load_tokenizer(
        base_path, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
    )
    data = build_preference_data(cfg.data, tok)
    summary.update(data.stats)
    ctx = {
        "base_path": base_path,
        "tokenizer": tok,
        "data": data,
        "attn": attn,
        "dtypes": model_dtypes(cfg.model, cfg.hardware),
        # multi-process FSDP: True on ranks that build models empty, False on rank 0
        "empty": D.builds_empty(cfg.hardware) if _multi_fsdp(cfg.hardware) else None,
    }

    algo = cfg.algo
    if algo.name == "rm":
        run_reward_model_stage(cfg, algo, ctx, summary)
    elif algo.name == "ppo":
        run_ppo_stage(cfg, algo, ctx, summary)
    elif algo.name == "dpo":
        run_dpo_stage(cfg, algo, ctx, summary)
    elif algo.name == "sft":
        run_sft_stage(cfg, algo, ctx, summary)
    elif algo.name == "none":
        run_base_eval_stage(cfg, ctx, summary)
    if cfg.evaluation.suites:
        from mplus.eval.runner import evaluate_training_run  # python -m mplus.eval's suites

        summary.update(evaluate_training_run(cfg, base_path))
    summary["time/total_s"] = round(time.time() - t0, 1)
    summary.save()
    if D.is_rank_zero():
        from mplus.tblog import log_hparams

        log_hparams(run_dir, summary, cfg.logger.subdir)  # HParams tab: overrides -> final metrics
        _print_summary(summary, run_dir)
    return dict(summary)


def _print_summary(summary: Summary, run_dir: Path) -> None:
    keys = [k for k in sorted(summary) if not k.startswith("data/skipped/")] + sorted(
        k for k in summary if k.startswith("data/skipped/")
    )
    width = max(len(k) for k in keys)
    lines = ["", "summary".center(width + 14, "-")]
    for k in keys:
        v = summary[k]
        v = f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)
        lines.append(f"{k:<{width}}  {v}")
    lines.append("-" * (width + 14))
    written = [
        p
        for p in ("summary.json", "tb", "reward_model", "policy", "checkpoints")
        if (run_dir / p).exists()
    ]
    lines += [f"wrote: {run_dir / p}" for p in written]
    print("\n".join(lines), flush=True)
