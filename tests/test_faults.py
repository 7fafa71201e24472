"""Runs that survive faults: stop signals, divergence, refused settings, checkpoint files, curves.

End to end through ``python -m mplus.train`` (the slow ones), judged by what a scheduler, a sweep
or a person sees: the exit status, the one line of error, the checkpoint on disk, summary.json and
TensorBoard. The fast ones drive the same callbacks on a toy LightningModule.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.conftest import REPO, read_summary, train_command

# cheap PPO: a given reward model, no held-out evaluation, 16 rollouts per step
PPO_CHEAP = [
    "evaluation.enabled=false",
    "algo.rollout_batch_size=16",
    "algo.generation.max_new_tokens=12",
]
RM_CHEAP = [
    "algo=rm",
    "algo.max_steps=20",
    "algo.val_every=20",
    "algo.batch_size=16",
    "data.num_train_pairs=320",
    "data.num_val_pairs=64",
]


_command = train_command


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _ppo_state(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)


def _nonfinite_tensors(state: dict) -> list[str]:
    """Names of the non-finite float tensors of a checkpoint: weights and optimiser states."""
    bad = [
        k
        for k, v in state["state_dict"].items()
        if v.is_floating_point() and not torch.isfinite(v).all()
    ]
    for i, opt in enumerate(state.get("optimizer_states", [])):
        for p, st in opt["state"].items():
            bad += [
                f"optimizer{i}.{p}.{k}"
                for k, v in st.items()
                if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()
            ]
    return bad


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [
        ln
        for ln in (proc.stdout + proc.stderr).splitlines()
        if "ERROR" in ln or "Error" in ln or "Traceback" in ln
    ]


def _steps_logged(tb_dir: Path, tag: str) -> list[int]:
    """Steps of ``tag`` as TensorBoard shows them: one accumulator over the directory's event
    files in order, so a resumed writer's ``purge_step`` drops what it supersedes. Both of
    TensorBoard's Python loaders (the classic one, and the server's ``--load_fast=false`` one,
    which reads a run's first restart marker as its start) must agree."""
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars(tag)]
    served = plugin_event_accumulator.EventAccumulator(str(tb_dir), size_guidance={"tensors": 0})
    served.Reload()
    assert [e.step for e in served.Tensors(tag)] == steps, tag
    return steps


