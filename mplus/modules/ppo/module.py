"""RL from the base model: one ``training_step`` is one iteration of PPO, GRPO, RLOO or
REINFORCE++ (one module; they differ in the advantage estimator, ``mplus.algo.advantages``).

rollout -> score -> advantages -> update -> log, each a method below; the math is in
:mod:`mplus.algo`. Manual optimisation with one optimiser per trained model (policy, and the value
model when the estimator has a critic); the frozen reference and reward models are not saved in
checkpoints (they are rebuilt from their paths on resume).
"""

from __future__ import annotations

import random
import time

import lightning as L
import torch

from mplus import algo as A
from mplus import distributed as D
from mplus import rundir
from mplus.models.logprobs import by_query_length, reference_context, rollout_logprobs
from mplus.modules.optim import adamw_with_warmup
from mplus.modules.ppo.metrics import PPOLoggingMixin
from mplus.modules.ppo.parts import Experience, _seed_all
from mplus.modules.ppo.update import PPOUpdateMixin
from mplus.modules.sharding import ShardedModule
from mplus.rollout.keyed import sample_key

FROZEN_PREFIXES = ("ref_model.", "reward_models.")


class PPOModule(PPOUpdateMixin, PPOLoggingMixin, ShardedModule, L.LightningModule):
    """A policy trained against a frozen reward model with a KL leash to the base: PPO (GAE with
    a value model) or a critic-free estimator (GRPO, RLOO, REINFORCE++), per
    ``cfg.advantage.estimator``.

    Args:
        policy: causal LM (optionally a peft model: the reference is then the policy with its
            adapter disabled and ``ref_model`` is None).
        value_model: :class:`mplus.models.value.ValueModel` with a critic (``cfg.critic``), else
            None: no value model is built, sharded, optimised or checkpointed.
        ref_model: frozen copy of the base, or None with LoRA.
        rewards: the frozen reward model(s) and how their scores combine
            (:class:`mplus.models.reward.RewardSet`; one model named ``reward`` in a plain run).
            With a cost (``cfg.constraint``), a Lagrange multiplier weighs it against the
            objective, updated every step and kept in checkpoints.
        engine: a :class:`mplus.rollout.RolloutEngine`.
        prompts: the prompt pool; step ``k`` draws its ``cfg.prompts_per_step`` prompts from it
            by ``(seed, k)`` and samples each ``cfg.samples_per_prompt`` times (one group).
        gold_fn: ground-truth reward (synthetic task) or None.

    Data parallel (``hardware.strategy=fsdp``): ``rollout_batch_size`` and ``minibatch_size`` are
    global; each rank generates for its slice of the step's prompts (whole groups: prompts are
    split before they are repeated, so group statistics never cross ranks), advantages are
    whitened and metrics averaged over all ranks' rollouts, and the losses are this rank's share
    of the global aggregate, so the averaged gradient is that of one process holding the whole
    batch. Trained models are sharded; the reference and reward model are sharded (or
    offloaded) and frozen.
    """

    def __init__(
        self,
        *,
        policy,
        value_model,
        ref_model,
        rewards,
        tokenizer,
        engine,
        cfg,
        prompts: list[str],
        gold_fn=None,
        seed: int = 0,
        start_eval=None,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.strict_loading = False  # frozen models are dropped from checkpoints
        if (value_model is not None) != cfg.critic:
            raise ValueError(
                f"advantage.estimator={cfg.advantage.estimator} "
                + ("needs a value model" if cfg.critic else "trains no value model")
            )
        self.policy, self.value_model = policy, value_model
        self.estimator = A.get_estimator(cfg.advantage.estimator)
        self.ref_model, self.rewards = ref_model, rewards
        # registered here, so sharding, device moves and the frozen-key filter see them
        self.reward_models = rewards.models if rewards is not None else None
        for m in (ref_model, self.reward_models):
            if m is not None:
                m.eval().requires_grad_(False)
        self.tokenizer, self.engine, self.cfg = tokenizer, engine, cfg
        self.prompts, self.gold_fn, self.seed = prompts, gold_fn, seed
        k = cfg.constraint
        self.lagrange = (
            A.LagrangeMultiplier(k.lambda_init, k.lambda_lr, k.threshold, k.lambda_max, k.window)
            if k.enabled
            else None
        )
        self.kl_ctl = (
            A.AdaptiveKLController(cfg.kl.coef, cfg.kl.target, cfg.kl.horizon)
            if cfg.kl.controller == "adaptive"
            else A.FixedKLController(cfg.kl.coef)
        )
        self.ppo_step = 0
        self.fuse_first_minibatch = True  # see fuses_first_minibatch (tests turn it off)
        self._dropout_free: bool | None = None  # read on the first step
        self.saved_step: int | None = None  # ppo_step of the last checkpoint written or resumed
        self.stepped = False  # whether the last training_step ran a PPO iteration
        # sampling and log-probs at the same temperature (> 0: the config refuses greedy RL)
        self.temperature = cfg.generation.temperature
        if not self.temperature > 0:
            raise ValueError(f"algo.generation.temperature must be > 0, got {self.temperature}")
        # called once before the first PPO step, with the models set up (sharded, on device)
        self.start_eval, self.start_metrics = start_eval, None

    @property
    def next_log_step(self) -> int:
        """The TensorBoard step the next PPO step logs at (step k logs at k, from 1)."""
        return self.ppo_step + 1

    def on_train_start(self) -> None:
        if self.start_eval is not None and self.ppo_step == 0:
            self.start_metrics = self.start_eval(self)

    @property
    def state_key(self) -> str:
        """The checkpoint entry of this stage's own state (``mplus_ppo``, ``mplus_grpo``, ...)."""
        return rundir.rl_state_key(self.cfg.name)

    def models_to_shard(self):
        return [
            (self.policy, True),
            *([(self.value_model, True)] if self.value_model is not None else []),
            (self.ref_model, False),
            *((m, False) for m in (self.reward_models or {}).values()),
        ]

    # ------------------------------------------------------------ the step

    def training_step(self, batch, batch_idx):
        # The step comes from the module's own counter, not the batch: Lightning restarts a
        # non-resumable loader from its first batch on resume, with its batch count restored.
        self.stepped = False
        if self.ppo_step >= self.cfg.steps:
            self.trainer.should_stop = True
            return None
        step = self.ppo_step
        t0 = time.time()
        _seed_all(self.seed * 1_000_003 + step)
        prompts, group_ids = self.draw_prompts(step)
        ro = self.rollout(prompts, self.sample_keys(step, group_ids))
        scores = self.score(ro)
        exp = self.advantages(ro, scores, group_ids.to(self.device))
        t_update = time.time()
        stats = self.update(exp)
        # tokens through the trained models per second of update (all epochs)
        stats["train_tokens_per_s"] = (
            exp.seq.numel() * self.cfg.ppo_epochs / max(time.time() - t_update, 1e-9)
        )
        self.kl_ctl.update(scores["kl_seq_mean"], self.cfg.rollout_batch_size)
        self.ppo_step = step + 1
        self.stepped = True
        self.log_step(ro, scores, exp, stats, time.time() - t0)
        if self.ppo_step >= self.cfg.steps:
            self.trainer.should_stop = True
        return None

    def draw_prompts(self, step: int) -> tuple[list[str], torch.Tensor]:
        """This rank's slice of the step's prompts, each repeated ``samples_per_prompt`` times
        in a row, and the group id of every row (the prompt's index in the step's global draw).

        The draw is split over ranks before the repetition, so every group is whole on one rank.
        """
        n = self.cfg.samples_per_prompt
        rng = random.Random(f"{self.seed}-{step}")
        drawn = [
            self.prompts[rng.randrange(len(self.prompts))] for _ in range(self.cfg.prompts_per_step)
        ]
        mine = D.shard_of(list(enumerate(drawn)))
        prompts = [p for _, p in mine for _ in range(n)]
        group_ids = torch.tensor([i for i, _ in mine for _ in range(n)], dtype=torch.long)
        return prompts, group_ids

    def sample_keys(self, step: int, group_ids: torch.Tensor) -> list[int] | None:
        """With ``generation.seed_per_sample``: each row's sampling seed, from (run seed, step,
        prompt, sample index in its group), which no batch split changes; else None."""
        if not self.cfg.generation.seed_per_sample:
            return None
        n = self.cfg.samples_per_prompt  # a group's rows are consecutive (draw_prompts)
        return [sample_key(self.seed, step, g, i % n) for i, g in enumerate(group_ids.tolist())]

    def rollout(self, prompts, keys=None):
        with D.gathered(self.policy):  # one all-gather per rollout phase, not per token
            if keys is None:
                return self.engine.generate(self.policy, prompts)
            return self.engine.generate(self.policy, prompts, keys=keys)

    @torch.no_grad()
    def score(self, ro) -> dict:
        """Reward-model score (normalised, clipped; several models: their weighted sum; with a
        constraint: the Lagrangian of that sum and the cost, after the multiplier's update from
        this batch's costs) minus the length and missing-stop penalties."""
        c = self.cfg
        raw = {
            n: r.to(self.device)
            for n, r in self.rewards.raw(self.tokenizer, ro.prompts, ro.responses).items()
        }
        z = self.rewards.normalized(raw)
        rm = self.rewards.objective(z)
        extra = {f"rm_raw/{n}": r for n, r in raw.items()} if not self.rewards.single else {}
        cost = self.rewards.cost(z)
        if cost is not None:  # Safe-RLHF: lambda from this batch's costs, then the combination
            costs = torch.cat(D.gather_objects(cost.cpu())) if D.is_distributed() else cost
            extra["objective"], extra["cost"] = rm, cost
            extra["lagrange_lambda"] = self.lagrange.update(costs.tolist())
            extra["window_cost"] = self.lagrange.window_cost()
            rm = A.lagrangian_score(rm, cost, extra["lagrange_lambda"])
        lengths = ro.response_lengths.to(self.device)
        lp = A.length_penalty(
            lengths,
            c.generation.max_new_tokens,
            c.length_penalty.coef,
            c.length_penalty.kind,
            c.length_penalty.threshold,
        )
        stopped = ro.stopped.to(self.device)
        ms = c.missing_stop_penalty * (~stopped).float()
        out = {
            **extra,
            # a plain run's raw RM score; several models: the weighted sum of normalised ones
            "rm_raw": raw["reward"] if self.rewards.single else extra.get("objective", rm),
            "rm": rm,
            "length_penalty": lp,
            "missing_stop": ms,
            "score": rm - lp - ms,
            "stopped": stopped,
            "lengths": lengths,
        }
        if self.gold_fn is not None:
            out["gold"] = torch.tensor(
                [self.gold_fn(p, r) for p, r in zip(ro.prompts, ro.responses, strict=True)]
            )
        return out

    def _logprobs(self, model, seq, attn, pos, q_len):
        """Response-token log-probs (B, Tr) and logits, at the sampling temperature."""
        return rollout_logprobs(model, seq, attn, pos, q_len, self.temperature)

    def _values(self, seq, attn, pos, q_len):
        """The value model's (B, Tr) values of the response positions."""
        return by_query_length(
            lambda s, a, p, q: self.value_model(s, a, p)[:, q - 1 : -1], seq, attn, pos, q_len
        )

    def fuses_first_minibatch(self, n_rows: int) -> bool:
        """Whether the first minibatch reuses the log-prob (and value) forward of
        :meth:`advantages`: when one minibatch is the whole local batch, the first update pass
        sees the rollout's weights, so one forward with the graph kept serves both (the old
        log-probs are its detached copy). Not for LoRA under FSDP, where the reference forward
        runs through the same sharded module between that forward and its backward, and not
        with dropout on (the RL stage turns it off; a train-mode forward would then differ from
        the eval-mode old log-probs)."""
        one_minibatch = self.cfg.minibatch_size // D.world_size() >= n_rows
        shared_ref = self.ref_model is None and D.is_distributed()
        if not (self.fuse_first_minibatch and one_minibatch and not shared_ref):
            return False
        if self._dropout_free is None:  # with dropout on, old log-probs must be eval-mode ones
            from mplus.models.builders import has_dropout

            models = [self.policy, self.value_model]
            self._dropout_free = not any(m is not None and has_dropout(m) for m in models)
        return self._dropout_free

    def advantages(self, ro, scores, group_ids: torch.Tensor) -> Experience:
        seq, attn, pos = ro.sequence_ids(), ro.sequence_mask(), ro.position_ids()
        q_len, mask = ro.query_ids.shape[1], ro.response_mask
        fused = self.fuses_first_minibatch(seq.shape[0])
        self.policy.train(fused)  # dropout is off: train and eval forwards are the same
        with torch.set_grad_enabled(fused):
            logp, logits = self._logprobs(self.policy, seq, attn, pos, q_len)
        old_lp = logp.detach()
        values = first_values = None
        if self.value_model is not None:
            self.value_model.train(fused)
            with torch.set_grad_enabled(fused):
                first_values = self._values(seq, attn, pos, q_len)
            values = first_values.detach() * mask
        first = (logp, logits, first_values) if fused else None
        with torch.no_grad():
            return self._advantages(
                ro, scores, group_ids, (seq, attn, pos, q_len), old_lp, values, first
            )

    def _advantages(self, ro, scores, group_ids, batch, old_lp, values, first) -> Experience:
        """The no-grad rest of :meth:`advantages`; ``batch``: its (seq, attn, pos, q_len)."""
        c = self.cfg
        (seq, attn, pos, q_len), mask = batch, ro.response_mask
        ref, ctx = reference_context(self.policy, self.ref_model)
        with ctx:
            ref_lp, _ = self._logprobs(ref, seq, attn, pos, q_len)
        sampled = getattr(ro, "sampler_logprobs", None)
        if sampled is not None:  # the engine's sampling log-probs (vllm) vs the training forward
            diff = (sampled.to(old_lp) - old_lp).abs() * mask
            scores["logprob_diff"] = D.global_mean(diff.sum() / mask.sum().clamp(min=1))
        kl = A.kl_estimate(old_lp, ref_lp, c.kl.estimator) * mask
        kl_coef = self.kl_ctl.value if c.kl.in_reward else 0.0
        rewards = A.token_rewards(scores["score"], kl, mask, kl_coef)
        adv, ret = self.estimator(
            token_rewards=rewards,
            mask=mask,
            values=values,
            group_ids=group_ids,
            gamma=c.gamma,
            lam=c.lam,
            norm_by_std=c.advantage.norm_by_std,
            eps=c.advantage.eps,
            reduce=D.all_reduce_sum,
        )
        # statistics of the whole batch, all ranks (all_reduce_sum is a copy in one process)
        raw = adv  # before any normalisation: gae's whitening is below
        if c.advantage.estimator == "reinforce_pp":
            raw = ret  # the discounted returns, before the estimator whitens them
        elif c.advantage.estimator == "grpo" and c.advantage.norm_by_std:
            raw, _ = self.estimator(
                token_rewards=rewards, mask=mask, group_ids=group_ids, norm_by_std=False
            )  # score - group mean, before the std
        self._advantage_stats(scores, rewards, raw, mask, group_ids)
        if c.whiten:
            adv = A.masked_whiten(adv, mask, reduce=D.all_reduce_sum)
        scores["kl_seq_mean"] = D.global_mean(kl.sum(1).mean())
        # the progress bar's `train kl`: k3 (non-negative, unbiased) whatever algo.kl.estimator
        k3 = kl if c.kl.estimator == "k3" else A.kl_estimate(old_lp, ref_lp, "k3") * mask
        scores["kl_k3_seq_mean"] = D.global_mean(k3.sum(1).mean())
        return Experience(
            seq, attn, pos, q_len, mask, old_lp, ref_lp, values, adv, ret, group_ids, first
        )

    def _advantage_stats(self, scores, rewards, raw, mask, group_ids) -> None:
        """Into ``scores``: the mean/std over all tokens of the advantages before normalisation
        (gae before its whitening, after which the mean is 0 by construction; grpo's
        ``score - group mean`` before the group std; reinforce_pp's discounted returns before
        the batch whitening; rloo's as they are), and per prompt group the reward std and the
        share of groups whose samples all scored the same (GRPO and RLOO learn nothing from
        those)."""
        mean, var = A.masked_moments(raw, mask, reduce=D.all_reduce_sum)
        scores["advantage_mean_raw"], scores["advantage_std_raw"] = float(mean), float(var) ** 0.5
        seq_reward = A.masked_sum(rewards.double(), mask.bool(), dim=1)
        std, constant = A.group_score_stats(seq_reward, group_ids)
        scores["group_reward_std"] = std.float().mean()
        scores["group_zero_std_share"] = constant.float().mean()

    # ------------------------------------------------------------ optimisers and checkpoints

    def configure_optimizers(self):
        c = self.cfg
        out = []
        trained = [(self.policy.parameters(), c.policy_lr)]
        if self.value_model is not None:
            trained.append((self.value_model.parameters(), c.value_lr))
        for params, lr in trained:
            opt, sched = adamw_with_warmup(
                params,
                lr=lr,
                weight_decay=c.weight_decay,
                warmup_steps=c.warmup_steps,
                total_steps=c.steps,
            )
            out.append({"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}})
        return out

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.drop_frozen(checkpoint, FROZEN_PREFIXES)
        self.saved_step = self.ppo_step
        checkpoint[self.state_key] = {
            "ppo_step": self.ppo_step,
            "kl_ctl": self.kl_ctl.state_dict(),
            **({"lagrange": self.lagrange.state_dict()} if self.lagrange is not None else {}),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        st = checkpoint[self.state_key]
        self.ppo_step = self.saved_step = st["ppo_step"]
        self.kl_ctl.load_state_dict(st["kl_ctl"])
        if self.lagrange is not None:
            if "lagrange" not in st:
                raise ValueError(
                    "algo.constraint.enabled=true, but the checkpoint was written without the "
                    "constraint: resume it with the settings it was started with"
                )
            self.lagrange.load_state_dict(st["lagrange"])
        torch.set_rng_state(st["rng"]["torch"])
        random.setstate(st["rng"]["python"])
