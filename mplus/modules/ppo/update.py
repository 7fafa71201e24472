"""The update phase of :class:`mplus.modules.ppo.PPOModule`: ``ppo_epochs`` passes over shuffled
minibatches, with the NaN/inf checks around each optimiser step (a mixin of the module). The same
clipped surrogate for every estimator; the value loss only with a critic."""

from __future__ import annotations

import torch

from mplus import algo as A
from mplus import distributed as D
from mplus.modules.optim import (
    TrainingDiverged,
    check_finite,
    count_nonfinite,
    divergence_advice,
    grads_of,
    optimizer_params,
    stage_checkpoint_path,
    uses_grad_scaler,
)
from mplus.modules.ppo.parts import Experience


class PPOUpdateMixin:
    """:meth:`update` and its minibatch step, for :class:`mplus.modules.ppo.PPOModule`."""

    def update(self, exp: Experience) -> dict:
        """``ppo_epochs`` passes over shuffled minibatches; returns mean stats over minibatches."""
        c = self.cfg
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]  # one optimiser without a critic
        named = list(zip(("policy", "value")[: len(opts)], opts, strict=True))
        self.policy.train()
        if self.value_model is not None:
            self.value_model.train()
        g = torch.Generator().manual_seed(self.seed * 7919 + self.ppo_step)
        n = exp.seq.shape[0]
        acc: dict[str, list[float]] = {}
        n_mb = 0
        for _ in range(c.ppo_epochs):
            for idx in torch.randperm(n, generator=g).split(c.minibatch_size // D.world_size()):
                first, exp.first_pass = exp.first_pass, None  # the first minibatch only
                if first is not None:  # the whole batch, in its own order (no (B, T, V) copy)
                    idx = torch.arange(n)
                idx = idx.to(self.device)
                st = self._minibatch_step(exp, idx, first)
                for k, v in st.items():
                    acc.setdefault(k, []).append(v)
                n_mb += 1
                if n_mb % c.grad_accum == 0:
                    for name, opt in named:
                        params = optimizer_params(opt)
                        # 16-mixed skips inf steps itself; checked finite gradients make a
                        # finite step, so the parameters are checked only when they were not
                        # (mplus.modules.optim.FiniteGuard's rule; every checkpoint checks too)
                        grads_checked = not uses_grad_scaler(self.trainer)
                        if grads_checked:
                            self._check_finite(
                                grads_of(params),
                                name,
                                "gradients",
                                "stopped before the optimiser step, the weights are unchanged",
                            )
                        self.clip_gradients(
                            opt,
                            gradient_clip_val=c.grad_clip or None,
                            gradient_clip_algorithm="norm",
                        )
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                        if not grads_checked:
                            self._check_finite(
                                params,
                                name,
                                "parameters",
                                "the optimiser step made them so; stopping before they are saved",
                            )
        schedulers = self.lr_schedulers()
        for sch in schedulers if isinstance(schedulers, list) else [schedulers]:
            sch.step()
        return {k: sum(v) / len(v) for k, v in acc.items()}

    def _check_finite(self, tensors, model: str, what: str, after: str) -> None:
        """Stop at the first NaN/inf gradient (before the step) or parameter (after it)."""
        bad, total = count_nonfinite(tensors)
        if not bad:
            return
        step, key = self.ppo_step + 1, f"{model}_lr"
        advice = divergence_advice(
            None
            if self.saved_step is None
            else f"after {self.cfg.name.upper()} step {self.saved_step}",
            f"start again with a lower algo.{key} (now {getattr(self.cfg, key):g}) or check "
            "the rewards",
            stage_checkpoint_path(self.trainer, self.cfg.name),
        )
        raise TrainingDiverged(
            f"{self.cfg.name}: the {model} {what} are non-finite (NaN/inf in {bad} of {total} "
            f"tensors) in {self.cfg.name.upper()} step {step}: {after}. {advice}",
            step=step,
        )

    def _minibatch_step(self, exp: Experience, idx, first=None) -> dict:
        """One minibatch's losses and backward; ``first``: the whole batch's forward of
        :meth:`advantages` (graph kept; ``idx`` is then every row in order) instead of running
        the models again."""
        c = self.cfg
        mask = exp.mask[idx]
        share = D.token_share(mask)  # this rank's part of the global token mean (1 alone)
        # The policy-side losses are aggregated by algo.loss_agg_mode; across ranks the
        # aggregate's counts are reduced, so each loss is already this rank's share of the
        # global one (one process: reduce=None, bit-identical to the plain token mean).
        agg = {
            "loss_agg_mode": c.loss_agg_mode,
            "reduce": D.all_reduce_sum if D.is_distributed() else None,
            "max_len": c.generation.max_new_tokens,
        }
        if first is not None:
            logp, logits = first[0], first[1]
        else:
            logp, logits = self._logprobs(
                self.policy, exp.seq[idx], exp.attn[idx], exp.pos[idx], exp.q_len
            )
        pl = A.policy_loss(
            logp, exp.old_logprobs[idx], exp.advantages[idx], mask, c.clip_eps, c.dual_clip, **agg
        )
        entropy = A.masked_mean(A.entropy_from_logits(logits), mask)
        loss = pl.loss
        if c.entropy_coef:
            ent_loss = A.aggregate_loss(
                A.entropy_from_logits(logits),
                mask,
                agg["loss_agg_mode"],
                agg["reduce"],
                agg["max_len"],
            )
            loss = loss - c.entropy_coef * ent_loss
        if not c.kl.in_reward:  # KL as a loss term (GRPO: k3), aggregated like the policy loss
            kl = A.kl_estimate(logp, exp.ref_logprobs[idx], c.kl.estimator)
            kl_loss = A.aggregate_loss(
                kl, mask, agg["loss_agg_mode"], agg["reduce"], agg["max_len"]
            )
            loss = loss + self.kl_ctl.value * kl_loss
        check_finite(loss, f"{c.name}/policy_loss", self.ppo_step + 1)  # the step it logs at
        self.manual_backward(loss / c.grad_accum)
        # local token means weighted by the token share, so their mean over ranks is the
        # global token mean; the loss is that share already
        w = float(share)
        out = {
            "policy_loss": float(pl.loss.detach()),
            "clipfrac": float(pl.clipfrac) * w,
            "approx_kl": float(pl.approx_kl) * w,
            "entropy": float(entropy.detach()) * w,
        }
        if self.value_model is None:
            return out
        if first is not None:
            v = first[2]
        else:
            v = self._values(exp.seq[idx], exp.attn[idx], exp.pos[idx], exp.q_len)
        vl = A.value_loss(v, exp.values[idx], exp.returns[idx], mask, c.value_clip_eps)
        check_finite(vl.loss, f"{c.name}/value_loss", self.ppo_step + 1)
        self.manual_backward(vl.loss * share / c.grad_accum)
        out["value_loss"] = float(vl.loss.detach()) * w
        out["value_clipfrac"] = float(vl.clipfrac) * w
        return out