@pytest.fixture(scope="module")
def reward_model(cache_dir, tmp_path_factory) -> Path:
    """One small exported reward model for the PPO runs here (PPO scores with it)."""
    run_dir = tmp_path_factory.mktemp("faults-rm") / "rm"
    proc = subprocess.run(
        _command(cache_dir, run_dir, *RM_CHEAP),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir / "reward_model"


# ---------------------------------------------------------------- refused at start


def test_temperature_zero_is_refused_for_ppo_at_start(run_train):
    proc, run_dir = run_train(
        "algo.generation.temperature=0", "algo.generation.top_p=0.9", check=False
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = _error_lines(proc)
    assert len(lines) == 1 and "algo.generation.temperature" in lines[0], lines
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "summary.json").exists()  # refused before anything ran


def test_greedy_heldout_evaluation_stays_allowed():
    from hydra import compose, initialize_config_dir

    from mplus.config import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for algo in ("ppo", "dpo", "sft"):
            cfg = validate(
                compose(
                    "train",
                    overrides=[
                        f"algo={algo}",
                        "evaluation.temperature=0",
                        "cache_dir=/nonexistent",
                        "run_dir=.",
                    ],
                )
            )
            assert cfg.evaluation.temperature == 0


# ---------------------------------------------------------------- SIGTERM, and resumed curves


@pytest.mark.slow
def test_sigterm_saves_the_step_exits_nonzero_and_marks_the_summary(
    cache_dir, reward_model, tmp_path
):
    """SIGTERM mid-step: the step finishes, is checkpointed, summary.json says interrupted, the
    exit status is 143 (128 + SIGTERM). Then a resume from an older checkpoint (taken before
    the signal) re-logs steps the interrupted process logged: TensorBoard shows each once."""
    run_dir = tmp_path / "ppo"
    ppo = [
        *PPO_CHEAP,
        f"algo.reward_model={reward_model}",
        "algo.minibatch_size=8",
        "algo.steps=4",
        "algo.ckpt_every=2",
    ]
    last = run_dir / "checkpoints" / "ppo" / "last.ckpt"
    older = last.with_name("step2.ckpt")
    proc = subprocess.Popen(
        _command(cache_dir, run_dir, *ppo),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 900
        while not last.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert last.exists(), "no PPO checkpoint before the run ended"
        shutil.copy(last, older)  # step 2: written atomically (rename), so complete
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert _ppo_state(older)["mplus_ppo"]["ppo_step"] == 2

    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    saved = _ppo_state(last)
    step = saved["mplus_ppo"]["ppo_step"]
    assert step >= 3, f"the step running at the signal was not saved (checkpoint at {step})"
    assert not _nonfinite_tensors(saved)
    s = read_summary(run_dir)
    assert s["status"] == "interrupted" and s["status/signal"] == "SIGTERM", s
    assert s["status/stage"] == "ppo" and s["status/step"] == step, s
    assert s["status/checkpoint"] == str(last)
    assert "time/total_s" not in s and not (run_dir / "policy").exists()  # not a finished run
    # everything logged is saved
    assert max(_steps_logged(run_dir / "tb" / "ppo", "rl/kl")) == step

    # resume from step 2: steps 3.. are logged again by the resumed process, shown once
    done = subprocess.run(
        _command(cache_dir, run_dir, *ppo, f"ckpt_path={older}"),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    s = read_summary(run_dir)
    assert s["rl/steps"] == 4 and "status" not in s, s
    for tag in ("rl/kl", "rl/reward_mean", "perf/step_s"):
        steps = _steps_logged(run_dir / "tb" / "ppo", tag)
        twice = [k for k, n in collections.Counter(steps).items() if n > 1]
        assert not twice and sorted(steps) == [1, 2, 3, 4], (tag, steps)


# ---------------------------------------------------------------- divergence


@pytest.mark.slow
def test_ppo_divergence_stops_with_one_line_and_keeps_the_finite_checkpoint(
    cache_dir, reward_model, tmp_path
):
    """policy_lr=1e6, one minibatch per step: PPO step 1's update blows the weights up (finite,
    ~1e5), step 2's gradients are NaN with a finite loss. Unguarded, step 2's optimiser step made
    the weights NaN, they were checkpointed and step 3's rollout died in torch.multinomial."""
    run_dir = tmp_path / "ppo"
    ppo = [
        *PPO_CHEAP,
        f"algo.reward_model={reward_model}",
        "algo.minibatch_size=16",
        "algo.ppo_epochs=1",
        "algo.steps=4",
        "algo.ckpt_every=1",
        "algo.policy_lr=1e6",
    ]
    proc = subprocess.run(
        _command(cache_dir, run_dir, *ppo),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    lines = _error_lines(proc)
    assert len(lines) == 1 and "TrainingDiverged" in lines[0], lines
    m = re.search(r"non-finite .* in PPO step (\d+)", lines[0])
    assert m, lines[0]
    failed = int(m.group(1))

    ckpt = run_dir / "checkpoints" / "ppo" / "last.ckpt"
    assert ckpt.exists(), f"no checkpoint before the divergence at step {failed}: {lines[0]}"
    state = _ppo_state(ckpt)
    assert state["mplus_ppo"]["ppo_step"] == failed - 1, lines[0]
    assert not _nonfinite_tensors(state)
    assert f"after PPO step {failed - 1}" in lines[0] and str(ckpt) in lines[0]
    s = read_summary(run_dir)
    assert s["status"] == "diverged" and s["status/step"] == failed, s
    assert not (run_dir / "policy").exists()

    # resumable: it loads and the stage completes from it (here: ends at its step, exports)
    done = subprocess.run(
        _command(cache_dir, run_dir, *ppo, f"algo.steps={failed - 1}", f"ckpt_path={ckpt}"),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert read_summary(run_dir)["rl/steps"] == failed - 1
    from safetensors.torch import load_file

    weights = load_file(run_dir / "policy" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


class _Toy(L.LightningModule):
    """``w`` trains on ``(w - 1)^2``; from global step ``nan_at`` on, a term with a finite
    value (0) but a NaN gradient (sqrt at 0) joins the loss."""

    def __init__(self, nan_at: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))
        self.nan_at = nan_at

    def training_step(self, batch, batch_idx):
        loss = ((self.w - 1) ** 2).sum()
        if self.global_step >= self.nan_at:
            loss = loss + (self.w * 0).sqrt().sum()  # value 0, gradient 0 * inf = NaN
        assert torch.isfinite(loss)  # the loss check alone would not stop it
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _toy_fit(tmp_path: Path, nan_at: int, summary=None):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mplus.modules.signals import AtomicCheckpointIO, fault_callbacks

    trainer = L.Trainer(
        max_steps=10,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            *fault_callbacks("rm", summary),
            ModelCheckpoint(
                dirpath=tmp_path / "checkpoints" / "rm", save_last=True, every_n_train_steps=2
            ),
        ],
    )
    module = _Toy(nan_at)
    data = torch.utils.data.DataLoader(torch.zeros(64, 1), batch_size=1)
    return trainer, module, data


def test_lightning_stage_stops_before_a_nan_gradient_reaches_the_weights(tmp_path):
    from mplus.modules.optim import TrainingDiverged
    from mplus.rundir import Summary

    summary = Summary(tmp_path / "summary.json")
    trainer, module, data = _toy_fit(tmp_path, nan_at=5, summary=summary)
    with pytest.raises(
        TrainingDiverged,
        match=r"rm: the gradients are non-finite .* at global "
        r"step 5: stopped before the optimiser step",
    ):
        trainer.fit(module, data)
    assert trainer.global_step == 5 and torch.isfinite(module.w).all()
    last = torch.load(tmp_path / "checkpoints" / "rm" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 4 and torch.isfinite(last["state_dict"]["w"]).all()
    s = json.loads(summary.path.read_text())
    assert s["status"] == "diverged" and s["status/step"] == 5


def test_non_finite_weights_are_never_written_to_a_checkpoint(tmp_path):
    from mplus.modules.optim import TrainingDiverged

    trainer, module, data = _toy_fit(tmp_path, nan_at=10**9)
    trainer.fit(module, data)
    last = tmp_path / "checkpoints" / "rm" / "last.ckpt"
    before = last.read_bytes()
    with torch.no_grad():
        module.w[0] = float("nan")
    with pytest.raises(TrainingDiverged, match="not writing that checkpoint"):
        trainer.save_checkpoint(last)
    assert last.read_bytes() == before


# ---------------------------------------------------------------- checkpoint files


def test_checkpoint_temp_file_is_beside_the_target_not_in_tmpdir(tmp_path, monkeypatch):
    import tempfile

    from mplus.modules.signals import AtomicCheckpointIO

    tmpdir = tmp_path / "TMPDIR"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    target = tmp_path / "ckpt" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, target)
    assert torch.load(target)["step"] == 1

    real_save, seen = torch.save, []

    def killed_mid_write(obj, f, *a, **k):  # a kill: half the bytes, then gone
        seen.append(Path(f.name))
        f.write(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert seen[0].parent == target.parent  # the temp file was beside the target
    assert torch.load(target)["step"] == 1  # the old checkpoint is whole
    assert list(tmpdir.iterdir()) == [] and sorted(p.name for p in target.parent.iterdir()) == [
        "last.ckpt"
    ]

    # what a SIGKILL leaves (no cleanup ran): removed by the next save
    stale = target.with_name("last.ckpt.tmp-999999999")
    stale.write_bytes(b"\0" * 100)
    io.save_checkpoint({"step": 3}, target)
    assert not stale.exists() and torch.load(target)["step"] == 3


# ---------------------------------------------------------------- signal handlers


@pytest.mark.parametrize("slurm", [False, True])
def test_sigusr1_is_a_graceful_stop_unless_slurm_requeue_owns_it(tmp_path, monkeypatch, slurm):
    """Under SLURM with auto-requeue Lightning's SIGUSR1 handler (hpc checkpoint + requeue)
    stays; elsewhere SIGUSR1, like SIGINT, stops at the end of the step. Both are given back
    when the fit ends."""
    for k in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(k)
    if slurm:
        for k, v in dict(
            SLURM_NTASKS="1",
            SLURM_NTASKS_PER_NODE="1",
            SLURM_PROCID="0",
            SLURM_LOCALID="0",
            SLURM_NODEID="0",
            SLURM_JOB_ID="1",
            SLURM_JOB_NAME="train",
            SLURM_NODELIST="localhost",
        ).items():
            monkeypatch.setenv(k, v)
    from mplus.modules.signals import StopOnSignal

    seen = {}

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["usr1"] = signal.getsignal(signal.SIGUSR1)
            seen["int"] = signal.getsignal(signal.SIGINT)
            trainer.should_stop = True

    before = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGINT)
    trainer, module, data = _toy_fit(tmp_path, nan_at=10**9)
    trainer.callbacks.append(Probe())
    trainer.fit(module, data)
    ours = getattr(seen["usr1"], "__qualname__", "").startswith(StopOnSignal.__name__)
    assert ours != slurm, seen["usr1"]
    assert getattr(seen["int"], "__qualname__", "").startswith(StopOnSignal.__name__)
    assert (signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGINT)) == before
