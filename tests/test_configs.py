"""Every config option composes and validates; bad values fail at start naming the key."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from mplus.config import ConfigError, register_configs, validate
from tests.conftest import REPO

register_configs()
BASE = ["cache_dir=/nonexistent", "run_dir=."]


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*BASE, *overrides])


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "data", "algo", "hardware", "logger"])
def test_every_option_composes_and_validates(group):
    opts = _options(group)
    assert opts, group
    for opt in opts:
        if group == "logger" and opt in ("wandb", "mlflow") and not importlib.util.find_spec(opt):
            # an optional extra: without its package the option is refused at start, one line
            with pytest.raises(ConfigError, match=rf"pip install -e '\.\[{opt}\]'"):
                validate(_compose(f"{group}={opt}"))
            continue
        cfg = validate(_compose(f"{group}={opt}"))
        assert getattr(cfg, group).name == opt


def test_reward_models_compose_override_and_add():
    from mplus.config.rl import RewardModelSpec

    cfg = validate(_compose("algo/rewards=two_heads", "algo=grpo"))  # every RL algorithm
    assert cfg.algo.rewards == {
        "harmless": RewardModelSpec(subset="harmless", weight=1.0),
        "helpful": RewardModelSpec(subset="helpful", weight=1.0),
    }
    cfg = validate(
        _compose(
            "algo/rewards=two_heads",
            "algo.rewards.harmless.path=/rm/h",
            "algo.rewards.harmless.subset=null",
            "algo.rewards.helpful.weight=0.25",
            "+algo.rewards.toxicity={path:/rm/t,weight:-0.5}",
            "algo.constraint.enabled=true",
        )
    )
    r = cfg.algo.rewards
    assert r["harmless"] == RewardModelSpec(path="/rm/h")
    assert r["helpful"].weight == 0.25 and r["toxicity"] == RewardModelSpec("/rm/t", None, -0.5)
    assert cfg.algo.constraint.cost == "harmless"
    assert validate(_compose()).algo.rewards == {}  # the default: one reward model


def test_default_is_the_embedded_pipeline():
    cfg = validate(_compose())
    assert (cfg.model.name, cfg.data.name, cfg.algo.name, cfg.hardware.name) == (
        "tiny",
        "synthetic",
        "ppo",
        "cpu",
    )
    assert cfg.model.name_or_path is None and cfg.hardware.attn_implementation == "sdpa"
    assert cfg.algo.rm.max_steps > 0  # the RM stage settings come from algo/rm.yaml


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("algo.kl.coef=-0.1", "algo.kl.coef"),
        ("algo.length_penalty.kind=quadratic", "algo.length_penalty.kind"),
        ("algo.minibatch_size=5", "algo.minibatch_size"),
        ("algo.generation.top_p=0", "algo.generation.top_p"),
        ("data.label_noise=0.7", "data.label_noise"),
        ("hardware.precision=8-bit", "hardware.precision"),
        ("model.arch.num_key_value_heads=3", "model.arch.num_key_value_heads"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(_compose(override))


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        (["algo=grpo", "algo.value_init=base"], "algo.value_init", "critic-free"),
        (["algo=rloo", "algo.whiten_advantages=true"], "algo.whiten_advantages", "gae only"),
        (["algo=grpo", "algo.samples_per_prompt=1"], "algo.samples_per_prompt", ">= 2"),
        (["algo=rloo", "algo.samples_per_prompt=5"], "algo.samples_per_prompt", "must divide"),
        (["algo.advantage.estimator=vtrace"], "algo.advantage.estimator", "gae"),
        (["algo.loss_agg_mode=seq-sum"], "algo.loss_agg_mode", "token-mean"),
        (
            ["algo.generation.greedy=true", "algo.generation.seed_per_sample=true"],
            "algo.generation.seed_per_sample",
            "greedy",
        ),
    ],
)
def test_rl_algorithm_combinations_refused_with_the_key(overrides, key, words):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        validate(_compose(*overrides))
    assert words in str(e.value), e.value


def test_critic_free_algorithms_are_a_few_keys_over_ppo():
    """algo=grpo/rloo/reinforce_pp: PPO's schema and values, with the estimator's own rules."""
    from mplus.algo import KL_IN_REWARD

    ppo = validate(_compose("algo=ppo")).algo
    assert ppo.critic and ppo.whiten and ppo.samples_per_prompt == 1
    for name in ("grpo", "rloo", "reinforce_pp"):
        a = validate(_compose(f"algo={name}")).algo
        assert (a.name, a.advantage.estimator) == (name, name)
        assert not a.critic and not a.whiten and a.value_init is None
        assert a.kl.in_reward == KL_IN_REWARD[name], name  # the documented KL rule
        assert a.samples_per_prompt >= (2 if name in ("grpo", "rloo") else 1)
        # everything else is algo=ppo's (the RM stage, the rollout settings, the learning rate)
        assert (a.rm, a.generation, a.policy_lr, a.steps) == (
            ppo.rm,
            ppo.generation,
            ppo.policy_lr,
            ppo.steps,
        )
    grpo = validate(_compose("algo=grpo")).algo
    assert grpo.kl.estimator == "k3" and grpo.loss_agg_mode == "seq-mean-token-mean"


def test_rm_range_checks():
    with pytest.raises(ConfigError, match=r"algo\.lr"):
        validate(_compose("algo=rm", "algo.lr=-1"))
    with pytest.raises(ConfigError, match=r"data\.mix\.harmless-base"):
        validate(_compose("data=hh_rlhf", "data.mix.harmless-base=-1"))


def test_misspelt_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="kl_coeff"):
        _compose("algo.kl_coeff=0.1")


def test_wrong_type_fails():
    with pytest.raises((ConfigCompositionException, ValidationError)):
        validate(_compose("algo.steps=many"))


def test_cli_bad_config_exits_cleanly_before_loading_a_model(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mplus.train", "algo.kl.coef=-1", f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "algo.kl.coef" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "summary.json").exists()


def test_mistral_7b_on_meta_device_has_published_size():
    from mplus.models.builders import build_meta_model, count_parameters

    cfg = validate(_compose("model=mistral-7b"))
    model = build_meta_model(cfg.model)
    n = count_parameters(model)
    assert abs(n - 7.24e9) / 7.24e9 < 0.005, n
    assert n == int(cfg.model.num_parameters)
    assert next(model.parameters()).device.type == "meta"
    assert cfg.model.name_or_path == "mistralai/Mistral-7B-v0.1"


def test_building_the_dataclasses_touches_no_file_validate_does(tmp_path):
    """``__post_init__`` compares values only; what looks at files runs in ``validate``."""
    from omegaconf import OmegaConf

    from mplus.config import HeldoutEvalConfig

    missing = str(tmp_path / "nope" / "rtp.jsonl")
    suite = {"toxicity": {"prompts": missing}}
    HeldoutEvalConfig(suites=["toxicity"], suite=suite)  # no file check here
    with pytest.raises(ConfigError, match=r"evaluation\.suite"):
        HeldoutEvalConfig(suites=["toxicity"], suite={"toxicity": {"kk": 1}})  # values: still here
    cfg = _compose("evaluation.suites=[toxicity]")
    OmegaConf.set_struct(cfg, False)
    cfg.evaluation.suite = suite
    with pytest.raises(ConfigError, match=rf"eval\.toxicity\.prompts={missing}: file not found"):
        validate(cfg)


def test_the_moved_names_stay_importable_from_their_old_modules():
    import mplus.config as C
    import mplus.config_common as CC
    import mplus.eval.common as EC
    import mplus.eval.config as EV
    import mplus.models.base as MB
    import mplus.models.builders as B
    import mplus.models.pretrained as P

    for name in ("ConfigError", "HardwareConfig", "FSDPSettings", "SlurmConfig"):
        assert getattr(C, name) is getattr(CC, name)
    for name in ("EvalError", "check_local", "looks_like_path"):
        assert getattr(EC, name) is getattr(EV, name)
    assert B.resolve_base is MB.resolve_base and B.tiny_hf_config is MB.tiny_hf_config
    assert B.from_pretrained_kwargs is P.from_pretrained_kwargs and B.torch_dtype is P.torch_dtype


def test_help_lists_the_user_facing_groups_and_options_only():
    proc = subprocess.run(
        [sys.executable, "-m", "mplus.train", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    groups = {ln.split(":")[0].strip(): ln for ln in out.splitlines() if ln.startswith("  ")}
    assert {"model", "data", "algo", "hardware", "logger", "experiment"} <= set(groups)
    assert "_schema" not in out and "eval" not in groups  # not options of a training run
    for algo in ("ppo*", "grpo", "rloo", "reinforce_pp", "dpo", "sft", "rm", "none"):
        assert algo in groups["algo"], algo
    assert "evaluation.reward_model=" in out and "model.name_or_path=" in out
