"""End-to-end runs through ``python -m mplus.train`` on the tiny model, on CPU, judged by outcomes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from tests.conftest import (
    HH_FILE,
    REPO,
    cached_test_base,
    read_scalars,
    read_summary,
    train_command,
)

RM_FAST = [
    "algo=rm",
    "algo.max_steps=120",
    "algo.val_every=60",
    "data.num_train_pairs=2000",
    "data.num_val_pairs=200",
]


def _pair_accuracy(model_dir, pairs) -> float:
    """Accuracy of an exported reward model, using transformers alone (no mplus code)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()

    def scores(texts):
        enc = tok([t + tok.eos_token for t in texts], return_tensors="pt", padding=True)
        with torch.no_grad():
            return model(**enc).logits[:, 0]

    rc = scores([p.prompt + p.chosen for p in pairs])
    rr = scores([p.prompt + p.rejected for p in pairs])
    return float((rc > rr).float().mean())


def test_reward_model_end_to_end(run_train):
    _, run_dir = run_train(*RM_FAST)
    s = read_summary(run_dir)
    assert s["rm/val_accuracy"] >= 0.75, s  # chance is 0.5
    assert s["rm/steps"] == 120
    assert s["data/train_pairs"] == 2000 and s["data/val_pairs"] == 200
    # the export loads with plain transformers and reproduces the logged accuracy
    from mplus.data.synthetic import SyntheticTask

    val = SyntheticTask(seed=0).pairs(200, split="val")
    assert abs(_pair_accuracy(run_dir / "reward_model", val) - s["rm/val_accuracy"]) < 0.02
    stats = json.loads((run_dir / "reward_model" / "reward_stats.json").read_text())
    assert stats["std"] > 0
    scalars = read_scalars(run_dir / "tb")
    assert {"rm/train_loss", "rm/val_loss", "rm/val_accuracy", "rm/margin"} <= set(scalars)
    # throughput (mplus.modules.perf), written with the other metrics every logger.log_every
    assert len(scalars["perf/train_tokens_per_s"]) == len(scalars["rm/train_loss"]) > 5
    assert all(v > 0 for _, v in scalars["perf/step_s"] + scalars["perf/train_tokens_per_s"])
    assert (run_dir / ".hydra" / "config.yaml").exists()


@pytest.mark.slow
def test_reward_model_resume_continues_at_the_saved_step(run_train, tmp_path):
    run_dir = tmp_path / "rm-resume"
    run_train("algo=rm", "algo.max_steps=20", "algo.val_every=10", run_dir=run_dir)
    ckpt = run_dir / "checkpoints" / "rm" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 20
    run_train(
        "algo=rm", "algo.max_steps=30", "algo.val_every=10", f"ckpt_path={ckpt}", run_dir=run_dir
    )
    assert read_summary(run_dir)["rm/steps"] == 30
    steps = [s for s, _ in read_scalars(run_dir / "tb")["rm/val_loss"]]
    assert max(steps) >= 29 and min(steps) < 20


def _train(cache_dir, run_dir, *overrides):
    cmd = train_command(cache_dir, run_dir, *overrides)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def ppo_run(cache_dir, tmp_path_factory):
    """The default algorithm end to end (reward model, then PPO), once for this module: the
    critic-free runs below score with its reward model."""
    run_dir = tmp_path_factory.mktemp("ppo") / "run"
    _train(
        cache_dir,
        run_dir,
        "algo.steps=3",
        "algo.rm.max_steps=40",
        "algo.rollout_batch_size=16",
        "algo.minibatch_size=8",
        "data.num_eval_prompts=16",
        "algo.sample_every=1",
    )
    return run_dir


