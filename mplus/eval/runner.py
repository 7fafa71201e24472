"""Run suites on models side by side: check -> per model (load, run every suite, unload) -> score.

Every input is checked before the first model loads (data files, the judge endpoint, task names).
Then each model is loaded once and every suite runs on it (lm-eval scores at once; the generating
suites keep their generations); then each suite scores all models' generations with one load of
its judge / classifier / reward model, so no two large models share the accelerator.

Writes into ``out_dir``: ``summary.json`` (``{label: {"eval/<suite>/<metric>": value}}``),
``models.json`` (label -> model path), ``tb/<label>/`` (TensorBoard scalars), ``table.txt`` (the
printed table), and per-suite raw generations/verdicts under ``<suite>/``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from mplus.eval.common import EvalError, default_labels, device_for, free, load_lm, resolve_model

log = logging.getLogger("mplus.eval")


def build_suites(suites_cfg, *, out_dir: Path, device: str, attn: str) -> list:
    from mplus.eval.conversation import ConversationSuite
    from mplus.eval.general import GeneralSuite
    from mplus.eval.harmlessness import HarmlessnessSuite
    from mplus.eval.toxicity import ToxicitySuite

    classes = {
        "general": GeneralSuite,
        "conversation": ConversationSuite,
        "toxicity": ToxicitySuite,
        "harmlessness": HarmlessnessSuite,
    }
    return [
        classes[name](
            getattr(suites_cfg, name),
            limit=suites_cfg.limit,
            seed=suites_cfg.seed,
            out_dir=out_dir,
            device=device,
            attn=attn,
        )
        for name in suites_cfg.suites
    ]


def evaluate_models(
    specs: list[str],
    labels: list[str] | None,
    suites_cfg,
    hardware,
    *,
    out_dir: Path,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> dict[str, dict]:
    """Evaluate every model on every suite of ``suites_cfg``; write the outputs; return metrics.

    Args:
        specs: Model dirs, hub ids, run dirs or ``base:<run dir>`` (see :func:`resolve_model`).
        labels: Column names (one per model), or None to derive them from ``specs``.
        suites_cfg: A :class:`mplus.eval.config.SuitesConfig`.
        hardware: A :class:`mplus.config.HardwareConfig` (device, attention implementation).
        out_dir: Where everything is written.

    Returns:
        ``{label: {"eval/<suite>/<metric>": value}}`` in model order.

    Raises:
        EvalError: a bad model path, data file or judge, naming it.
    """
    from mplus.eval.config import check_local_paths

    t0 = time.time()
    # Cheap checks first (no torch yet): local files, model paths.
    check_local_paths(suites_cfg)
    labels = list(labels) if labels else default_labels(specs)
    paths = [resolve_model(s, i) for i, s in enumerate(specs)]
    from mplus.hardware import check_hardware, resolve_attn_implementation

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_hardware(hardware)
    attn, device = resolve_attn_implementation(hardware), device_for(hardware)
    (out_dir / "models.json").write_text(
        json.dumps(dict(zip(labels, paths, strict=True)), indent=2)
    )
    suites = build_suites(suites_cfg, out_dir=out_dir, device=device, attn=attn)
    for suite in suites:
        suite.check()

    for i, (label, path) in enumerate(zip(labels, paths, strict=True)):
        log.info("[%d/%d] %s: loading %s", i + 1, len(paths), label, path)
        model, tok = load_lm(
            path,
            dtype=dtype,
            attn=attn,
            device=device,
            trust_remote_code=trust_remote_code,
            revision=revision,
            what=f"models[{i}]",
        )
        for suite in suites:
            ts = time.time()
            log.info("[%d/%d] %s: %s suite", i + 1, len(paths), label, suite.name)
            suite.run_model(label, model, tok)
            log.info(
                "[%d/%d] %s: %s suite done (%.0fs)",
                i + 1,
                len(paths),
                label,
                suite.name,
                time.time() - ts,
            )
        del model, tok
        free()

    results: dict[str, dict] = {label: {} for label in labels}
    for suite in suites:
        ts = time.time()
        for label, metrics in suite.finish(labels).items():
            results[label].update(metrics)
        log.info("%s suite scored (%.0fs)", suite.name, time.time() - ts)
    write_outputs(results, out_dir, [s.name for s in suites])
    log.info("evaluation done in %.0fs", time.time() - t0)
    return results


def write_outputs(results: dict[str, dict], out_dir: Path, suite_order: list[str]) -> str:
    """``summary.json``, TensorBoard scalars per model, and the printed table (returned)."""
    (out_dir / "summary.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    from torch.utils.tensorboard import SummaryWriter

    for label, metrics in results.items():
        writer = SummaryWriter(log_dir=str(out_dir / "tb" / label))
        for k, v in metrics.items():
            if isinstance(v, int | float) and math.isfinite(v):
                writer.add_scalar(k, v, 0)
        writer.close()
    table = format_table(results, suite_order)
    (out_dir / "table.txt").write_text(table + "\n")
    print(table, flush=True)
    print(f"wrote: {out_dir / 'summary.json'}\nwrote: {out_dir / 'tb'}", flush=True)
    return table


def format_table(results: dict[str, dict], suite_order: list[str]) -> str:
    """One row per metric, one column per model. Per-task detail metrics
    (``eval/general/<task>/<metric>``) stay in summary.json."""
    from mplus.tables import format_table as text_table

    labels = list(results)
    keys = sorted({k for m in results.values() for k in m})
    order = {s: i for i, s in enumerate(suite_order)}
    keys = [k for k in keys if not (k.startswith("eval/general/") and k.count("/") >= 3)]
    keys.sort(key=lambda k: (order.get(k.split("/")[1], 99), k))
    rows = [[k, *[results[lab].get(k) for lab in labels]] for k in keys]
    return text_table(["metric", *labels], rows, digits=4, left=1)


def run_eval(cfg) -> dict[str, dict]:
    """``python -m mplus.eval``: the typed :class:`EvalRunConfig` -> results (see above)."""
    return evaluate_models(
        cfg.models,
        cfg.labels,
        cfg.eval,
        cfg.hardware,
        out_dir=Path(cfg.run_dir),
        dtype=cfg.dtype,
        trust_remote_code=cfg.trust_remote_code,
        revision=cfg.revision,
    )


def evaluate_training_run(cfg, base_path: str) -> dict:
    """The suites a training run asks for (``evaluation.suites``) on its ``policy/`` and its base.

    Outputs go to ``<run dir>/eval/``. The harmlessness suite scores with the run's own
    ``reward_model/`` unless ``evaluation.suite.harmlessness.reward_model`` names one.

    Returns:
        ``eval/<suite>/<metric>`` of the policy and ``eval_base/<suite>/<metric>`` of the base,
        to merge into the run's summary.
    """
    from mplus import distributed as D
    from mplus.eval.config import suite_settings

    if not D.is_rank_zero():  # one process evaluates; the exported models are complete files
        return {}
    run_dir = Path(cfg.run_dir)
    if not (run_dir / "policy" / "config.json").exists():
        log.warning(
            "evaluation.suites: algo=%s exported no policy/, nothing to evaluate", cfg.algo.name
        )
        return {}
    suites = suite_settings(cfg.evaluation.suites, cfg.evaluation.suite)
    own_rm = run_dir / "reward_model"
    if suites.harmlessness.reward_model is None and (own_rm / "config.json").exists():
        suites.harmlessness.reward_model = str(own_rm)
    if suites.harmlessness.reward_model is None and "harmlessness" in suites.suites:
        raise EvalError(
            "evaluation.suites has harmlessness but this run has no reward_model/; "
            "set evaluation.suite.harmlessness.reward_model"
        )
    results = evaluate_models(
        [base_path, str(run_dir / "policy")],
        ["base", "policy"],
        suites,
        cfg.hardware,
        out_dir=run_dir / "eval",
        dtype=cfg.model.dtype,
        trust_remote_code=cfg.model.trust_remote_code,
        revision=cfg.model.revision,
    )
    merged = dict(results["policy"])
    merged.update({"eval_base/" + k.split("/", 1)[1]: v for k, v in results["base"].items()})
    return merged
