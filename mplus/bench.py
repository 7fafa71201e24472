"""``python -m mplus.bench``: one fixed workload through the real stages, with throughput.

The workload is that of ``../shared/bench`` (TRL's own trainers side by side with mplus): reward
model and DPO on 16 pairs per step for 32 steps (DPO's reference on the fly), PPO on 16 prompts x
32 new tokens, one epoch of one minibatch, 10 steps; then the rollout engines alone at 16 and 64
prompts. Each stage is a ``python -m mplus.train`` process of its own (its whole wall time is
reported too); throughput is read from its TensorBoard events the way the side-by-side harness
reads it: reward model and DPO from the loss's first to last step (the first step, with its
warm-up, excluded), PPO as the median ``perf/step_s`` of steps 2..N.

By default the embedded default (tiny model, synthetic data, base from ``cache_dir``); with
``--model DIR --hh FILE`` a local model folder and HH-RLHF JSONL file (the harness writes both:
``save_trl_base.py``, ``make_pairs.py``). Numbers are comparable within one machine and one
run: quote ratios. Extra arguments after ``--`` go to every ``mplus.train`` run.

    python -m mplus.bench                                   # rm, dpo, ppo, rollout (hf)
    python -m mplus.bench --stages ppo,rollout --engines hf,vllm
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROLLOUT_PROMPTS = (16, 64)
NEW_TOKENS = 32
COMMON = ["progress_bar=false", "logger.log_every=1"]
RM = ["algo=rm", "algo.batch_size=16", "algo.max_steps=32", "algo.lr=1e-4", "algo.val_every=32"]
RM += ["algo.warmup_ratio=0"]
DPO = ["algo=dpo", "algo.batch_size=16", "algo.max_steps=32", "algo.lr=1e-6", "algo.beta=0.1"]
DPO += ["algo.precompute_ref=false", "algo.val_every=32", "algo.warmup_ratio=0"]
PPO = ["algo=ppo", "algo.steps=10", "algo.rollout_batch_size=16", "algo.minibatch_size=16"]
PPO += ["algo.ppo_epochs=1", f"algo.generation.max_new_tokens={NEW_TOKENS}"]
PPO += ["algo.generation.temperature=0.7", "algo.policy_lr=3e-6", "algo.warmup_steps=0"]


def workload_overrides(model: str | None, hh: str | None) -> list[str]:
    """The model and data overrides: the embedded default, or a local model and HH file."""
    out = []
    if model:
        out += ["model=qwen2.5-0.5b", "model.name=bench", f"model.name_or_path={model}"]
        out += ["model.dtype=float32", "model.hf_config=null", "model.num_parameters=null"]
    if hh:
        out += ["data=hh_rlhf", f"data.files={hh}", "data.val_fraction=0.2"]
        out += ["data.max_length=128"]
    return out


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float, float]]:
    """``(step, wall_time, value)`` of ``tag`` in a run's TensorBoard events, by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = []
    for f in sorted(glob.glob(f"{run_dir}/tb/**/events.out.tfevents.*", recursive=True)):
        ea = EventAccumulator(f, size_guidance={"scalars": 0})
        ea.Reload()
        if tag in ea.Tags().get("scalars", []):
            out += [(e.step, e.wall_time, e.value) for e in ea.Scalars(tag)]
    return sorted(out)


def span_rate(run_dir: Path, tag: str, per_step: float) -> float:
    """Items per second between the first and the last logged step of ``tag``."""
    ev = scalars(run_dir, tag)
    if len(ev) < 2:
        raise RuntimeError(f"{run_dir}: fewer than two {tag} points in TensorBoard")
    (s0, t0, _), (s1, t1, _) = ev[0], ev[-1]
    return (s1 - s0) * per_step / max(t1 - t0, 1e-9)


def steady_median(run_dir: Path, tag: str) -> float:
    """The median of ``tag`` over steps 2..N (the first, with its warm-up, left out)."""
    values = [v for _, _, v in scalars(run_dir, tag)]
    return statistics.median(values[1:] or values)


def train(out: Path, name: str, overrides: list[str]) -> tuple[Path, float]:
    """Runs ``python -m mplus.train`` in its own process; returns its run dir and wall seconds."""
    run_dir = out / name
    cmd = [sys.executable, "-m", "mplus.train", *overrides, f"hydra.run.dir={run_dir}"]
    log = out / f"{name}.log"
    start = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"mplus.bench: {name} failed (exit {rc}); see {log}")
    return run_dir, seconds


