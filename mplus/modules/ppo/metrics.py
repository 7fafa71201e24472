"""The per-step metrics and text samples of :class:`mplus.modules.ppo.PPOModule` (a mixin)."""

from __future__ import annotations

import torch

from mplus import algo as A
from mplus import distributed as D
from mplus.modules.ppo.parts import Experience


class PPOLoggingMixin:
    """:meth:`log_step` and :meth:`_log_samples`, for :class:`mplus.modules.ppo.PPOModule`."""

    # ------------------------------------------------------------ logging

    def log_step(self, ro, scores, exp: Experience, stats: dict, seconds: float) -> None:
        m = {
            "ppo/reward_mean": scores["rm_raw"].mean(),
            "ppo/score_mean": scores["score"].mean(),
            "ppo/kl": scores["kl_seq_mean"],
            "ppo/kl_coef": self.kl_ctl.value,
            "ppo/entropy": stats["entropy"],
            "ppo/policy_loss": stats["policy_loss"],
            "ppo/value_loss": stats["value_loss"],
            "ppo/clipfrac": stats["clipfrac"],
            "ppo/value_clipfrac": stats["value_clipfrac"],
            "ppo/approx_kl": stats["approx_kl"],
            "ppo/explained_variance": A.explained_variance(
                exp.values, exp.returns, exp.mask, reduce=D.all_reduce_sum
            ),
            "ppo/advantage_mean": scores["advantage_mean_raw"],
            "ppo/response_length_mean": scores["lengths"].float().mean(),
            "ppo/stop_rate": scores["stopped"].float().mean(),
            "ppo/length_penalty_mean": scores["length_penalty"].mean(),
            "ppo/lr": self.optimizers()[0].param_groups[0]["lr"],
            "perf/rollout_tokens_per_s": ro.tokens_per_s,
            "perf/step_s": seconds,
            "perf/train_tokens_per_s": stats["train_tokens_per_s"],
        }
        if torch.cuda.is_available():
            m["perf/peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if "gold" in scores:
            m["ppo/gold_reward_mean"] = scores["gold"].mean()
        m = {k: float(v) for k, v in m.items()}
        if D.is_distributed():  # per-rank means of equal-sized slices -> means over all ranks
            keys = [k for k in m if k not in _GLOBAL_METRICS]
            avg = D.all_reduce_sum(torch.tensor([m[k] for k in keys], dtype=torch.float64))
            m.update({k: float(v) / D.world_size() for k, v in zip(keys, avg, strict=True)})
            for k in ("perf/rollout_tokens_per_s", "perf/train_tokens_per_s"):
                m[k] *= D.world_size()  # all ranks together
        if self.logger is not None:
            self.logger.log_metrics(m, step=self.ppo_step)
            if self.cfg.sample_every and self.ppo_step % self.cfg.sample_every == 0:
                self._log_samples(ro, scores)
        self.log_dict(
            {
                "reward": m["ppo/reward_mean"],
                "kl": m["ppo/kl"],
                **({"gold": m["ppo/gold_reward_mean"]} if "gold" in scores else {}),
            },
            prog_bar=True,
            logger=False,
            on_step=True,
        )

    def _log_samples(self, ro, scores, k: int = 4) -> None:
        rows = ["| prompt | response | reward |", "|---|---|---|"]
        for i in range(min(k, len(ro.prompts))):
            p = ro.prompts[i][-120:].replace("\n", "\\n").replace("|", "/")
            r = ro.responses[i].replace("\n", "\\n").replace("|", "/")
            rows.append(f"| {p} | {r} | {float(scores['rm_raw'][i]):.2f} |")
        self.logger.experiment.add_text("ppo/samples", "\n".join(rows), self.ppo_step)


# metrics that are the same on every rank already (computed from all-rank statistics)
_GLOBAL_METRICS = frozenset(
    {"ppo/kl", "ppo/kl_coef", "ppo/advantage_mean", "ppo/lr", "ppo/explained_variance"}
)
