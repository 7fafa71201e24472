"""The per-step metrics and text samples of :class:`mplus.modules.ppo.PPOModule` (a mixin).

Every RL algorithm logs the same names under one prefix, ``rl/`` (TensorBoard run
``tb/<algo>/``, and every other logger of the trainer: ``logger=csv|wandb|mlflow``); the value-model ones (``rl/value_loss``, ``rl/value_clipfrac``,
``rl/explained_variance``) only with a critic, the group ones whenever samples_per_prompt > 1,
the behaviour rates (``rl/harmful_refusal``, ``rl/benign_correct``, ...: see
:func:`mplus.data.synthetic.behaviour_rates`) on the synthetic task; with several reward models
(``algo.rewards``) each one's raw mean ``rl/reward_<name>`` (``rl/reward_mean`` is then their
weighted sum of normalised scores); with the safety constraint ``rl/cost``, ``rl/window_cost``,
``rl/cost_threshold``, ``rl/lagrange_lambda`` and ``rl/objective_mean``.
The progress bar shows ``train reward``, ``train kl`` (k3 of the rollout) and ``train gold``.
"""

from __future__ import annotations

import torch

from mplus import algo as A
from mplus import distributed as D
from mplus.loggers import log_metrics_all
from mplus.modules.ppo.parts import Experience

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


