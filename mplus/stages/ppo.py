"""``algo=ppo`` (and ``grpo``, ``rloo``, ``reinforce_pp``): direct RLHF from the base. Policy and
reference from the base, the reward model this run trains first (unless ``algo.reward_model``
names an export), a value model only with a critic (PPO's GAE), RL with a KL leash and a
response-length penalty; exports ``<run dir>/policy/``.

One stage for every RL algorithm: they share :class:`mplus.config.RLConfig` and
:class:`mplus.modules.ppo.PPOModule` and differ in ``algo.advantage.estimator`` (the registry of
:mod:`mplus.algo.advantages`). Each runs under its own name (``checkpoints/<algo>/``,
``tb/<algo>/``, its own stage seed) and records ``rl/*`` start/end metrics in the summary.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from mplus import distributed as D
from mplus import rundir
from mplus.config import RL_ALGOS, RLConfig, TrainConfig
from mplus.console import stage_label
from mplus.hardware import HardwareError
from mplus.rundir import Summary
from mplus.stages import register
from mplus.stages.common import make_trainer, sharded
from mplus.stages.context import RunContext
from mplus.stages.evaluation import close_vllm_backend, export_policy, heldout_eval, rollout_engine
from mplus.stages.resume import rng_state_callback, seed_stage, stage_checkpoint
from mplus.stages.rm import train_reward_model

log = logging.getLogger(__name__)

METRIC_PREFIX = "rl"  # every RL algorithm's metrics: rl/* (summary and TensorBoard)


def check_plan(cfg: TrainConfig) -> None:
    """Refuse, at start, what the RL stage's distributed path does not support."""
    hw, algo = cfg.hardware, cfg.algo
    world = hw.devices * hw.num_nodes if isinstance(hw.devices, int) else None
    if hw.strategy == "ddp":
        raise HardwareError(
            f"algo={algo.name} trains with several backward passes per step, which DDP's "
            "reducer does not allow: use hardware.strategy=fsdp"
        )
    if world and world > 1:
        for key in ("rollout_batch_size", "minibatch_size"):
            if getattr(algo, key) % world:
                raise HardwareError(
                    f"algo.{key}={getattr(algo, key)} must be divisible by the "
                    f"{world} data-parallel ranks of hardware={hw.name}"
                )
        if algo.prompts_per_step % world:  # groups stay whole on one rank
            n = algo.samples_per_prompt
            fit = n * world * -(-algo.prompts_per_step // world)  # the next batch that fits
            raise HardwareError(
                f"algo.rollout_batch_size / algo.samples_per_prompt = {algo.prompts_per_step} "
                f"prompts per step must be divisible by the {world} data-parallel ranks of "
                f"hardware={hw.name} (each rank samples whole groups of {n}): use "
                f"algo.rollout_batch_size={fit}"
            )


def reward_model_for_ppo(rc: RunContext, algo: RLConfig, summary: Summary) -> Path:
    """The exported reward model PPO scores with: given, left by an earlier try, or trained now."""
    if algo.reward_model is not None:
        return _given(algo.reward_model, "algo.reward_model")
    return _trained(rc, algo, summary)


def _given(path: str, key: str) -> Path:
    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"{key}={path}: no exported model (config.json) there")
    return Path(path)


def _trained(rc: RunContext, algo: RLConfig, summary: Summary, name=None, subset=None) -> Path:
    """This run's reward model ``name`` (None: the one of ``reward_model/``): the export an
    earlier try of the run finished, or trained now."""
    path = rundir.reward_model_dir(rc.run_dir, name)
    if (path / rundir.REWARD_STATS).exists():  # resuming a run whose RM stage finished
        log.info("Reusing the reward model in %s", path)
        return path
    return train_reward_model(rc, algo.rm, summary, name=name, subset=subset)


def reward_paths(rc: RunContext, algo: RLConfig, summary: Summary) -> dict[str, Path]:
    """name -> the exported reward model of each entry of ``algo.rewards`` (given, or trained in
    this run on its subset); ``{"reward": ...}`` for a run with one reward model."""
    if not algo.rewards:
        return {"reward": reward_model_for_ppo(rc, algo, summary)}
    if algo.reward_model is not None:
        log.warning(
            "algo.rewards names the reward models RL optimises; algo.reward_model=%s is not used",
            algo.reward_model,
        )
    return {  # the paths and their subsets were checked at start (mplus.preflight)
        name: Path(spec.path)
        if spec.path is not None
        else _trained(rc, algo, summary, name, spec.subset)
        for name, spec in algo.rewards.items()
    }


