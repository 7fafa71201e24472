"""The real model's contract end to end: the real Mistral-7B tokenizer (BOS, no pad) through every
stage of ``python -m mplus.train``, and PPO on-policy when the model has dropout."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.conftest import REPO, TEST_MODEL, cached_test_base, read_summary

CHEAP_DATA = [
    "data.num_train_pairs=48",
    "data.num_val_pairs=16",
    "data.num_prompts=32",
    "data.num_eval_prompts=4",
    "evaluation.probe_docs=4",
    "evaluation.max_new_tokens=6",
]
CHEAP_ALGO = {
    "rm": ["algo=rm", "algo.max_steps=2", "algo.val_every=2", "algo.batch_size=8"],
    "sft": ["algo=sft", "algo.max_steps=2", "algo.val_every=2", "algo.batch_size=8"],
    "dpo": ["algo=dpo", "algo.max_steps=2", "algo.val_every=2", "algo.batch_size=8"],
    "ppo": [
        "algo=ppo",
        "algo.steps=2",
        "algo.rollout_batch_size=4",
        "algo.minibatch_size=4",
        "algo.generation.max_new_tokens=6",
        "algo.rm.max_steps=2",
        "algo.rm.val_every=2",
        "algo.rm.batch_size=8",
        "algo.warmup_steps=1",
    ],
}


# PPO (which trains its reward model first) in the default run; the other stages are slow
@pytest.mark.parametrize(
    "algo", [pytest.param(a, marks=pytest.mark.slow) for a in ("rm", "sft", "dpo")] + ["ppo"]
)
def test_stages_run_on_the_real_mistral_tokenizer(run_train, mistral_model_dir, algo):
    _, run_dir = run_train(
        f"model.name_or_path={mistral_model_dir}", *CHEAP_DATA, *CHEAP_ALGO[algo]
    )
    s = read_summary(run_dir)
    if algo in ("rm", "ppo"):
        assert "rm/val_accuracy" in s and s["rm/steps"] == 2  # 2 steps on a random model
        assert (run_dir / "reward_model" / "config.json").exists()
    if algo != "rm":
        assert (run_dir / "policy" / "config.json").exists()
        assert "heldout/response_length" in s and "heldout/kl" in s
    if algo == "ppo":
        assert s["rl/steps"] == 2
    from transformers import AutoTokenizer

    out = run_dir / ("reward_model" if algo == "rm" else "policy")
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("Hi")["input_ids"][0] == 1  # the export keeps the base's BOS rule
    assert tok.pad_token_id not in (None, tok.eos_token_id)


# ---------------------------------------------------------------- dropout off for RL


def _ppo_in_process(tmp_path, cache_dir, *overrides):
    """Run PPO through the real pipeline in this process; returns max |logp - old_logp| of the
    first minibatch of every PPO step (ppo_epochs=1, two minibatches: with one, the update
    reuses the old log-probs' own forward and the difference is 0 by construction)."""
    from hydra import compose, initialize_config_dir

    import mplus.algo as A
    from mplus.config import register_configs, validate
    from mplus.pipeline import run

    seen: list[float] = []
    real = A.policy_loss

    def spy(logp, old_logp, *args, **kw):
        seen.append(float((logp - old_logp).abs().max()))
        return real(logp, old_logp, *args, **kw)

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *TEST_MODEL,
                f"cache_dir={cache_dir}",
                f"run_dir={tmp_path / 'run'}",
                "progress_bar=false",
                "algo.steps=3",
                "algo.ppo_epochs=1",
                "algo.rollout_batch_size=8",
                "algo.minibatch_size=4",
                "algo.rm.max_steps=4",
                "algo.rm.val_every=4",
                "data.num_eval_prompts=4",
                "evaluation.enabled=false",
                "algo.warmup_steps=1",
                "algo.policy_lr=1e-3",
                *overrides,
            ],
        )
    A.policy_loss = spy
    try:
        run(validate(cfg))
    finally:
        A.policy_loss = real
    return seen[::2]  # each step's first minibatch


@pytest.fixture
def dropout_base(cache_dir, tmp_path):
    """The tiny base with attention dropout 0.1 in its config."""
    src = cached_test_base(cache_dir)
    dst = tmp_path / "base-dropout"
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["attention_dropout"] = 0.1
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_ppo_is_on_policy_with_attention_dropout(cache_dir, tmp_path, dropout_base):
    diffs = _ppo_in_process(tmp_path, cache_dir, f"model.name_or_path={dropout_base}")
    assert len(diffs) == 3 and max(diffs) < 1e-5, diffs


@pytest.mark.slow
def test_ppo_is_on_policy_with_lora_dropout(cache_dir, tmp_path):
    diffs = _ppo_in_process(
        tmp_path, cache_dir, "model.lora.enabled=true", "model.lora.dropout=0.1"
    )
    assert len(diffs) == 3 and max(diffs) < 1e-5, diffs


@pytest.mark.slow
def test_without_disabling_dropout_ppo_would_be_off_policy(
    cache_dir, tmp_path, dropout_base, monkeypatch
):
    """The control for the two tests above: their models really have dropout."""
    import mplus.models.builders as B

    monkeypatch.setattr(B, "disable_dropout", lambda m: m)
    diffs = _ppo_in_process(tmp_path, cache_dir, f"model.name_or_path={dropout_base}")
    assert max(diffs) > 1e-3, diffs


def test_warmup_starts_above_zero():
    from mplus.modules.optim import adamw_with_warmup, warmup_cosine

    assert [warmup_cosine(s, 4, 10) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(4, 4, 10) == 1.0 and warmup_cosine(7, 4, 10) == pytest.approx(0.5)
    assert warmup_cosine(10, 4, 10) == 0.0 and warmup_cosine(12, 4, 10) == 0.0
    assert warmup_cosine(0, 0, 10) == 1.0
    opt, _ = adamw_with_warmup(
        [torch.nn.Parameter(torch.ones(1))], lr=1e-3, weight_decay=0, warmup_steps=5, total_steps=60
    )
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4)  # step 0 trains
    assert opt.defaults["fused"]  # float parameters on CPU or CUDA: the fused kernel
