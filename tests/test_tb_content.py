"""What a short run leaves in TensorBoard (text samples, the HParams record) and in the other
loggers (``logger=csv|wandb|mlflow``: the same metric names; a missing package fails at start)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, read_scalars, train_command

SHORT = [
    "algo.rm.max_steps=10",
    "algo.rm.val_every=10",
    "algo.rollout_batch_size=8",
    "algo.minibatch_size=8",
    "data.num_train_pairs=256",
    "data.num_val_pairs=64",
    "data.num_eval_prompts=8",
    "evaluation.probe_docs=8",
]
RM_SHORT = ["algo=rm", "algo.max_steps=10", "algo.val_every=10", *SHORT[4:]]


def _train(cache_dir: Path, run_dir: Path, *overrides: str, env: dict | None = None) -> Path:
    cmd = train_command(cache_dir, run_dir, *overrides)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return run_dir


@pytest.fixture(scope="module")
def rl_run(cache_dir, tmp_path_factory) -> Path:
    """One 3-step RL run (RM stage, then PPO) with ``logger=csv``."""
    run_dir = tmp_path_factory.mktemp("tb-content") / "run"
    return _train(cache_dir, run_dir, "algo.steps=3", *SHORT, "logger=csv")


def _events(tb_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for f in sorted(tb_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"tensors": 0})
        acc.Reload()
        yield acc


def _texts(tb_dir: Path, tag: str) -> dict[int, str]:
    from tensorboard.util import tensor_util

    out = {}
    for acc in _events(tb_dir):
        # torch's add_text(tag) writes the text plugin's tensor "<tag>/text_summary"
        for name in {tag, f"{tag}/text_summary"} & set(acc.Tags()["tensors"]):
            for e in acc.Tensors(name):
                out[e.step] = tensor_util.make_ndarray(e.tensor_proto).item().decode()
    return out


@pytest.mark.slow  # a 3-step RL run through a subprocess (~20 s)
def test_rl_samples_first_and_last_step_whole_turns(rl_run):
    texts = _texts(rl_run / "tb", "rl/samples")
    assert sorted(texts) == [1, 3]  # sample_every (default 10) alone would log none
    for table in texts.values():
        lines = table.splitlines()
        assert lines[0] == "| prompt (last human turn) | response | RM | gold |"
        rows = lines[2:]
        assert rows
        for row in rows:
            assert "\\n" not in row and "Human:" not in row and "Assistant:" not in row
            cells = [c.strip() for c in row.strip("|").split(" | ")]
            assert len(cells) == 4, row
            float(cells[2]), float(cells[3])  # the RM and gold scores
            # the whole last human turn: a question/request, not a left cut mid-word
            assert cells[0][0].isupper(), cells[0]


@pytest.mark.slow  # a 3-step RL run through a subprocess (~20 s)
def test_hparams_hold_the_flattened_config(rl_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    hp = {}
    for acc in _events(rl_run / "tb"):
        try:
            contents = acc.PluginTagToContent("hparams").values()
        except KeyError:  # an event file without the record (the stages' curves)
            continue
        for content in contents:
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                hp.update(data.session_start_info.hparams)
    assert {"algo", "algo.kl.coef", "algo.rm.max_steps", "data.num_train_pairs", "seed"} <= set(hp)
    assert hp["algo.rm.max_steps"].number_value == 10
    assert hp["logger.name"].string_value == "csv"
    assert all(not k.startswith("hydra") for k in hp)


def _csv_names(path: Path) -> set[str]:
    with path.open() as f:
        header = next(csv.reader(f))
    return set(header) - {"step", "epoch"}


@pytest.mark.slow  # a 3-step RL run through a subprocess (~20 s)
def test_csv_logger_has_tensorboards_metric_names(rl_run):
    tb = set(read_scalars(rl_run / "tb"))
    rl = _csv_names(rl_run / "csv" / "ppo" / "metrics.csv")
    rm = _csv_names(rl_run / "csv" / "rm" / "metrics.csv")
    assert {"rl/kl", "rl/reward_mean", "rl/gold_reward_mean", "heldout/gold_reward"} <= rl
    assert "rm/val_accuracy" in rm
    assert rl | rm <= tb  # the same names as TensorBoard's (which also has final/* and hp)
    assert {k for k in tb if k.startswith(("rl/", "rm/"))} <= rl | rm


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_missing_logger_package_fails_at_start(name, cache_dir, tmp_path):
    code = (
        f"import runpy, sys; sys.modules[{name!r}] = None; "
        "runpy.run_module('mplus.train', run_name='__main__')"
    )
    cmd = [sys.executable, "-c", code, *train_command(cache_dir, tmp_path / "run")[3:]]
    cmd += [f"logger={name}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    err = [ln for ln in out.splitlines() if ln.strip()]
    assert len(err) == 1 and f"pip install -e '.[{name}]'" in err[0], out[-2000:]
    assert f"logger={name} needs the {name} package" in err[0]


def test_wandb_logger_offline(cache_dir, tmp_path):
    pytest.importorskip("wandb", reason="wandb not installed (pip install -e '.[wandb]')")
    run_dir = _train(cache_dir, tmp_path / "run", *RM_SHORT, "logger=wandb")
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    (record,) = runs[0].glob("*.wandb") if len(runs) == 1 else ((),)
    # the offline run's record log (protobuf records keep their keys as plain UTF-8): every
    # metric TensorBoard has for the stage, under the same name
    data = record.read_bytes()
    tags = {t for t in read_scalars(run_dir / "tb") if t.startswith("rm/")}
    assert "rm/val_accuracy" in tags  # TensorBoard is written too
    assert [t for t in sorted(tags) if t.encode() not in data] == []


def test_mlflow_logger_local_store(cache_dir, tmp_path):
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install -e '.[mlflow]')")
    run_dir = _train(cache_dir, tmp_path / "run", *RM_SHORT, "logger=mlflow")
    metrics = {p.name for p in (run_dir / "mlruns").rglob("metrics/*/*")} | {
        p.name for p in (run_dir / "mlruns").rglob("metrics/*")
    }
    assert "val_accuracy" in metrics, metrics  # rm/val_accuracy: metrics/rm/val_accuracy
    files = {
        p.relative_to(p.parents[1]).as_posix() for p in (run_dir / "mlruns").rglob("metrics/rm/*")
    }
    tags = {t for t in read_scalars(run_dir / "tb") if t.startswith("rm/")}
    assert "rm/val_accuracy" in tags and tags <= files, (tags, files)  # the same names