def bench_rollout(policy_dir: Path, prompts: list[str], engine: str) -> dict[int, float]:
    """Rollout tokens/s of one engine at each of :data:`ROLLOUT_PROMPTS` prompts (median of 3
    after one warm-up call), sampling at temperature 0.7 from ``policy_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from mplus.rollout import make_engine

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).eval()
    eng = make_engine(
        engine, tok, max_new_tokens=NEW_TOKENS, temperature=0.7, stop_strings=("\n\nHuman:",)
    )
    out = {}
    for n in ROLLOUT_PROMPTS:
        batch = (prompts * (n // max(len(prompts), 1) + 1))[:n]
        eng.generate(model, batch)  # warm-up (vLLM builds its engine on the first call)
        out[n] = statistics.median(eng.generate(model, batch).tokens_per_s for _ in range(3))
    return out


def rollout_prompts(hh: str | None, n: int = 64) -> list[str]:
    """``n`` prompts of the workload: the HH file's (up to the last Assistant turn) or the
    synthetic task's training prompts."""
    if hh:
        from mplus.data.hh.parse import split_prompt_response
        from mplus.data.hh.read import read_jsonl

        return [split_prompt_response(r["chosen"])[0] for r in read_jsonl(hh)[:n]]
    from mplus.data.synthetic import SyntheticTask

    return SyntheticTask().prompts(n)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="python -m mplus.bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "--stages", default="rm,dpo,ppo,rollout", help="comma list of rm,dpo,ppo,rollout"
    )
    p.add_argument("--engines", default="hf", help="rollout engines: hf, vllm (comma list)")
    p.add_argument("--out", default="bench_runs", help="folder for the runs and logs")
    p.add_argument("--model", help="a local model folder (default: the embedded tiny model)")
    p.add_argument("--hh", help="an HH-RLHF JSONL file (default: the synthetic task)")
    a = p.parse_args(argv)
    stages = a.stages.split(",")
    engines = a.engines.split(",")
    bad = sorted(set(stages) - {"rm", "dpo", "ppo", "rollout"} | set(engines) - {"hf", "vllm"})
    if bad:
        p.error(f"unknown stage or engine: {', '.join(bad)}")
    out = Path(a.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    base = [*COMMON, *workload_overrides(a.model, a.hh), *extra]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows, results = [], {}
    rm_dir = out / "rm"
    if "rm" in stages or not (rm_dir / "reward_model" / "config.json").exists():
        rm_dir, wall = train(out, "rm", [*base, *RM])
        rate = span_rate(rm_dir, "rm/train_loss", 16)
        tps = steady_median(rm_dir, "perf/train_tokens_per_s")
        results["rm"] = {"pairs_per_s": rate, "tokens_per_s": tps, "process_s": wall}
        rows.append(("reward model", f"{rate:.1f} pairs/s", f"{tps:.0f}", wall))
    rm_model = rm_dir / "reward_model"
    if "dpo" in stages:
        d, wall = train(out, "dpo", [*base, *DPO, f"evaluation.reward_model={rm_model}"])
        rate = span_rate(d, "dpo/loss", 16)
        tps = steady_median(d, "perf/train_tokens_per_s")
        results["dpo"] = {"pairs_per_s": rate, "tokens_per_s": tps, "process_s": wall}
        rows.append(("DPO", f"{rate:.1f} pairs/s", f"{tps:.0f}", wall))
    ppo_dir = None
    for engine in engines if "ppo" in stages else []:
        ppo = [*PPO, f"algo.reward_model={rm_model}", f"algo.rollout.engine={engine}"]
        ppo_dir, wall = train(out, f"ppo_{engine}", [*base, *ppo])
        step = steady_median(ppo_dir, "perf/step_s")
        train_tps = steady_median(ppo_dir, "perf/train_tokens_per_s")
        roll_tps = steady_median(ppo_dir, "perf/rollout_tokens_per_s")
        results[f"ppo_{engine}"] = {
            "prompts_per_s": 16 / step,
            "step_s": step,
            "rollout_tokens_per_s": roll_tps,
            "train_tokens_per_s": train_tps,
            "process_s": wall,
        }
        tps = f"rollout {roll_tps:.0f} · update {train_tps:.0f}"
        rows.append((f"PPO ({engine})", f"{16 / step:.1f} prompts/s", tps, wall))
    if "rollout" in stages:
        src = ppo_dir or next(iter(sorted(out.glob("ppo_*"))), None)
        if src is None:
            src, _ = train(out, "ppo_hf", [*base, *PPO, f"algo.reward_model={rm_model}"])
        prompts = rollout_prompts(a.hh)
        for engine in engines:
            tps = bench_rollout(src / "policy", prompts, engine)
            results[f"rollout_{engine}"] = {f"tokens_per_s_{n}": v for n, v in tps.items()}
            text = " · ".join(f"{n} prompts {v:.0f}" for n, v in tps.items())
            rows.append((f"rollout alone ({engine})", "", f"{text} tokens/s", None))
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    print(f"{'stage':<24} {'items/s':<18} {'tokens/s':<40} process s")
    for name, items, tokens, wall in rows:
        print(f"{name:<24} {items:<18} {tokens:<40} {'' if wall is None else f'{wall:.1f}'}")
    print(f"wrote {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
