"""Every sweep in ``sweeps/`` composes, names an experiment, and each of its points validates; the
SLURM and parallel launcher options compose with values taken from the hardware option."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mplus.config import RL_ALGOS, register_configs, validate
from tests.conftest import REPO

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
SHORT = {
    "kl_short",
    "length_short",
    "mix_short",
    "algos_short",
    "optuna_short",
    "claims_short",
    "rewards_short",
}


def _compose_sweep(name: str, *overrides: str, hydra: bool = False):
    """Compose ``sweeps/<name>.yaml`` as ``--config-dir sweeps --config-name <name>`` does."""
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "sweeps"), version_base="1.3"):
        return compose(
            name,
            overrides=[f"hydra.searchpath=[file://{REPO / 'conf'}]", "run_dir=.", *overrides],
            return_hydra_config=hydra,
        )


def _points(cfg) -> list[list[str]]:
    """The basic sweeper's points: the cross product of its ``params``."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    (batch,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    return batch


def test_every_documented_sweep_has_a_short_and_a_full_variant():
    names = {p.stem for p in SWEEPS}
    assert SHORT <= names, names
    for short in SHORT:
        assert short.removesuffix("_short") in names
    readme = (REPO / "sweeps" / "README.md").read_text()
    for name in names:
        assert f"--config-name {name}" in readme, f"sweeps/README.md does not document {name}"
        # each file carries its own command
        assert f"--config-name {name}" in (REPO / "sweeps" / f"{name}.yaml").read_text()


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_composes_and_every_point_validates(path: Path):
    cfg = _compose_sweep(path.stem, hydra=True)
    params = cfg.hydra.sweeper.params
    assert params, f"{path.name}: no hydra.sweeper.params"
    choices = cfg.hydra.runtime.choices
    if "experiment" not in params:
        assert choices.experiment is not None, f"{path.name}: names no experiment"
    if cfg.hydra.sweeper._target_.endswith("OptunaSweeper"):
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra_plugins.hydra_optuna_sweeper._impl import (
            create_optuna_distribution_from_override,
        )

        assert set(params) == {"algo.kl.coef", "algo.length_penalty.coef"}
        assert cfg.objective == "rl/gold_reward_end" and cfg.hydra.sweeper.direction == "maximize"
        for k, v in params.items():
            (ov,) = OverridesParser.create().parse_overrides([f"{k}={v}"])
            dist = create_optuna_distribution_from_override(ov)
            assert dist.low >= 0.0 and dist.high > dist.low
            # the search space's corners validate
            validate(_compose_sweep(path.stem, f"{k}={dist.low}"))
            validate(_compose_sweep(path.stem, f"{k}={dist.high}"))
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    points = _points(cfg)
    assert len(points) >= 3, points
    for point in points:
        typed = OmegaConf.structured(validate(_compose_sweep(path.stem, *point)))
        for ov in OverridesParser.create().parse_overrides(point):
            if ov.key_or_group == "experiment":
                algo = _algo_of(ov.value())
                assert typed.algo.name == algo, ov  # e.g. ppo_short -> algo=ppo
                continue
            got = OmegaConf.select(typed, ov.key_or_group)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
            assert got == ov.value(), (ov, got)


def test_short_sweeps_use_the_short_experiments_and_the_tiny_model():
    for name in SHORT:
        cfg = _compose_sweep(name, hydra=True)
        exps = (
            [cfg.hydra.runtime.choices.experiment]
            if "experiment" not in cfg.hydra.sweeper.params
            else str(cfg.hydra.sweeper.params.experiment).split(",")
        )
        assert all(e.endswith("_short") for e in exps), (name, exps)
        assert cfg.model.name == "tiny" and cfg.hardware.name == "cpu"


def test_kl_short_points_differ_only_in_the_kl_coefficient():
    points = _points(_compose_sweep("kl_short", hydra=True))
    coefs = [float(p[0].split("=")[1]) for p in points]
    assert coefs == sorted(coefs) and coefs[0] == 0.0 and len(coefs) == 4
    cfgs = [validate(_compose_sweep("kl_short", *p)) for p in points]
    assert [c.algo.kl.coef for c in cfgs] == coefs
    assert {c.algo.steps for c in cfgs} == {cfgs[0].algo.steps} and cfgs[0].algo.steps < 60


