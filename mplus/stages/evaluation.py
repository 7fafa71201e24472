"""The held-out evaluation every stage ends with, run with the run's settings: samples on the
held-out prompts scored by the gold function (synthetic data) and a reward model, KL to the
reference, the probe NLL (:mod:`mplus.eval.heldout`)."""

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
    from mplus.rollout import HFGenerateEngine

    cfg, tok, data = rc.cfg, rc.tokenizer, rc.data
    ev = cfg.evaluation
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
    log_samples(title, out.pop("samples"))
    if summary is not None:
        summary.update({f"heldout/{k}": v for k, v in out.items()})
        summary.save()
    if logger is not None:  # a trainer's loggers (or one logger)
        from mplus.loggers import log_metrics_all

        loggers = logger if isinstance(logger, list | tuple) else [logger]
        log_metrics_all(loggers, {f"heldout/{k}": v for k, v in out.items()}, step=step)
    return out


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