class PPOLoggingMixin:
    """:meth:`log_step` and :meth:`_log_samples`, for :class:`mplus.modules.ppo.PPOModule`."""

    # ------------------------------------------------------------ logging

    def log_step(self, ro, scores, exp: Experience, stats: dict, seconds: float) -> None:
        opts = self.optimizers()
        m = {
            "rl/reward_mean": scores["rm_raw"].mean(),
            "rl/score_mean": scores["score"].mean(),
            "rl/kl": scores["kl_seq_mean"],
            "rl/kl_coef": self.kl_ctl.value,
            "rl/entropy": stats["entropy"],
            "rl/policy_loss": stats["policy_loss"],
            "rl/clipfrac": stats["clipfrac"],
            "rl/approx_kl": stats["approx_kl"],
            "rl/advantage_mean": scores["advantage_mean_raw"],
            "rl/advantage_std": scores["advantage_std_raw"],
            "rl/response_length_mean": scores["lengths"].float().mean(),
            "rl/stop_rate": scores["stopped"].float().mean(),
            "rl/length_penalty_mean": scores["length_penalty"].mean(),
            "rl/lr": (opts[0] if isinstance(opts, list) else opts).param_groups[0]["lr"],
            "perf/rollout_tokens_per_s": ro.tokens_per_s,
            "perf/step_s": seconds,
            "perf/train_tokens_per_s": stats["train_tokens_per_s"],
        }
        if exp.values is not None:
            m["rl/value_loss"] = stats["value_loss"]
            m["rl/value_clipfrac"] = stats["value_clipfrac"]
            m["rl/explained_variance"] = A.explained_variance(
                exp.values, exp.returns, exp.mask, reduce=D.all_reduce_sum
            )
        if self.cfg.samples_per_prompt > 1:
            m["rl/group_reward_std"] = scores["group_reward_std"]
            m["rl/group_zero_std_share"] = scores["group_zero_std_share"]
        if torch.cuda.is_available():
            m["perf/peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if "gold" in scores:
            m["rl/gold_reward_mean"] = scores["gold"].mean()
        for k, v in scores.items():  # several reward models (algo.rewards): each one's raw mean
            if k.startswith("rm_raw/"):
                m[f"rl/reward_{k.removeprefix('rm_raw/')}"] = v.mean()
        if "cost" in scores:  # the safety constraint (algo.constraint)
            m["rl/cost"] = scores["cost"].mean()  # this batch's mean
            m["rl/window_cost"] = scores["window_cost"]  # what the multiplier's update saw
            m["rl/cost_threshold"] = self.cfg.constraint.threshold
            m["rl/lagrange_lambda"] = scores["lagrange_lambda"]
            m["rl/objective_mean"] = scores["objective"].mean()
        if "logprob_diff" in scores:  # an engine that reports its sampling log-probs (vllm)
            m["rollout/logprob_diff"] = scores["logprob_diff"]
        m = {k: float(v) for k, v in m.items()}
        if D.is_distributed():  # per-rank means of equal-sized slices -> means over all ranks
            keys = [k for k in m if k not in _GLOBAL_METRICS]
            avg = D.all_reduce_sum(torch.tensor([m[k] for k in keys], dtype=torch.float64))
            m.update({k: float(v) / D.world_size() for k, v in zip(keys, avg, strict=True)})
            for k in ("perf/rollout_tokens_per_s", "perf/train_tokens_per_s"):
                m[k] *= D.world_size()  # all ranks together
        if "gold" in scores:  # the synthetic task: what the rollouts do, per kind of request
            m.update(behaviour_rates_all_ranks(ro.prompts, ro.responses))
        if self.loggers:
            log_metrics_all(self.loggers, m, step=self.ppo_step)  # TensorBoard and logger=...
            if self._sample_step(self.ppo_step):
                self._log_samples(ro, scores)
        # The progress bar / progress lines (mplus.modules.progress), not TensorBoard: numbers of
        # this step's rollout, named train_* so they are not read as held-out ones; the KL shown
        # is the k3 estimate (never negative, unlike rl/kl's default k1 on a small batch).
        self.log_dict(
            {
                "train_reward": m["rl/reward_mean"],
                "train_kl": float(scores["kl_k3_seq_mean"]),
                **({"train_gold": m["rl/gold_reward_mean"]} if "gold" in scores else {}),
            },
            prog_bar=True,
            logger=False,
            on_step=True,
        )

    def _sample_step(self, step: int) -> bool:
        """Samples at the first and the last step, and every ``sample_every`` steps."""
        every = self.cfg.sample_every
        return step == 1 or step >= self.cfg.steps or bool(every and step % every == 0)

    def _log_samples(self, ro, scores, k: int = 4) -> None:
        """A markdown table (TensorBoard's text tab, tag ``rl/samples``; TensorBoard only):
        each row the prompt's last human turn, the response, its RM score and gold score."""
        writer = getattr(self.logger, "experiment", None)
        if not hasattr(writer, "add_text"):
            return
        text = sample_table(ro.prompts, ro.responses, scores, k)
        writer.add_text("rl/samples", text, self.ppo_step)


def behaviour_rates_all_ranks(prompts, responses) -> dict[str, float]:
    """``rl/<rate>`` of :func:`mplus.data.synthetic.behaviour_rates` over every rank's rollouts
    (counts summed over ranks, then divided); a kind of request with no prompt in the step is
    left out (no NaN point on the curve)."""
    from mplus.data.synthetic import behaviour_counts, rates_from_counts

    counts = behaviour_counts(prompts, responses)
    if D.is_distributed():
        total = D.all_reduce_sum(torch.tensor(list(counts.values()), dtype=torch.float64))
        counts = dict(zip(counts, total.tolist(), strict=True))
    return {f"rl/{k}": v for k, v in rates_from_counts(counts).items() if v == v}


def last_human_turn(prompt: str) -> str:
    """The text of the prompt's last ``Human:`` turn, without the ``Assistant:`` cue after it."""
    turn = prompt.rsplit(HUMAN, 1)[-1] if HUMAN in prompt else prompt.removeprefix("Human:")
    turn = turn.rstrip()
    return turn.removesuffix(ASSISTANT.strip()).strip()


def md_cell(text: str) -> str:
    """``text`` as one markdown table cell: ``|`` and HTML escaped, newlines as ``<br>``."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = text.replace("|", "\\|").strip("\n").replace("\n", "<br>")
    return text or " "


def sample_table(prompts, responses, scores, k: int = 4) -> str:
    gold = "gold" in scores
    head = "| prompt (last human turn) | response | RM |" + (" gold |" if gold else "")
    rows = [head, "|---|---|---|" + ("---|" if gold else "")]
    for i in range(min(k, len(prompts))):
        row = f"| {md_cell(last_human_turn(prompts[i]))} | {md_cell(responses[i])} "
        row += f"| {float(scores['rm_raw'][i]):.3f} |"
        if gold:
            row += f" {float(scores['gold'][i]):.3f} |"
        rows.append(row)
    return "\n".join(rows)


# metrics that are the same on every rank already (computed from all-rank statistics)
_GLOBAL_METRICS = frozenset(
    {
        "rl/kl",
        "rl/kl_coef",
        "rl/advantage_mean",
        "rl/advantage_std",
        "rl/lr",
        "rl/explained_variance",
        "rl/lagrange_lambda",
        "rl/window_cost",
        "rl/cost_threshold",
    }
)
