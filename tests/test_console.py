"""What a researcher sees on the console (mplus.console, mplus.modules.progress, the closing
summary): each message once, no warning nobody can act on, progress named by stage, and the
result first."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import warnings
from collections import Counter
from types import SimpleNamespace

import pytest

from mplus.console import headline, run_console, strip_log_prefix
from mplus.modules.progress import TrainModeCheck, format_metrics, metric_name
from tests.conftest import REPO, cached_test_base, read_summary, train_command

# The messages mplus silences or replaces (mplus.console): none may reach the console.
GONE = (
    "You defined a `validation_step` but have no `val_dataloader`",
    "isinstance(treespec, LeafSpec)",
    "module(s) in eval mode",
    "are in eval mode at the start of training",  # mplus's own check: every trained model trains
    "litlogger",
    "requires_grad=True to a scalar",
    "LOAD REPORT",
    "`weights_only` was not set",
)

SHORT_RL = [
    "algo.steps=3",
    "logger.log_every=1",
    "algo.rm.max_steps=4",
    "algo.rm.val_every=4",
    "algo.rm.batch_size=8",
    "data.num_train_pairs=128",
    "data.num_val_pairs=32",
    "algo.rollout_batch_size=8",
    "algo.minibatch_size=8",
    "data.num_eval_prompts=8",
    "evaluation.probe_docs=8",
]


@pytest.fixture(scope="module")
def rl_console(cache_dir, tmp_path_factory):
    """One short default-style RL run (reward model, then PPO) through the real entry point,
    stdout and stderr a pipe (no terminal), progress_bar left at its default."""
    run_dir = tmp_path_factory.mktemp("console") / "run"
    cmd = [a for a in train_command(cache_dir, run_dir, *SHORT_RL) if a != "progress_bar=false"]
    # one intra-op thread: on 2 cores shared with other work, torch's threads fight for them
    # (about 18 s instead of 2 minutes here); nothing on the console depends on it
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.returncode == 0, proc.stdout[-5000:]
    return proc.stdout, run_dir


def test_no_line_twice(rl_console):
    out, _ = rl_console
    lines = [strip_log_prefix(x) for x in out.splitlines() if x.strip()]
    # The only exception: the held-out samples printed before and after RL ("  [gold] prompt ->
    # response") are the same fixed-seed prompts, and after 3 steps mostly the same responses.
    counted = Counter(x for x in lines if not x.startswith("  ["))
    twice = {x: n for x, n in counted.items() if n > 1}
    assert not twice, twice
    assert not any(x.startswith("INFO: ") for x in lines)  # Lightning's own handler, set aside


def test_no_unactionable_warnings(rl_console):
    out, _ = rl_console
    for text in GONE:
        assert text not in out, text
    # mplus's one line instead of transformers' report, for the reward model's fresh head
    # (the value model starts from the trained reward model: no fresh head)
    assert out.count("reward head initialised fresh (score.weight): expected") == 1


def test_progress_lines_every_log_every_step(rl_console):
    out, _ = rl_console
    ppo = [x for x in out.splitlines() if "[mplus.progress]" in x and " PPO step " in x]
    steps = [int(re.search(r"PPO step (\d+)/3 · ", x).group(1)) for x in ppo]
    assert steps == [1, 2, 3], ppo
    for line in ppo:
        assert "train reward" in line and "train gold" in line and " elapsed" in line, line
        kl = float(re.search(r"train kl (\S+)", line).group(1))
        assert kl >= 0, line  # k3 on the bar, never the negative k1 of a small batch
    rm = [x for x in out.splitlines() if "[mplus.progress]" in x and "reward model step" in x]
    assert any("reward model step 4/4 · train loss" in x for x in rm), rm
    assert any("reward model step 4/4 · val loss" in x and "val accuracy" in x for x in rm), rm


def test_headline_before_the_table(rl_console):
    out, run_dir = rl_console
    s = read_summary(run_dir)
    lines = out.splitlines()
    top = next(i for i, x in enumerate(lines) if x.startswith("PPO, 3 steps (held-out, 8 prompts)"))
    head = lines[top]
    start, end = s["rl/gold_reward_start"], s["rl/gold_reward_end"]
    assert f"gold {start:.3f} -> {end:.3f} ({end - start:+.3f})" in head, head
    assert "RM reward " in head and "KL to base " in head, head
    assert lines[top + 1].startswith(
        f"reward model: val accuracy {s['rm/val_accuracy']:.3f}, trained in this run"
    )
    assert lines[top + 2].startswith("base model: tiny (embedded")
    assert lines[top + 3] == f"run dir: {run_dir}"
    table = next(i for i, x in enumerate(lines) if x.startswith("summary "))
    assert table > top + 3


# ---------------------------------------------------------------- the pieces, in this process


def test_named_warnings_filtered_by_message_only():
    named = [
        ("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning,
         "lightning.pytorch.utilities._pytree"),
        ("You defined a `validation_step` but have no `val_dataloader`. Skipping val loop.",
         UserWarning, "lightning.pytorch.trainer.configuration_validator"),
        ("Found 118 module(s) in eval mode at the start of training. This may ...", UserWarning,
         "lightning.pytorch.loops.fit_loop"),
    ]  # fmt: skip
    kept = [
        ("Found 3 module(s) in eval mode at the start of training.", UserWarning, "mplus.x"),
        ("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, "my_code"),
        ("some other lightning warning", UserWarning, "lightning.pytorch.loops.fit_loop"),
    ]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with run_console():
            for msg, cat, module in named + kept:
                warnings.warn_explicit(msg, cat, "f.py", 1, module=module)
    assert [str(w.message) for w in seen] == [m for m, _, _ in kept]


def test_lightning_lines_once(caplog):
    import lightning  # noqa: F401

    own = logging.getLogger("lightning").handlers[:]
    rz = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logging.getLogger().addHandler(h := logging.NullHandler())  # Hydra's root handlers
    try:
        with caplog.at_level(logging.INFO), run_console():
            assert not any(
                type(x) is logging.StreamHandler for x in logging.getLogger("lightning").handlers
            )
            for _ in range(2):
                rz.info("GPU available: False, used: False")
                rz.info("💡 Tip: For seamless cloud logging and experiment tracking, try ...")
    finally:
        logging.getLogger().removeHandler(h)
    msgs = [r.getMessage() for r in caplog.records if r.name == rz.name]
    assert msgs == ["GPU available: False, used: False"]
    assert logging.getLogger("lightning").handlers == own  # given back after the run


def test_fresh_head_one_line(cache_dir, caplog, capfd):
    from mplus.models.builders import load_reward_model

    base = cached_test_base(cache_dir)
    model_cfg = SimpleNamespace(dtype="float32", trust_remote_code=False, allow_pickle=False)
    with caplog.at_level(logging.INFO, logger="mplus.console"):
        load_reward_model(str(base), model_cfg)
    assert "LOAD REPORT" not in capfd.readouterr().err
    assert [r.getMessage() for r in caplog.records if r.name == "mplus.console"] == [
        "reward head initialised fresh (score.weight): expected for a reward/value model built "
        "from a causal LM"
    ]


def test_metric_names_say_training_batch():
    assert metric_name("rm/train_loss") == "train loss"
    assert metric_name("dpo/loss") == "train loss"
    assert metric_name("sft/val_loss") == "val loss"
    assert (
        format_metrics({"train_reward": 0.129, "train_kl": 0.0})
        == "train reward 0.129 · train kl 0"
    )


def _cfg(name="ppo", reward_model=None, rm=True, eval_rm=None):
    algo = SimpleNamespace(
        name=name, reward_model=reward_model, rm=SimpleNamespace() if rm else None
    )
    return SimpleNamespace(
        algo=algo,
        model=SimpleNamespace(name="mistral-7b", name_or_path="mistralai/Mistral-7B-v0.1"),
        evaluation=SimpleNamespace(reward_model=eval_rm),
    )


def test_headline_lines(tmp_path):
    s = {
        "rl/gold_reward_start": 0.4,
        "rl/gold_reward_end": 0.62,
        "rl/reward_start": -0.1,
        "rl/reward_end": 1.2,
        "rl/kl_start": 0.0,
        "rl/kl_end": 0.77,
        "rl/steps": 60,
        "rm/val_accuracy": 0.91,
        "data/eval_prompts": 64,
    }
    lines = headline(s, _cfg("grpo"), "mistralai/Mistral-7B-v0.1", tmp_path)
    assert lines == [
        "GRPO, 60 steps (held-out, 64 prompts): gold 0.400 -> 0.620 (+0.220) · RM reward -0.100 "
        "-> 1.200 (+1.300) · KL to base 0.000 -> 0.770 (+0.770)",
        f"reward model: val accuracy 0.910, trained in this run ({tmp_path / 'reward_model'})",
        "base model: mistralai/Mistral-7B-v0.1",
        f"run dir: {tmp_path}",
    ]
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "reward_stats.json").write_text('{"val_accuracy": 0.8}')
    given = headline(
        {"heldout/gold_reward": 0.5, "heldout/kl": 0.1},
        _cfg("dpo", rm=False, eval_rm=str(tmp_path / "rm")),
        "x",
        tmp_path,
    )
    assert given[0] == "DPO (held-out): gold 0.500 · KL to base 0.100"
    assert given[1] == f"reward model: val accuracy 0.800, given ({tmp_path / 'rm'})"


def test_headline_names_every_reward_model_of_algo_rewards(tmp_path):
    from mplus.config.rl import ConstraintConfig, RewardModelSpec

    cfg = _cfg("ppo")
    cfg.algo.rewards = {
        "harmless": RewardModelSpec(subset="harmless"),
        "helpful": RewardModelSpec(path="/rm/helpful", weight=2.0),
    }
    cfg.algo.constraint = ConstraintConfig(enabled=True, cost="harmless")
    s = {"rm_harmless/val_accuracy": 0.97, "heldout/gold_reward": 0.5}
    lines = headline(s, cfg, "x", tmp_path)
    assert lines[1] == (
        "reward models: harmless (cost, val accuracy 0.970, trained in this run); "
        f"helpful (weight 2.000, given (/rm/helpful)) ({tmp_path / 'reward_models'})"
    )


def test_train_mode_check_names_only_trained_models(caplog):
    import torch

    module = torch.nn.Module()
    module.policy = torch.nn.Linear(2, 2).eval()  # trains, left in eval mode: warned
    module.ref_model = torch.nn.Linear(2, 2).eval().requires_grad_(False)  # frozen: fine
    module.value_model = torch.nn.Linear(2, 2)  # trains, train mode: fine
    with caplog.at_level(logging.WARNING, logger="mplus.progress"):
        TrainModeCheck().on_train_start(SimpleNamespace(is_global_zero=True), module)
    assert [r.getMessage() for r in caplog.records] == [
        "1 module(s) of the trained policy are in eval mode at the start of training: dropout "
        "and activation checkpointing are off in them"
    ]
