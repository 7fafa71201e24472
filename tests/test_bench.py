"""``python -m mplus.bench`` runs its fixed workload through the real stages and reports numbers
read from their TensorBoard events (throughput is never asserted: it is a benchmark figure)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, TEST_MODEL


@pytest.mark.slow
def test_bench_runs_every_stage_and_writes_its_numbers(cache_dir, tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "mplus.bench", "--out", str(out), "--", *TEST_MODEL]
    cmd.append(f"cache_dir={cache_dir}")
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for stage in ("reward model", "DPO", "PPO (hf)", "rollout alone (hf)"):
        assert stage in r.stdout
    res = json.loads((out / "bench.json").read_text())
    assert set(res) == {"rm", "dpo", "ppo_hf", "rollout_hf"}
    for key in ("rm", "dpo"):
        assert res[key]["pairs_per_s"] > 0 and res[key]["tokens_per_s"] > 0
    ppo = res["ppo_hf"]
    assert ppo["prompts_per_s"] == pytest.approx(16 / ppo["step_s"])
    assert ppo["rollout_tokens_per_s"] > 0 and ppo["train_tokens_per_s"] > 0
    assert set(res["rollout_hf"]) == {"tokens_per_s_16", "tokens_per_s_64"}
    # the runs are the stages' own: PPO ran the workload's 10 steps of 16 prompts
    summary = json.loads((out / "ppo_hf" / "summary.json").read_text())
    assert summary["rl/steps"] == 10


def test_bench_refuses_an_unknown_stage():
    r = subprocess.run(
        [sys.executable, "-m", "mplus.bench", "--stages", "rm,sft"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "unknown stage or engine: sft" in r.stderr
