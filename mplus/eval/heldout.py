"""One held-out evaluation for every policy (base, SFT, DPO, PPO) on the same prompts.

Fixed-seed sampling on ``data.num_eval_prompts`` held-out prompts, then: mean reward-model score
(when a reward model is given), mean gold reward (synthetic task), mean response length, stop
rate, KL(policy || base) on those samples, the per-behaviour rates of the samples (synthetic
task: :func:`mplus.data.synthetic.behaviour_rates`; on HH data the mean reward-model score per
subset of the prompts, ``reward_harmless-base``, ...), and two probes of what the base knew:

* **knowledge** (synthetic task; the general-capability number): facts the base learnt in
  pretraining that no preference pair, SFT target or RL prompt holds
  (:func:`mplus.data.synthetic.knowledge_items`). ``knowledge_acc``: share of questions where
  the correct completion has the highest log-likelihood among its table's values;
  ``knowledge_nll``: per-token NLL of the correct completion given the prefix.
* **corpus** (distance to the base on its own text): per-token NLL of held-out
  pretraining-style transcripts (the synthetic corpus; held-out chosen transcripts for HH),
  ``corpus_nll``. The synthetic corpus mixes every behaviour, so a policy that learns to refuse
  scores worse on it by design: with a gold function the transcripts are split by their final
  response (gold >= ``GOOD_GOLD``: good, else bad), whole transcript and final response only
  (``corpus_nll_good``, ``corpus_nll_bad``, ``corpus_nll_good_response``,
  ``corpus_nll_bad_response``).
"""

from __future__ import annotations

import random

import torch

from mplus import algo as A
from mplus.models.logprobs import (
    identical_weights,
    label_mask,
    reference_context,
    rollout_logprobs,
    token_logprobs,
)
from mplus.models.reward import score_texts

GOOD_GOLD = 0.8  # a corpus transcript is "good" when its final response scores at least this
ASSISTANT = "\n\nAssistant:"
# metrics of the probes (the rest come from the samples)
PROBE_METRICS = (
    "knowledge_acc",
    "knowledge_nll",
    "corpus_nll",
    "corpus_nll_good",
    "corpus_nll_bad",
    "corpus_nll_good_response",
    "corpus_nll_bad_response",
)


