"""One held-out evaluation for every policy (base, SFT, DPO, PPO) on the same prompts.

Fixed-seed sampling on ``data.num_eval_prompts`` held-out prompts, then: mean reward-model score
(when a reward model is given), mean gold reward (synthetic task), mean response length, stop
rate, KL(policy || base) on those samples, and a general-capability probe: the policy's mean
per-token negative log-likelihood on held-out pretraining-style text (the synthetic corpus for
the embedded default; held-out chosen transcripts for HH). SFT's erosion of what the base knew
shows as a higher ``heldout/probe_nll``.
"""

from __future__ import annotations

import random

import torch

from mplus import algo as A
from mplus.models.logprobs import label_mask, reference_context, token_logprobs
from mplus.models.reward import score_texts


@torch.no_grad()
def probe_nll(model, tokenizer, texts: list[str], batch_size: int = 32) -> float:
    """Mean per-token negative log-likelihood of ``texts`` (each + EOS) under ``model``."""
    from mplus.data.collate import pad_right
    from mplus.models.tokenizer import encode_texts

    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(texts), batch_size):
        ids, mask = pad_right(
            encode_texts(tokenizer, texts[i : i + batch_size]), tokenizer.pad_token_id
        )
        ids, mask = ids.to(device), mask.to(device)
        lp, _ = token_logprobs(model, ids, mask)
        m = label_mask(mask)
        total += float(-A.masked_sum(lp, m))
        count += int(m.sum())
    return total / max(count, 1)


@torch.no_grad()
def evaluate_policy(
    policy,
    tokenizer,
    prompts: list[str],
    engine,
    *,
    ref_model=None,
    reward_model=None,
    gold_fn=None,
    probe_texts=None,
    seed: int = 0,
) -> dict:
    """Held-out numbers for one policy; keys without the ``heldout/`` prefix.

    Returns:
        ``reward`` (raw RM score), ``gold_reward``, ``response_length`` (tokens), ``stop_rate``,
        ``kl`` (per-sequence sum of ``log p - log p_base`` over sampled tokens: an unbiased
        estimate of KL(policy || base) at temperature 1), ``probe_nll``; plus ``samples``
        (prompt, response, gold-or-RM score) for logs.
    """
    was_training = policy.training
    random.seed(seed)
    torch.manual_seed(seed)
    ro = engine.generate(policy, prompts)
    policy.eval()
    out: dict = {
        "response_length": float(ro.response_lengths.float().mean()),
        "stop_rate": float(ro.stopped.float().mean()),
    }
    scores = None
    if reward_model is not None:
        scores = score_texts(reward_model, tokenizer, ro.prompts, ro.responses)
        out["reward"] = float(scores.mean())
    if gold_fn is not None:
        scores = torch.tensor(
            [gold_fn(p, r) for p, r in zip(ro.prompts, ro.responses, strict=True)]
        )
        out["gold_reward"] = float(scores.mean())
    ref, ctx = reference_context(policy, ref_model)
    if ref is None:
        out["kl"] = 0.0
    else:
        seq, attn, pos = ro.sequence_ids(), ro.sequence_mask(), ro.position_ids()
        q_len = ro.query_ids.shape[1]
        lp, _ = token_logprobs(policy, seq, attn, pos, start=q_len - 1)
        with ctx:
            ref_lp, _ = token_logprobs(ref, seq, attn, pos, start=q_len - 1)
        out["kl"] = float(((lp - ref_lp) * ro.response_mask).sum(1).mean())
    if probe_texts:
        out["probe_nll"] = probe_nll(policy, tokenizer, probe_texts)
    score_list = scores.tolist() if scores is not None else [float("nan")] * len(ro.prompts)
    out["samples"] = list(zip(ro.prompts, ro.responses, score_list, strict=True))
    policy.train(was_training)
    return out
