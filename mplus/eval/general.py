"""``general``: benchmarks through lm-eval-harness (the ``lm-eval`` package), not re-implemented.

The loaded model goes to lm-eval's own Hugging Face class (``HFLM(pretrained=<model object>,
tokenizer=...)``), so the dtype/attention/device settings of ``mplus.eval`` apply and one load
serves every suite. Tasks run through ``lm_eval.simple_evaluate``, one call per few-shot count
(lm-eval takes one ``num_fewshot`` per call). Custom tasks (e.g. local files, offline) are task
YAMLs in lm-eval's own format in ``include_path``; when every requested task is found there,
lm-eval's built-in task index is not even built.

Metrics: ``<task>`` (the task's reported metric, see ``eval.general.metric``), ``average`` over
the tasks, and every metric lm-eval returns as ``<task>/<metric>`` (``<metric>_<filter>`` for
filters other than ``none``), plus ``<task>/n`` (examples).
"""

from __future__ import annotations

import collections
import logging
import math
import time
from pathlib import Path

from mplus.eval.common import EvalError, check_local, effective_limit, write_jsonl
from mplus.eval.config import parse_task_spec

log = logging.getLogger("mplus.eval")

_FALLBACK_METRICS = ("acc_norm,none", "acc,none", "exact_match,strict-match", "exact_match,none")


def primary_metric(task: str, results: dict, wanted: dict[str, str]) -> str | None:
    """The lm-eval result key a task is reported by: configured, else a usual one it has."""
    want = wanted.get(task)
    if want is not None:
        key = want if "," in want else f"{want},none"
        return key if key in results else None
    return next((k for k in _FALLBACK_METRICS if k in results), None)


def flatten_results(task: str, results: dict) -> dict[str, float]:
    """lm-eval's ``{"acc,none": 0.5, "acc_stderr,none": ...}`` -> ``{"<task>/acc": 0.5, ...}``."""
    out = {}
    for key, value in results.items():
        if "," not in key or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        metric, filt = key.split(",", 1)
        name = metric if filt == "none" else f"{metric}_{filt}"
        out[f"{task}/{name}"] = float(value)
    return out


class GeneralSuite:
    name = "general"

    def __init__(self, cfg, *, limit, seed: int, out_dir: Path, device: str, attn: str):
        self.cfg, self.seed, self.out_dir = cfg, seed, out_dir
        self.limit = effective_limit(limit, cfg.limit)
        self.tasks = [parse_task_spec(t) for t in cfg.tasks]
        self.task_manager = None
        self.results: dict[str, dict] = {}

    def check(self) -> None:
        """lm-eval is installed, the include path exists, every task is known (before models)."""
        try:
            from lm_eval.tasks import TaskManager
        except ImportError as e:
            raise EvalError(
                "the general suite needs lm-eval-harness: pip install -e '.[eval]'"
            ) from e
        check_local(self.cfg.include_path, "eval.general.include_path", want="folder")
        if self.cfg.include_path is not None and not Path(self.cfg.include_path).is_dir():
            raise EvalError(f"eval.general.include_path={self.cfg.include_path}: not a folder")
        names = [n for n, _ in self.tasks]
        tm = None
        if self.cfg.include_path is not None:
            tm = TaskManager(include_path=self.cfg.include_path, include_defaults=False)
            if not all(n in tm.all_tasks for n in names):
                tm = None
        if tm is None:
            log.info("general: indexing lm-eval's task library")
            tm = TaskManager(include_path=self.cfg.include_path)
        unknown = [n for n in names if n not in tm.all_tasks]
        if unknown:
            where = f" (nor in {self.cfg.include_path})" if self.cfg.include_path else ""
            raise EvalError(f"eval.general.tasks: unknown lm-eval task(s) {unknown}{where}")
        self.task_manager = tm
        log.info("general: %d lm-eval tasks: %s", len(names), ", ".join(self.cfg.tasks))
        # Prepare the datasets now (cached for the runs): no network or a missing data file
        # fails here, before any model loads.
        try:
            tm.load(names)
        except OSError as e:
            raise _data_error(names, e) from e

    def run_model(self, label: str, model, tok) -> dict:
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        t0 = time.time()
        lm = HFLM(
            pretrained=model,
            tokenizer=tok,
            batch_size=self.cfg.batch_size,
            max_length=self.cfg.max_length,
        )
        by_shots = collections.defaultdict(list)
        for name, shots in self.tasks:
            by_shots[shots].append(name)
        metrics, primaries = {}, []
        for shots, names in by_shots.items():
            log.info(
                "general [%s]: %s (%s-shot)",
                label,
                ", ".join(names),
                "default" if shots is None else shots,
            )
            try:
                out = lm_eval.simple_evaluate(
                    model=lm,
                    tasks=names,
                    num_fewshot=shots,
                    limit=self.limit,
                    task_manager=self.task_manager,
                    bootstrap_iters=self.cfg.bootstrap_iters,
                    log_samples=True,
                    random_seed=self.seed,
                    numpy_random_seed=self.seed,
                    torch_random_seed=self.seed,
                    fewshot_random_seed=self.cfg.fewshot_seed,
                )
            except OSError as e:
                raise _data_error(names, e) from e
            for name in names:
                res = out["results"].get(name) or out.get("groups", {}).get(name)
                if res is None:
                    raise EvalError(f"eval.general: lm-eval returned no result for task {name}")
                metrics.update(
                    {f"eval/general/{k}": v for k, v in flatten_results(name, res).items()}
                )
                key = primary_metric(name, res, self.cfg.metric)
                if key is None:
                    log.warning(
                        "general: task %s has no metric %s (it has %s)",
                        name,
                        self.cfg.metric.get(name),
                        sorted(res),
                    )
                else:
                    metrics[f"eval/general/{name}"] = float(res[key])
                    primaries.append(float(res[key]))
                n = out.get("n-samples", {}).get(name, {})
                if n:
                    metrics[f"eval/general/{name}/n"] = n.get("effective", n.get("original"))
            for task, samples in (out.get("samples") or {}).items():
                write_jsonl(
                    self.out_dir / "general" / label / f"{task}.jsonl",
                    (_jsonable(s) for s in samples),
                )
        metrics["eval/general/average"] = sum(primaries) / len(primaries) if primaries else math.nan
        log.info(
            "general [%s]: done in %.0fs, average %.4f",
            label,
            time.time() - t0,
            metrics["eval/general/average"],
        )
        self.results[label] = metrics
        return metrics

    def finish(self, labels: list[str]) -> dict[str, dict]:
        return {label: self.results[label] for label in labels}


def _data_error(names: list[str], e: OSError) -> EvalError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return EvalError(
        f"eval.general.tasks {names}: cannot load the task data ({type(e).__name__}: {first})"
    )


def _jsonable(obj):
    """lm-eval sample records (numpy numbers, tuples) as plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    if hasattr(obj, "item"):
        try:
            return obj.item()
        except (ValueError, TypeError):
            pass
    return str(obj)
