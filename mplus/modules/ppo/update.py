"""The update phase of :class:`mplus.modules.ppo.PPOModule`: ``ppo_epochs`` passes over shuffled
minibatches, with the NaN/inf checks around each optimiser step (a mixin of the module)."""

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
        opt_p, opt_v = self.optimizers()
        self.policy.train()
        self.value_model.train()
        g = torch.Generator().manual_seed(self.seed * 7919 + self.ppo_step)
        n = exp.seq.shape[0]
        acc: dict[str, list[float]] = {}
        n_mb = 0
        for _ in range(c.ppo_epochs):
            for idx in torch.randperm(n, generator=g).split(c.minibatch_size // D.world_size()):
                idx = idx.to(self.device)
                st = self._minibatch_step(exp, idx)
                for k, v in st.items():
                    acc.setdefault(k, []).append(v)
                n_mb += 1
                if n_mb % c.grad_accum == 0:
                    for name, opt in (("policy", opt_p), ("value", opt_v)):
                        params = optimizer_params(opt)
                        if not uses_grad_scaler(self.trainer):  # 16-mixed skips inf steps itself
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
                        self._check_finite(
                            params,
                            name,
                            "parameters",
                            "the optimiser step made them so; stopping before they are saved",
                        )
        for sch in self.lr_schedulers():
            sch.step()
        return {k: sum(v) / len(v) for k, v in acc.items()}

    def _check_finite(self, tensors, model: str, what: str, after: str) -> None:
        """Stop at the first NaN/inf gradient (before the step) or parameter (after it)."""
        bad, total = count_nonfinite(tensors)
        if not bad:
            return
        step, key = self.ppo_step + 1, f"{model}_lr"
        advice = divergence_advice(
            None if self.saved_step is None else f"after PPO step {self.saved_step}",
            f"start again with a lower algo.{key} (now {getattr(self.cfg, key):g}) or check "
            "the rewards",
            stage_checkpoint_path(self.trainer, "ppo"),
        )
        raise TrainingDiverged(
            f"ppo: the {model} {what} are non-finite (NaN/inf in {bad} of {total} tensors) in "
            f"PPO step {step}: {after}. {advice}",
            step=step,
        )

    def _minibatch_step(self, exp: Experience, idx) -> dict:
        c = self.cfg
        mask = exp.mask[idx]
        share = D.token_share(mask)  # this rank's part of the global token mean (1 alone)
        logp, logits = self._logprobs(
            self.policy, exp.seq[idx], exp.attn[idx], exp.pos[idx], exp.q_len
        )
        pl = A.policy_loss(
            logp, exp.old_logprobs[idx], exp.advantages[idx], mask, c.clip_eps, c.dual_clip
        )
        entropy = A.masked_mean(A.entropy_from_logits(logits), mask)
        loss = pl.loss - c.entropy_coef * entropy
        if not c.kl.in_reward:
            kl = A.masked_mean(A.kl_estimate(logp, exp.ref_logprobs[idx], c.kl.estimator), mask)
            loss = loss + self.kl_ctl.value * kl
        check_finite(loss, "ppo/policy_loss", self.ppo_step + 1)  # the step it logs at
        self.manual_backward(loss * share / c.grad_accum)

        v = self.value_model(exp.seq[idx], exp.attn[idx], exp.pos[idx])[:, exp.q_len - 1 : -1]
        vl = A.value_loss(v, exp.values[idx], exp.returns[idx], mask, c.value_clip_eps)
        check_finite(vl.loss, "ppo/value_loss", self.ppo_step + 1)
        self.manual_backward(vl.loss * share / c.grad_accum)
        # weighted by the token share, so their mean over ranks is the global token mean
        w = float(share)
        return {
            "policy_loss": float(pl.loss.detach()) * w,
            "value_loss": float(vl.loss.detach()) * w,
            "clipfrac": float(pl.clipfrac) * w,
            "approx_kl": float(pl.approx_kl) * w,
            "entropy": float(entropy.detach()) * w,
            "value_clipfrac": float(vl.clipfrac) * w,
        }