@torch.no_grad()
def _nll_sums(
    model, tokenizer, prompts: list[str], responses: list[str], *, eos: bool, batch_size: int
) -> list[tuple[float, int, float, int]]:
    """Per row of ``prompt + response`` (+ EOS): (NLL summed over every label, their count, NLL
    summed over the response labels, their count), by the one text -> ids rule."""
    from mplus.data.collate import pad_right
    from mplus.models.tokenizer import encode_pairs

    device = next(model.parameters()).device
    all_seqs, all_lens = encode_pairs(tokenizer, list(prompts), list(responses), eos=eos)
    # batches of similar lengths (longest first), so a batch pads to little more than its rows
    order = sorted(range(len(all_seqs)), key=lambda i: -len(all_seqs[i]))
    out: list = [None] * len(all_seqs)
    for i in range(0, len(order), batch_size):
        picked = order[i : i + batch_size]
        seqs = [all_seqs[k] for k in picked]
        ids, mask = pad_right(seqs, tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        nll = -token_logprobs(model, ids, mask)[0]  # (B, T - 1)
        whole = label_mask(mask)
        resp = label_mask(mask, torch.tensor([all_lens[k] for k in picked], device=device))
        for row, k in enumerate(picked):
            out[k] = (
                float(A.masked_sum(nll[row], whole[row])),
                int(whole[row].sum()),
                float(A.masked_sum(nll[row], resp[row])),
                int(resp[row].sum()),
            )
    return out


def _split_transcript(text: str) -> tuple[str, str]:
    """``(prompt, final response)``: the prompt ends with the last ``"\\n\\nAssistant:"``."""
    cut = text.rfind(ASSISTANT)
    return (text, "") if cut < 0 else (text[: cut + len(ASSISTANT)], text[cut + len(ASSISTANT) :])


def corpus_nll(model, tokenizer, texts: list[str], batch_size: int = 32) -> float:
    """Mean per-token negative log-likelihood of ``texts`` (each + EOS) under ``model``."""
    return corpus_probe(model, tokenizer, texts, batch_size=batch_size)["corpus_nll"]


def corpus_probe(
    model, tokenizer, texts: list[str], gold_fn=None, batch_size: int = 32
) -> dict[str, float]:
    """``corpus_nll`` of ``texts`` (each + EOS, per token over all of them) and, with
    ``gold_fn(prompt, response)``, the same over the good transcripts (final response gold >=
    ``GOOD_GOLD``) and the bad ones, whole (``corpus_nll_good`` / ``_bad``) and over the final
    response and its EOS only (``corpus_nll_good_response`` / ``_bad_response``); a split with
    no transcript is NaN."""
    prompts, responses = zip(*map(_split_transcript, texts), strict=True) if texts else ((), ())
    rows = _nll_sums(
        model, tokenizer, list(prompts), list(responses), eos=True, batch_size=batch_size
    )

    def mean(picked, resp: bool = False) -> float:
        k = 2 if resp else 0
        n = sum(r[k + 1] for r in picked)
        return sum(r[k] for r in picked) / n if n else float("nan")

    out = {"corpus_nll": mean(rows)}
    if gold_fn is not None:
        good = [gold_fn(p, r) >= GOOD_GOLD for p, r in zip(prompts, responses, strict=True)]
        for name, want in (("good", True), ("bad", False)):
            picked = [r for r, g in zip(rows, good, strict=True) if g == want]
            out[f"corpus_nll_{name}"] = mean(picked)
            out[f"corpus_nll_{name}_response"] = mean(picked, resp=True)
    return out


def knowledge_probe(model, tokenizer, items, batch_size: int = 64) -> dict[str, float]:
    """Knowledge accuracy and NLL on ``items`` (:class:`mplus.data.synthetic.KnowledgeItem`:
    ``prefix``, ``answer``, ``candidates``).

    Every candidate completion is scored by its summed log-likelihood given the prefix (no EOS).

    Returns:
        ``knowledge_acc``: share of items whose answer scores strictly highest among its
        candidates; ``knowledge_nll``: per-token NLL of the answers' tokens given their prefixes.
    """
    if not items:
        return {}
    flat = [(it.prefix, c) for it in items for c in it.candidates]
    rows = _nll_sums(
        model, tokenizer, [p for p, _ in flat], [c for _, c in flat], eos=False,
        batch_size=batch_size,
    )  # fmt: skip
    correct, nll, tokens, k = 0, 0.0, 0, 0
    for it in items:
        mine = rows[k : k + len(it.candidates)]  # this item's candidates, in order
        k += len(it.candidates)
        i = it.candidates.index(it.answer)
        correct += all(r[2] > mine[i][2] for j, r in enumerate(mine) if j != i)
        nll += mine[i][2]
        tokens += mine[i][3]
    return {"knowledge_acc": correct / len(items), "knowledge_nll": nll / max(tokens, 1)}


def subset_means(
    name: str, prompts: list[str], scores: list[float], subsets: dict[str, str]
) -> dict[str, float]:
    """``{"<name>_<subset>": mean score}`` over the prompts of each subset (``subsets`` maps a
    prompt to its subset, e.g. ``harmless-base``; prompts it does not name are left out)."""
    by: dict[str, list[float]] = {}
    for prompt, score in zip(prompts, scores, strict=True):
        if prompt in subsets:
            by.setdefault(subsets[prompt], []).append(float(score))
    return {f"{name}_{k}": sum(v) / len(v) for k, v in sorted(by.items())}


def reward_scores(reward_model, tokenizer, prompts, responses) -> tuple[torch.Tensor, dict]:
    """(N,) scores of the samples and the per-model means: a reward model's raw scores (a
    plain run's one model, a bare model or a one-model RewardSet), or, for several
    (a :class:`mplus.models.reward.RewardSet`), their objective (the weighted sum of normalised
    scores the RL stage maximises) with ``reward_<name>`` (each raw mean) and, with a
    constraint, ``cost`` (the mean cost of the samples)."""
    from mplus.models.reward import RewardSet

    if not isinstance(reward_model, RewardSet):
        return score_texts(reward_model, tokenizer, prompts, responses), {}
    raw = reward_model.raw(tokenizer, prompts, responses)
    if reward_model.single:
        return next(iter(raw.values())), {}
    z = reward_model.normalized(raw)
    out = {f"reward_{n}": float(r.mean()) for n, r in raw.items()}
    cost = reward_model.cost(z)
    if cost is not None:
        out["cost"] = float(cost.mean())
    return reward_model.objective(z), out


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
    knowledge=None,
    behaviour_fn=None,
    prompt_subsets=None,
    seed: int = 0,
) -> dict:
    """Held-out numbers for one policy; keys without the ``heldout/`` prefix.

    Returns:
        ``reward`` (raw RM score), ``gold_reward``, ``response_length`` (tokens), ``stop_rate``,
        ``kl`` (per-sequence sum of ``log p - log p_base`` over sampled tokens: an unbiased
        estimate of KL(policy || base) at temperature 1; 0 with no forward pass while the
        policy's weights are the reference's, :func:`mplus.models.logprobs.identical_weights`);
        with ``behaviour_fn(prompts, responses) -> {name: rate}`` its rates of the samples
        (``harmful_refusal``, ...); with ``knowledge`` (probe items) ``knowledge_acc`` and ``knowledge_nll``; with ``probe_texts``
        ``corpus_nll`` (and its good/bad splits when ``gold_fn`` is given); with a reward model
        and ``prompt_subsets`` ({prompt: subset}, HH data) ``reward_<subset>``, the mean RM score
        per subset (:func:`subset_means`); with several reward models (``reward_model`` a
        :class:`mplus.models.reward.RewardSet`, :func:`reward_scores`) ``reward`` is their
        objective and ``reward_<name>`` each one's raw mean (``cost`` with a constraint); plus
        ``samples`` (prompt, response, gold-or-RM score) for logs.
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
        scores, per_model = reward_scores(reward_model, tokenizer, ro.prompts, ro.responses)
        out["reward"] = float(scores.mean())
        out.update(per_model)
        if prompt_subsets:
            out.update(subset_means("reward", ro.prompts, scores.tolist(), prompt_subsets))
    if gold_fn is not None:
        scores = torch.tensor(
            [gold_fn(p, r) for p, r in zip(ro.prompts, ro.responses, strict=True)]
        )
        out["gold_reward"] = float(scores.mean())
    ref, ctx = reference_context(policy, ref_model)
    if ref is None or (ref_model is not None and identical_weights(policy, ref_model)):
        out["kl"] = 0.0  # no reference, or the policy is still the reference (before RL)
    else:
        seq, attn, pos = ro.sequence_ids(), ro.sequence_mask(), ro.position_ids()
        q_len = ro.query_ids.shape[1]
        lp, _ = rollout_logprobs(policy, seq, attn, pos, q_len)
        with ctx:
            ref_lp, _ = rollout_logprobs(ref, seq, attn, pos, q_len)
        out["kl"] = float(((lp - ref_lp) * ro.response_mask).sum(1).mean())
    if behaviour_fn is not None:
        out.update(behaviour_fn(ro.prompts, ro.responses))
    if knowledge:
        out.update(knowledge_probe(policy, tokenizer, knowledge))
    if probe_texts:
        out.update(corpus_probe(policy, tokenizer, probe_texts, gold_fn=gold_fn))
    score_list = scores.tolist() if scores is not None else [float("nan")] * len(ro.prompts)
    out["samples"] = list(zip(ro.prompts, ro.responses, score_list, strict=True))
    policy.train(was_training)
    return out
