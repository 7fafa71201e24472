"""Runs that survive faults, through ``python -m mplus.train``.

A run is killed (SIGKILL, no chance to clean up) at a random point after one of its checkpoints,
then resumed with the one resume command, ``ckpt_path=last`` in the same ``hydra.run.dir``. The
resumed run must log exactly what the same run logs uninterrupted: every TensorBoard scalar at
every step (timings aside), and the same ``summary.json`` (times aside). And a run's numbers do
not depend on whether the cache already held the base.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, TEST_MODEL, read_summary, train_command

# TensorBoard stores float32; two processes doing the same float32 work on the same machine agree
# to the bit, so the tolerance only absorbs the float32 rounding of a value logged as float64.
REL_TOL, ABS_TOL = 1e-6, 1e-7
# wall-clock numbers: they differ between any two runs
TIMING_TAGS = ("perf/", "time/", "final/time/")

# an RM epoch is 10 batches (160 pairs / 16) and a checkpoint comes every 5 steps, so checkpoints
# fall both mid-epoch (5, 15) and on an epoch's last batch (10, 20)
RM = [
    "algo=rm",
    "algo.max_steps=25",
    "algo.val_every=5",
    "algo.batch_size=16",
    "data.num_train_pairs=160",
    "data.num_val_pairs=64",
    "logger.log_every=1",
]
DPO = [
    "algo=dpo",
    "algo.max_steps=25",
    "algo.val_every=5",
    "algo.batch_size=16",
    "data.num_train_pairs=160",
    "data.num_val_pairs=64",
    "data.num_eval_prompts=8",
    "evaluation.probe_docs=16",
    "evaluation.max_new_tokens=8",
    "logger.log_every=1",
]
# base -> RM (checkpoints at 5, 10, 15, 20) -> PPO (checkpoints at PPO steps 2, 4, 6)
PPO = [
    "algo.rm.max_steps=20",
    "algo.rm.val_every=5",
    "algo.rm.batch_size=16",
    "data.num_train_pairs=160",
    "data.num_val_pairs=64",
    "algo.steps=6",
    "algo.ckpt_every=2",
    "algo.rollout_batch_size=8",
    "algo.minibatch_size=8",
    "algo.generation.max_new_tokens=8",
    "data.num_eval_prompts=8",
    "evaluation.probe_docs=16",
    "evaluation.max_new_tokens=8",
    "logger.log_every=1",
]


# ---------------------------------------------------------------- running and killing


_command = train_command


def _run(cache_dir: Path, run_dir: Path, *overrides: str, model=TEST_MODEL) -> None:
    cmd = _command(cache_dir, run_dir, *overrides, model=model)
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-5000:]}"


def _saved_step(ckpt: Path) -> int:
    """The step a checkpoint holds: Lightning's global step, an RL stage's own step counter
    (``mplus_<algo>``) for RL."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    rl = [k for k in state if k.startswith("mplus_") and k != "mplus_rng"]
    return state[rl[0]]["ppo_step"] if rl else state["global_step"]


def _checkpointed(ckpt: Path, step: int):
    """``ready()`` for :func:`_kill_when`: ``ckpt`` (a ``last.ckpt``, rewritten atomically at
    every checkpoint) holds ``step`` or later. Read again only when its mtime changes."""
    seen = {"mtime": None, "step": -1}

    def ready() -> bool:
        try:
            mtime = ckpt.stat().st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime != seen["mtime"]:
            seen["mtime"], seen["step"] = mtime, _saved_step(ckpt)
        return seen["step"] >= step

    return ready


