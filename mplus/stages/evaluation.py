"""The held-out evaluation every stage ends with, run with the run's settings: samples on the
held-out prompts scored by the gold function (synthetic data) and a reward model, KL to the
reference, the behaviour rates, the knowledge and corpus probes (:mod:`mplus.eval.heldout`)."""

from __future__ import annotations

import logging

from mplus import distributed as D
from mplus.rundir import Summary
from mplus.stages.context import RunContext

log = logging.getLogger(__name__)


def heldout_eval(
    rc: RunContext,
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
    """:func:`mplus.eval.heldout.evaluate_policy` on the held-out prompts with the run's settings.

    With ``summary``, adds ``heldout/<metric>`` keys there and to TensorBoard and the other loggers (via
    ``logger``: a trainer's ``loggers``).
    """
    from mplus.eval.heldout import evaluate_policy

    cfg, tok, data = rc.cfg, rc.tokenizer, rc.data
    ev = cfg.evaluation
    if not ev.enabled:
        return {}
    engine = rollout_engine(
        rc,
        row_seed=cfg.seed + ev.seed,  # vllm: the same sampling stream for every model compared
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
            knowledge=data.knowledge if probe else None,
            behaviour_fn=data.behaviour_fn,
            prompt_subsets=data.eval_subsets,
            seed=cfg.seed + ev.seed,
        )
    log_samples(title, out.pop("samples"))
    if summary is not None:
        summary.update({f"heldout/{k}": v for k, v in out.items()})
        summary.save()
    if logger is not None:  # a trainer's loggers (or one logger)
        from mplus.loggers import log_metrics_all

        loggers = logger if isinstance(logger, list | tuple) else [logger]
        log_metrics_all(loggers, {f"heldout/{k}": v for k, v in out.items()}, step=step)
    return out


def rollout_engine(rc: RunContext, *, row_seed: int | None = None, **sampling):
    """The run's generation engine with ``sampling`` (``HFGenerateEngine``'s arguments):
    ``algo.rollout.engine`` for an RL algorithm, ``hf`` for every other stage (``row_seed``:
    :func:`mplus.rollout.make_engine`'s)."""
    from mplus.config import is_rl
    from mplus.rollout import make_engine

    algo = rc.cfg.algo
    kind = algo.rollout.engine if is_rl(algo) else "hf"
    backend = vllm_backend(rc) if kind == "vllm" else None
    return make_engine(kind, rc.tokenizer, backend=backend, row_seed=row_seed, **sampling)


def vllm_backend(rc: RunContext):
    """This process's :class:`mplus.rollout.vllm_engine.VLLMBackend` for ``rc`` (made once;
    the vLLM engine itself is built on its first generate)."""
    if "vllm" in rc.engines:
        return rc.engines["vllm"]
    from mplus.rollout.vllm_engine import VLLMBackend

    cfg = rc.cfg
    hw, r = cfg.hardware, cfg.algo.rollout
    gpu = hw.accelerator in ("gpu", "cuda") or hw.accelerator == "auto" and _cuda()
    backend = VLLMBackend(
        rc.tokenizer,
        seed=cfg.seed,
        gpu=gpu,
        gpu_memory_utilization=hw.vllm_gpu_memory_utilization,
        enable_sleep_mode=r.enable_sleep_mode,
        cpu_kv_cache_gib=r.cpu_kv_cache_gib,
        enforce_eager=r.enforce_eager,
        dtype=r.dtype,
        max_model_len=r.max_model_len,
    )
    rc.engines["vllm"] = backend
    return backend


def close_vllm_backend(rc: RunContext) -> None:
    """Drops ``rc``'s vLLM engine, if it has one (the RL stage's end)."""
    backend = rc.engines.pop("vllm", None)
    if backend is not None:
        backend.close()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def eval_reward_model(rc: RunContext):
    """The reward model that scores base/SFT/DPO samples: ``evaluation.reward_model``, or none."""
    from pathlib import Path

    path = rc.cfg.evaluation.reward_model
    if path is None:
        return None
    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"evaluation.reward_model={path}: no exported model there")
    return rc.scalar_model(path, trainable=False, sharded=False).eval()


def log_samples(title: str, samples, k: int = 6) -> None:
    if not D.is_rank_zero():
        return
    lines = [f"Samples {title} (held-out prompts; last request, response, gold/RM score):"]
    for p, r, s in samples[:k]:
        last = p.rsplit("Human:", 1)[-1].replace("\n\nAssistant:", "").strip()
        lines.append(f"  [{s:.2f}] {last!r} -> {r!r}")
    log.info("\n".join(lines))


def evaluate_and_export(rc: RunContext, policy, reference, name: str, trainer, summary) -> None:
    """SFT/DPO's tail: the held-out evaluation, then ``policy/`` (its card lists those metrics).

    ``reference`` builds the frozen base lazily: nothing is loaded with the evaluation off.
    """
    cfg = rc.cfg
    if cfg.evaluation.enabled:
        heldout_eval(
            rc,
            policy,
            ref_model=reference(),
            reward_model=eval_reward_model(rc),
            title=f"after {name}",
            summary=summary,
            logger=trainer.loggers,
            step=trainer.global_step,
        )
    export_policy(rc, policy, summary)


def export_policy(rc: RunContext, policy, summary) -> None:
    """``<run dir>/policy/``: the trained policy as Hugging Face files and its model card."""
    from mplus import rundir
    from mplus.export import export_model

    export_model(
        policy,
        rc.tokenizer,
        rc.run_dir / rundir.POLICY,
        dtype=rc.cfg.model.dtype,
        kind="policy",
        cfg=rc.cfg,
        summary=summary,
    )