def reward_set(rc: RunContext, algo: RLConfig, paths: dict[str, Path]):
    """The :class:`mplus.models.reward.RewardSet` of ``paths`` (frozen models) with the run's
    weights, normalisation, clip and constraint cost."""
    from mplus.models.reward import RewardSet, read_reward_stats

    weights = {n: algo.rewards[n].weight for n in paths} if algo.rewards else {"reward": 1.0}
    return RewardSet(
        {n: rc.scalar_model(p, trainable=False) for n, p in paths.items()},
        {n: read_reward_stats(p) for n, p in paths.items()},
        weights,
        normalize=algo.reward.normalize,
        clip=algo.reward.clip,
        cost=algo.constraint.cost if algo.constraint.enabled else None,
    )


def run(rc: RunContext, summary: Summary) -> None:
    """RL from the base; exports ``<run dir>/policy/``; adds rl/* start/end metrics."""
    from mplus.models.builders import disable_dropout
    from mplus.models.value import ValueModel
    from mplus.modules.ppo import PPOCheckpoint, PPOModule
    from mplus.modules.progress import StageProgress

    cfg, algo = rc.cfg, rc.cfg.algo
    stage, P = algo.name, METRIC_PREFIX
    rm_paths = reward_paths(rc, algo, summary)
    if algo.steps <= algo.warmup_steps:
        log.warning(
            "algo.steps=%d <= algo.warmup_steps=%d: the whole run is learning-rate "
            "warmup and never reaches algo.policy_lr",
            algo.steps,
            algo.warmup_steps,
        )
    t0 = time.time()
    seed_stage(cfg, stage)
    policy = rc.policy()
    ref = rc.reference()
    rewards = reward_set(rc, algo, rm_paths)
    value = None
    if algo.critic:  # critic-free estimators build no value model at all
        first = next(iter(rm_paths.values()))  # the first of several reward models
        value_src = first if algo.value_source == "reward_model" else None  # None: the base
        value = ValueModel(rc.scalar_model(value_src, trainable=True))
    for m in (policy, ref, *rewards.models.values(), value):  # on-policy: the rollout's model
        if m is not None:
            disable_dropout(m)

    g = algo.generation
    engine = rollout_engine(  # algo.rollout.engine: hf | vllm (built on its first generate)
        rc,
        max_new_tokens=g.max_new_tokens,
        temperature=0.0 if g.greedy else g.temperature,
        top_p=g.top_p,
        top_k=g.top_k,
        stop_strings=tuple(g.stop_strings),
        max_prompt_length=g.max_prompt_length,
    )
    start_file = rc.run_dir / rundir.rl_start_file(stage)
    ckpt = stage_checkpoint(cfg, stage)
    resumed = ckpt is not None and start_file.exists()

    def start_eval(m):  # before the first step, with the models set up (sharded, on device)
        out = heldout_eval(
            rc,
            m.policy,
            ref_model=m.ref_model,
            reward_model=m.rewards,
            title=f"before {stage_label(stage)}",
        )
        if D.is_rank_zero():
            start_file.write_text(json.dumps(out))
        return out

    module = PPOModule(
        policy=policy,
        value_model=value,
        ref_model=ref,
        rewards=rewards,
        tokenizer=rc.tokenizer,
        engine=engine,
        cfg=algo,
        prompts=rc.data.prompts,
        gold_fn=rc.data.gold_fn,
        seed=cfg.seed,
        start_eval=None if resumed or not cfg.evaluation.enabled else start_eval,
    )
    sharded(module, cfg)

    # The module stops the fit after ``algo.steps`` PPO steps (its own counter); epochs over the
    # step loader are unbounded, so a finished run resumed with a larger algo.steps goes on.
    trainer = make_trainer(
        cfg,
        stage,
        max_steps=-1,
        max_epochs=-1,
        callbacks=[
            PPOCheckpoint(rundir.checkpoint_dir(rc.run_dir, stage), algo.ckpt_every),
            rng_state_callback(),
        ],
        summary=summary,
        progress=StageProgress(stage_label(stage), algo.steps, counter="ppo_step"),
        self_logged=True,
    )
    steps = torch.utils.data.DataLoader(torch.arange(algo.steps), batch_size=1)
    if ckpt:
        log.info("Resuming the %s stage from %s", stage, ckpt)
    trainer.fit(module, steps, ckpt_path=ckpt, weights_only=True)
    start = module.start_metrics or (
        json.loads(start_file.read_text()) if start_file.exists() else {}
    )
    end = heldout_eval(
        rc,
        module.policy,
        ref_model=module.ref_model,
        reward_model=module.rewards,
        title=f"after {stage_label(stage)}",
        summary=summary,
        logger=trainer.loggers,
        step=module.ppo_step,
    )
    for k, v in start.items():
        summary[f"{P}/{k}_start"] = v
    for k, v in end.items():
        summary[f"{P}/{k}_end"] = v
    summary[f"{P}/steps"] = module.ppo_step
    close_vllm_backend(rc)
    summary[f"time/{stage}_s"] = round(time.time() - t0, 1)
    export_policy(rc, module.policy, summary)
    summary.save()


for _name in RL_ALGOS:
    register(_name, check=check_plan)(run)