def _kill_when(
    cache_dir: Path,
    run_dir: Path,
    overrides: list[str],
    ready,
    what: str,
    rng: random.Random,
    *,
    not_yet: Path,
    max_delay: float = 1.5,
) -> str:
    """Start a run, wait until ``ready()`` (a checkpoint has appeared), wait a random while more,
    then SIGKILL the run's whole process group. Fails if the run ended first or had already
    written ``not_yet`` (the kill came too late for what the test means to break). Returns what
    happened, for assertion messages."""
    proc = subprocess.Popen(
        _command(cache_dir, run_dir, *overrides),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    delay = rng.uniform(0.0, max_delay)
    try:
        deadline = time.time() + 900
        while not ready() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        seen = ready()
        time.sleep(delay)
        alive = proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    what = f"killed {delay:.2f}s after {what}"
    assert seen, f"{what}: it never came"
    assert alive, f"{what}: the run had already ended (exit {proc.returncode})"
    assert not not_yet.exists(), f"{what}: too late, {not_yet} exists"
    return what


# ---------------------------------------------------------------- comparing runs


def logged_scalars(tb_dir: Path) -> tuple[dict[str, dict[int, float]], dict[str, Counter]]:
    """Every scalar of a run dir's TensorBoard logs as ``tag -> {step: value}``, and how many
    times each step was logged (``tag -> Counter(step)``; Lightning logs ``epoch`` with the
    training and again with the validation metrics of a step).

    One accumulator per TensorBoard run (``tb/`` and each stage's ``tb/<stage>``), its files in
    order, so a resumed stage's ``purge_step`` (its writer's restart marker) drops what the
    killed process logged past the checkpoint. Tags are keyed ``<run>:<tag>`` (Lightning's
    ``epoch`` is in every stage's run)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, dict[int, float]] = {}
    counts: dict[str, Counter] = {}
    runs = sorted({f.parent for f in tb_dir.rglob("events.out.tfevents.*")})
    for run in runs:
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
        acc.Reload()
        name = run.relative_to(tb_dir).as_posix()
        for tag in acc.Tags()["scalars"]:
            if tag.startswith(TIMING_TAGS):
                continue
            events = acc.Scalars(tag)
            values[f"{name}:{tag}"] = {e.step: e.value for e in events}
            counts[f"{name}:{tag}"] = Counter(e.step for e in events)
    return values, counts


def _purge_note(tb_dir: Path) -> str:
    """The restart markers (``purge_step``) in a run's event files, which make TensorBoard drop
    every scalar written before them at or after their step, whatever its tag or stage."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto import event_pb2

    marks = [
        (f.relative_to(tb_dir).as_posix(), e.step)
        for f in sorted(tb_dir.rglob("events.out.tfevents.*"))
        for e in EventFileLoader(str(f)).Load()
        if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START
    ]
    return f"; TensorBoard restart markers (file, purge step): {marks}" if marks else ""


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def assert_same_run(resumed: Path, uninterrupted: Path, what: str) -> None:
    """Same scalars at the same steps, same summary.json; timings aside."""
    got, got_n = logged_scalars(resumed / "tb")
    want, want_n = logged_scalars(uninterrupted / "tb")
    assert sorted(got) == sorted(want), f"{what}: tags differ"
    twice = {tag: sorted((got_n[tag] - want_n[tag]).elements()) for tag in want}
    twice = {tag: steps for tag, steps in twice.items() if steps}
    assert not twice, f"{what}: steps shown twice after the resume: {twice}" + _purge_note(
        resumed / "tb"
    )
    for tag in want:
        missing, extra = (
            sorted(set(want[tag]) - set(got[tag])),
            sorted(set(got[tag]) - set(want[tag])),
        )
        assert not missing and not extra, (
            f"{what}: {tag} lacks steps {missing} and has extra steps {extra}"
            + _purge_note(resumed / "tb")
        )
        bad = [
            (s, got[tag][s], v) for s, v in sorted(want[tag].items()) if not _close(got[tag][s], v)
        ]
        assert not bad, f"{what}: {tag} differs at (step, resumed, uninterrupted) {bad[:5]}"
    s_got, s_want = read_summary(resumed), read_summary(uninterrupted)
    untimed = {k for k in s_want if not k.startswith("time/")}
    assert untimed == {k for k in s_got if not k.startswith("time/")}, what
    bad = {
        k: (s_got[k], s_want[k])
        for k in sorted(untimed)
        if s_got[k] != s_want[k]
        and not (isinstance(s_want[k], float) and _close(s_got[k], s_want[k]))
    }
    assert not bad, f"{what}: summary differs (resumed, uninterrupted): {bad}"


@pytest.fixture
def rng(request) -> random.Random:
    """The kill points are random; the seed is printed so a failure can be replayed
    (MPLUS_KILL_SEED=<seed>)."""
    seed = int(os.environ.get("MPLUS_KILL_SEED", random.randrange(2**31)))
    print(f"kill-point seed for {request.node.name}: MPLUS_KILL_SEED={seed}")
    return random.Random(seed)


# ---------------------------------------------------------------- in-process pieces


def test_a_resumed_loader_continues_at_the_batch_it_stopped_at():
    from mplus.data.collate import LengthGroupedBatchSampler, ResumableDataLoader

    lengths = [i % 7 + 1 for i in range(50)]

    def loader():
        return ResumableDataLoader(
            list(range(50)), LengthGroupedBatchSampler(lengths, 8, seed=1), collate_fn=lambda b: b
        )

    one = loader()
    epochs = [list(one) for _ in range(3)]  # 7 batches an epoch, reshuffled each epoch
    assert len(epochs[0]) == 7 and epochs[0] != epochs[1] != epochs[2]
    for epoch, served in [(0, 0), (0, 3), (1, 6), (0, 7)]:  # 7: saved after an epoch's end
        run = loader()
        for _ in range(epoch):
            list(run)
        it = iter(run)
        for _ in range(served):
            next(it)
        state = run.state_dict()
        assert state == {"epoch": epoch, "batches": served}
        resumed = loader()
        resumed.load_state_dict(state)
        # the rest of that epoch (empty after its last batch), then the next epochs as before
        assert list(resumed) == epochs[epoch][served:]
        assert list(resumed) == epochs[epoch + 1]


def test_stage_seeds_are_stable_and_distinct():
    from mplus.stages.resume import stage_seed

    seeds = {stage: stage_seed(0, stage) for stage in ("rm", "ppo", "dpo", "sft", "none")}
    assert len(set(seeds.values())) == 5 and stage_seed(1, "rm") != seeds["rm"]
    assert seeds["rm"] == stage_seed(0, "rm")  # sha256: the same in every process
    assert all(0 <= s < 2**31 for s in seeds.values())


def test_which_checkpoint_each_stage_resumes_from(tmp_path):
    from types import SimpleNamespace

    from mplus.stages.resume import stage_checkpoint

    def cfg(ckpt_path, algo="ppo"):
        return SimpleNamespace(
            ckpt_path=ckpt_path, run_dir=str(tmp_path), algo=SimpleNamespace(name=algo)
        )

    rm_last = tmp_path / "checkpoints" / "rm" / "last.ckpt"
    rm_last.parent.mkdir(parents=True)
    rm_last.write_bytes(b"")
    # ckpt_path=last: each stage its own last.ckpt, where there is one
    assert stage_checkpoint(cfg("last"), "rm") == str(rm_last)
    assert stage_checkpoint(cfg("last"), "ppo") is None
    assert stage_checkpoint(cfg(None), "rm") is None
    # an explicit file: the stage whose checkpoints/ folder holds it, else the run's last stage
    assert stage_checkpoint(cfg(str(rm_last)), "rm") == str(rm_last)
    assert stage_checkpoint(cfg(str(rm_last)), "ppo") is None
    other = str(tmp_path / "elsewhere.ckpt")
    assert stage_checkpoint(cfg(other), "ppo") == other
    assert stage_checkpoint(cfg(other), "rm") is None
    assert stage_checkpoint(cfg(other, algo="rm"), "rm") == other


# ---------------------------------------------------------------- kill -9, then resume


def _kill_and_resume(
    cache_dir,
    tmp_path,
    overrides,
    stage: str,
    final_step: int,
    rng: random.Random,
    kill_after: list[int],
    max_delay: float = 1.5,
) -> tuple[Path, str]:
    """Kill a run at a random point after one of the checkpoints ``kill_after`` of ``stage``
    (chosen at random), resume it with ``ckpt_path=last``; return the run dir and what
    happened. The choices leave the run more than ``max_delay`` seconds of work after them."""
    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / stage / "last.ckpt"
    at = rng.choice(kill_after)
    what = _kill_when(
        cache_dir,
        run_dir,
        overrides,
        _checkpointed(last, at),
        f"{stage} step {at} was checkpointed",
        rng,
        not_yet=run_dir / ("reward_model" if stage == "rm" else "policy"),
        max_delay=max_delay,
    )
    saved = _saved_step(last)
    what += f", last.ckpt at step {saved}"
    assert at <= saved < final_step, what
    _run(cache_dir, run_dir, *overrides, "ckpt_path=last")
    return run_dir, what


@pytest.mark.slow
def test_reward_model_killed_and_resumed_reproduces_the_uninterrupted_run(cache_dir, tmp_path, rng):
    _run(cache_dir, tmp_path / "uninterrupted", *RM)
    run_dir, what = _kill_and_resume(cache_dir, tmp_path, RM, "rm", 25, rng, [5, 10, 15])
    assert read_summary(run_dir)["rm/steps"] == 25
    assert_same_run(run_dir, tmp_path / "uninterrupted", what)


@pytest.mark.slow
def test_dpo_killed_and_resumed_reproduces_the_uninterrupted_run(cache_dir, tmp_path, rng):
    _run(cache_dir, tmp_path / "uninterrupted", *DPO)
    run_dir, what = _kill_and_resume(cache_dir, tmp_path, DPO, "dpo", 25, rng, [5, 10, 15])
    assert read_summary(run_dir)["dpo/steps"] == 25
    assert_same_run(run_dir, tmp_path / "uninterrupted", what)


@pytest.fixture(scope="module")
def ppo_uninterrupted(cache_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ppo") / "uninterrupted"
    _run(cache_dir, run_dir, *PPO)
    return run_dir


@pytest.mark.slow
def test_ppo_run_killed_in_its_reward_model_stage_resumes_with_one_command(
    cache_dir, tmp_path, ppo_uninterrupted, rng
):
    run_dir, what = _kill_and_resume(cache_dir, tmp_path, PPO, "rm", 20, rng, [5, 10])
    s = read_summary(run_dir)
    assert s["rm/steps"] == 20 and s["rl/steps"] == 6
    assert_same_run(run_dir, ppo_uninterrupted, what)


@pytest.mark.slow
def test_ppo_run_killed_in_its_ppo_stage_resumes_with_one_command(
    cache_dir, tmp_path, ppo_uninterrupted, rng
):
    # PPO checkpoints every 2 of its 6 steps, all into last.ckpt; a PPO step takes seconds
    run_dir, what = _kill_and_resume(cache_dir, tmp_path, PPO, "ppo", 6, rng, [2, 4], max_delay=1.0)
    assert (run_dir / "reward_model" / "reward_stats.json").exists(), what
    assert read_summary(run_dir)["rl/steps"] == 6
    assert_same_run(run_dir, ppo_uninterrupted, what)


@pytest.mark.slow
def test_grpo_run_killed_in_its_grpo_stage_resumes_with_one_command(cache_dir, tmp_path, rng):
    """Critic-free: the checkpoint holds the policy and its one optimiser only; groups of
    samples per prompt come back the same after the resume."""
    grpo = [*PPO, "algo=grpo", "algo.samples_per_prompt=4"]
    _run(cache_dir, tmp_path / "uninterrupted", *grpo)
    run_dir, what = _kill_and_resume(cache_dir, tmp_path, grpo, "grpo", 6, rng, [2], max_delay=0.5)
    assert read_summary(run_dir)["rl/steps"] == 6
    assert_same_run(run_dir, tmp_path / "uninterrupted", what)


@pytest.mark.slow
def test_constrained_ppo_killed_and_resumed_restores_its_lagrange_multiplier(
    cache_dir, tmp_path, rng
):
    """Two reward models trained in the run (one per data subset) and the safety constraint:
    the multiplier and its window of costs come back from the checkpoint, so the resumed run's
    rl/lagrange_lambda curve (and everything else) is the uninterrupted run's."""
    safe = [
        *PPO,
        "algo/rewards=two_heads",
        "algo.constraint.enabled=true",
        "algo.constraint.lambda_lr=0.5",
        "algo.constraint.window=16",
    ]
    _run(cache_dir, tmp_path / "uninterrupted", *safe)
    run_dir, what = _kill_and_resume(
        cache_dir, tmp_path, safe, "ppo", 6, rng, [2, 4], max_delay=1.0
    )
    for name in ("harmless", "helpful"):
        assert (run_dir / "reward_models" / name / "reward_stats.json").exists(), what
    scalars, _ = logged_scalars(run_dir / "tb")
    lam = next(v for k, v in scalars.items() if k.endswith(":rl/lagrange_lambda"))
    assert sorted(lam) == [1, 2, 3, 4, 5, 6], what
    assert len({round(v, 6) for v in lam.values()}) > 1, f"{what}: lambda never moved: {lam}"
    assert_same_run(run_dir, tmp_path / "uninterrupted", what)


# ---------------------------------------------------------------- cold cache vs warm cache

# a base that pretrains in seconds (its own cache key), and a cheap base -> RM -> PPO run
SMALL_BASE = ["model.pretrain.steps=8", "model.pretrain.corpus_docs=1000"]
CHEAP_RUN = [
    "algo.rm.max_steps=6",
    "algo.rm.val_every=3",
    "algo.rm.batch_size=16",
    "data.num_train_pairs=96",
    "data.num_val_pairs=32",
    "algo.steps=2",
    "algo.rollout_batch_size=8",
    "algo.minibatch_size=8",
    "algo.generation.max_new_tokens=8",
    "data.num_eval_prompts=8",
    "evaluation.probe_docs=16",
    "evaluation.max_new_tokens=8",
]


@pytest.mark.slow
def test_a_cold_cache_gives_the_numbers_of_a_warm_one(tmp_path):
    cache = tmp_path / "cache"
    cold, warm = tmp_path / "cold", tmp_path / "warm"
    _run(cache, cold, *CHEAP_RUN, model=SMALL_BASE)  # pretrains the base into the empty cache
    assert len(list((cache / "tiny-base").glob("*/base_info.json"))) == 1
    _run(cache, warm, *CHEAP_RUN, model=SMALL_BASE)  # finds it there
    assert "Pretraining the tiny base" in (cold / "train.log").read_text()
    assert "Pretraining the tiny base" not in (warm / "train.log").read_text()
    assert_same_run(warm, cold, "warm cache vs cold cache")