def test_slurm_launcher_takes_its_settings_from_the_hardware_option(tmp_path, monkeypatch):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            return_hydra_config=True,
            overrides=[
                "hydra/launcher=slurm",
                "hardware.slurm.partition=gpu-long",
                "hardware.devices=4",
                "hardware.num_nodes=2",
                "hardware.slurm.time_min=720",
                "hardware.slurm.qos=high",
                "hardware.slurm.account=rlhf",
                "hardware.slurm.mem_gb=200",
                "hardware.slurm.max_num_timeout=5",
                "run_dir=.",
            ],
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu-long" and launcher["qos"] == "high"
    assert launcher["account"] == "rlhf" and launcher["mem_gb"] == 200
    assert launcher["gpus_per_node"] == 4 and launcher["tasks_per_node"] == 4
    assert launcher["nodes"] == 2 and launcher["timeout_min"] == 720
    assert launcher["max_num_timeout"] == 5 and launcher["cpus_per_task"] == 8
    assert launcher["additional_parameters"] == {"signal": "SIGUSR1@90"}

    # the sbatch script submitit writes from these settings (as the launcher passes them)
    import shutil

    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    real_which = shutil.which
    monkeypatch.setattr(
        shutil,
        "which",
        lambda c, *a, **k: f"/usr/bin/{c}" if c == "srun" else real_which(c, *a, **k),
    )
    ex = submitit.AutoExecutor(
        cluster="slurm", folder=tmp_path, slurm_max_num_timeout=launcher["max_num_timeout"]
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    ex.update_parameters(
        **{
            k if k in base else f"slurm_{k}": v
            for k, v in launcher.items()
            if k not in ("_target_", "submitit_folder", "max_num_timeout")
        }
    )
    sbatch = ex._executor._make_submission_file_text("python -m mplus.train", "0")
    for line in (
        "#SBATCH --partition=gpu-long",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --nodes=2",
        "#SBATCH --time=720",
        "#SBATCH --signal=SIGUSR1@90",
        "#SBATCH --qos=high",
        "#SBATCH --account=rlhf",
        "#SBATCH --mem=200GB",
    ):
        assert line in sbatch, (line, sbatch)


def test_parallel_and_optuna_options_compose():
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train", return_hydra_config=True, overrides=["hydra/launcher=parallel", "run_dir=."]
        )
        assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
        assert cfg.hydra.launcher.n_jobs == 2
        cfg = compose(
            "train",
            return_hydra_config=True,
            overrides=["hydra/sweeper=optuna", "run_dir=.", "objective=heldout/kl"],
        )
        assert (
            cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.objective == "heldout/kl"
        )


@pytest.mark.parametrize(
    "hardware", sorted(p.stem for p in (REPO / "conf/hardware").glob("*.yaml"))
)
def test_slurm_launcher_composes_with_every_hardware_option(hardware):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            return_hydra_config=True,
            overrides=["hydra/launcher=slurm", f"hardware={hardware}", "run_dir=."],
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    hw = cfg.hardware
    assert launcher["gpus_per_node"] == hw.devices == launcher["tasks_per_node"]
    assert launcher["nodes"] == hw.num_nodes and launcher["timeout_min"] == hw.slurm.time_min
    assert launcher["partition"] == hw.slurm.partition
    assert launcher["cpus_per_task"] == hw.slurm.cpus_per_task
    assert launcher["mem_gb"] == hw.slurm.mem_gb


def _algo_of(experiment: str) -> str:
    """The algorithm an experiment name runs: base_short -> none, ppo_hh -> ppo, ppo_safe ->
    ppo."""
    stem = experiment.removesuffix("_short").removesuffix("_hh").removesuffix("_safe")
    return "none" if stem == "base" else stem


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "conf/experiment").glob("*.yaml")))
def test_experiment_composes_and_validates(name):
    text = (REPO / "conf/experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_"), name
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        typed = validate(compose("train", overrides=[f"experiment={name}", "run_dir=."]))
    algo = _algo_of(name)
    assert typed.algo.name == algo
    # the objective is a key this algorithm's run writes (an experiment's value is not shadowed)
    group = "rl" if algo in RL_ALGOS else {"rm": "rm"}.get(algo, "heldout")
    assert typed.objective.split("/")[0] == group, (name, typed.objective)