def test_ppo_end_to_end(ppo_run, cache_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = ppo_run
    s = read_summary(run_dir)
    for k in (
        "rl/gold_reward_start",
        "rl/gold_reward_end",
        "rl/reward_start",
        "rl/reward_end",
        "rl/kl_end",
        "rl/response_length_end",
        "rl/stop_rate_end",
        "rm/val_accuracy",
        # the probes and the behaviour rates, before and after RL
        "rl/knowledge_acc_start",
        "rl/knowledge_acc_end",
        "rl/corpus_nll_start",
        "rl/corpus_nll_bad_response_end",
        "rl/harmful_refusal_start",
        "rl/benign_overrefusal_end",
        "heldout/knowledge_nll",
        "heldout/harmful_comply",
    ):
        assert k in s, k
    assert 0.0 <= s["rl/knowledge_acc_end"] <= 1.0 and s["rl/knowledge_nll_start"] > 0
    assert s["rl/steps"] == 3
    scalars = read_scalars(run_dir / "tb" / "ppo")  # tb/rm has its own perf/* curves
    for tag in (
        "rl/reward_mean",
        "rl/gold_reward_mean",
        "rl/kl",
        "rl/kl_coef",
        "rl/entropy",
        "rl/policy_loss",
        "rl/value_loss",
        "rl/clipfrac",
        "rl/approx_kl",
        "rl/explained_variance",
        "rl/advantage_mean",
        "rl/response_length_mean",
        "rl/stop_rate",
        "rl/length_penalty_mean",
        "rl/harmful_refusal",
        "rl/benign_correct",
        "perf/rollout_tokens_per_s",
        "perf/step_s",
    ):
        assert [st for st, _ in scalars[tag]] == [1, 2, 3], tag

    # the exported policy loads with plain transformers, generates, and differs from the base
    policy = AutoModelForCausalLM.from_pretrained(run_dir / "policy")
    tok = AutoTokenizer.from_pretrained(run_dir / "policy")
    base_dir = cached_test_base(cache_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    changed = [n for n, p in policy.named_parameters() if not torch.equal(p, base.get_parameter(n))]
    assert changed, "PPO did not change the policy's parameters"
    ids = tok("\n\nHuman: What is the capital of France?\n\nAssistant:", return_tensors="pt")
    with torch.no_grad():  # the training changed what the model predicts, not only its weights
        assert not torch.allclose(policy(**ids).logits, base(**ids).logits, atol=1e-6)
    out = policy.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


@pytest.mark.parametrize(
    "algo",
    [
        "grpo",
        pytest.param("rloo", marks=pytest.mark.slow),
        pytest.param("reinforce_pp", marks=pytest.mark.slow),
    ],
)
def test_critic_free_rl_end_to_end_builds_no_value_model(ppo_run, cache_dir, tmp_path, algo):
    """algo=grpo/rloo/reinforce_pp: no value model built, optimised or checkpointed; groups of
    samples per prompt; rl/* metrics under the algorithm's own TensorBoard run; the export loads."""
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / algo
    n = 1 if algo == "reinforce_pp" else 4
    _train(
        cache_dir,
        run_dir,
        f"algo={algo}",
        f"algo.reward_model={ppo_run / 'reward_model'}",
        "algo.steps=3",
        "algo.rollout_batch_size=16",
        f"algo.samples_per_prompt={n}",
        "algo.minibatch_size=8",
        "algo.ckpt_every=3",
        "data.num_eval_prompts=16",
    )
    s = read_summary(run_dir)
    assert s["rl/steps"] == 3 and s[f"time/{algo}_s"] > 0
    for k in ("rl/gold_reward_start", "rl/gold_reward_end", "rl/kl_end", "rl/reward_end"):
        assert k in s, k
    assert s["rl/gold_reward_start"] == read_summary(ppo_run)["rl/gold_reward_start"]  # same base
    state = torch.load(run_dir / "checkpoints" / algo / "last.ckpt", weights_only=False)
    keys = list(state["state_dict"])
    assert keys and all(k.startswith("policy.") for k in keys), sorted(
        {k.split(".")[0] for k in keys}
    )
    assert state[f"mplus_{algo}"]["ppo_step"] == 3 and len(state["optimizer_states"]) == 1
    scalars = read_scalars(run_dir / "tb" / algo)
    for tag in ("rl/reward_mean", "rl/kl", "rl/policy_loss", "rl/advantage_std", "rl/clipfrac"):
        assert [st for st, _ in scalars[tag]] == [1, 2, 3], tag
    assert not {"rl/value_loss", "rl/explained_variance", "rl/value_clipfrac"} & set(scalars)
    grouped = {"rl/group_reward_std", "rl/group_zero_std_share"}
    if n > 1:
        assert grouped <= set(scalars)
        assert all(0 <= v <= 1 for _, v in scalars["rl/group_zero_std_share"])
    else:
        assert not grouped & set(scalars)
    AutoModelForCausalLM.from_pretrained(run_dir / "policy")


@pytest.mark.slow
def test_ppo_killed_mid_run_resumes_from_the_saved_step(cache_dir, tmp_path):
    run_dir = tmp_path / "ppo-kill"
    args = train_command(
        cache_dir,
        run_dir,
        "algo.steps=8",
        "algo.ckpt_every=2",
        "algo.rm.max_steps=20",
        "algo.rollout_batch_size=8",
        "algo.minibatch_size=8",
        "data.num_eval_prompts=8",
    )
    proc = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    ckpt = run_dir / "checkpoints" / "ppo" / "last.ckpt"
    deadline = time.time() + 600
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # let the checkpoint finish writing
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no PPO checkpoint was written before the kill"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["mplus_ppo"]["ppo_step"]
    assert 2 <= saved < 8, f"kill came too late to test a resume (saved step {saved})"
    assert not (run_dir / "policy").exists()

    done = subprocess.run(
        [*args, f"ckpt_path={ckpt}"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert read_summary(run_dir)["rl/steps"] == 8
    # curves continue: every step 1..8 logged, and the resumed process never re-logged the steps
    # that the checkpoint already held
    files = sorted((run_dir / "tb" / "ppo").glob("events.out.tfevents.*"), key=os.path.getmtime)
    per_file = [read_scalars_file(f).get("rl/kl", []) for f in files]
    killed, resumed = [steps for steps in per_file if steps][-2:]
    assert min(s for s, _ in killed) == 1 and max(s for s, _ in killed) >= saved
    assert [s for s, _ in resumed] == list(range(saved + 1, 9))


def read_scalars_file(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


@pytest.mark.slow  # end to end through a subprocess: CI's slow set runs it
@pytest.mark.skipif(not HH_FILE.exists(), reason="shared HH-RLHF sample not present")
def test_reward_model_on_real_hh_rows(run_train):
    _, run_dir = run_train(
        "algo=rm",
        "data=hh_rlhf",
        f"data.files={HH_FILE}",
        "algo.max_steps=6",
        "algo.val_every=6",
        "algo.batch_size=8",
        "data.max_length=384",
    )
    s = read_summary(run_dir)
    assert s["data/skipped/empty_response"] == 4 and s["data/skipped/prompt_mismatch"] == 2
    assert s["data/skipped/too_long"] > 0  # the tiny model's 384-token limit drops long dialogues
    assert s["data/mix/harmless-base"] == s["data/train_pairs"] > 500
    # the share of validation pairs ranked right: a whole number of pairs
    n_right = s["rm/val_accuracy"] * s["data/val_pairs"]
    assert abs(n_right - round(n_right)) < 1e-3, (s["rm/val_accuracy"], s["data/val_pairs"])


def test_dpo_sft_and_base_share_one_heldout_evaluation(run_train, tmp_path):
    from transformers import AutoModelForCausalLM

    from mplus.compare import collect, table

    common = [
        "data.num_train_pairs=256",
        "data.num_val_pairs=64",
        "data.num_eval_prompts=16",
        "logger.log_every=2",
        "evaluation.probe_docs=32",
    ]
    _, base_dir = run_train("algo=none", *common, run_dir=tmp_path / "none")
    _, dpo_dir = run_train(
        "algo=dpo",
        "algo.max_steps=8",
        "algo.val_every=8",
        "algo.batch_size=16",
        *common,
        run_dir=tmp_path / "dpo",
    )
    _, sft_dir = run_train(
        "algo=sft",
        "algo.max_steps=8",
        "algo.val_every=8",
        "algo.batch_size=16",
        *common,
        run_dir=tmp_path / "sft",
    )
    keys = (
        "heldout/gold_reward",
        "heldout/kl",
        "heldout/response_length",
        "heldout/stop_rate",
        "heldout/knowledge_acc",
        "heldout/knowledge_nll",
        "heldout/corpus_nll",
        "heldout/corpus_nll_good",
        "heldout/corpus_nll_bad_response",
        "heldout/harmful_refusal",
        "heldout/harmful_redirect",
        "heldout/harmful_comply",
        "heldout/benign_correct",
        "heldout/benign_overrefusal",
    )
    base, dpo, sft = (read_summary(d) for d in (base_dir, dpo_dir, sft_dir))
    for s in (base, dpo, sft):
        assert all(k in s for k in keys), s
    assert base["heldout/kl"] == 0.0 and dpo["heldout/kl"] != 0.0 and sft["heldout/kl"] != 0.0
    assert dpo["dpo/steps"] == 8
    n_right = dpo["dpo/val_reward_accuracy"] * dpo["data/val_pairs"]  # whole validation pairs
    assert abs(n_right - round(n_right)) < 1e-3, dpo["dpo/val_reward_accuracy"]
    assert sft["sft/steps"] == 8 and sft["sft/val_loss"] > 0
    assert {"dpo/loss", "dpo/reward_accuracy", "dpo/chosen_logps", "dpo/val_margin"} <= set(
        read_scalars(dpo_dir / "tb")
    )
    for d in (dpo_dir, sft_dir):
        AutoModelForCausalLM.from_pretrained(d / "policy")
    out = table(collect([str(tmp_path)]))
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["run", "reward", "gold_reward"]
    assert len(lines) == 2 + 3
    assert any(ln.startswith("algo=dpo") for ln in lines)
