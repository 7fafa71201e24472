"""Preference pairs with their prompt run once: the chosen and the rejected row of a pair share
the prompt's ids (tokenised once, a true prefix of both), so the prompt's forward (and backward)
can be done once per pair and its KV cache continued by both responses. The reward model's
scores (:func:`shared_prefix_scores`) and DPO's response log-probs
(:func:`shared_prefix_logps`) come out as from the whole rows, up to float rounding.
"""

from __future__ import annotations

import inspect

import torch

from mplus.algo import logprobs_from_logits
from mplus.models.reward import last_positions, token_scores


def split_pairs(input_ids, attention_mask, prompt_lens, pad_id: int = 0):
    """A ``PairCollator`` batch (2B rows ``prompt + response``, right-padded, chosen rows then
    rejected rows) as its B prompts, left-padded so that they end in the same column, and its
    2B responses, right-padded: ``(prompt_ids, prompt_mask, response_ids, response_mask)``."""
    n2, t = input_ids.shape
    b = n2 // 2
    lens = prompt_lens.to(input_ids.device)
    tp = int(lens.max())
    col = torch.arange(tp, device=input_ids.device)[None, :] - (tp - lens)[:, None]
    prompt_mask = (col >= 0).long()
    prompt_ids = torch.where(prompt_mask.bool(), input_ids[:b].gather(1, col.clamp(min=0)), pad_id)
    row_len = attention_mask.long().sum(1)
    start = lens.repeat(2)
    tr = int((row_len - start).max())
    col = start[:, None] + torch.arange(tr, device=input_ids.device)[None, :]
    response_mask = (col < row_len[:, None]).long()
    response_ids = torch.where(
        response_mask.bool(), input_ids.gather(1, col.clamp(max=t - 1)), pad_id
    )
    return prompt_ids, prompt_mask, response_ids, response_mask


def cache_kwarg(model) -> str:
    """The name a model's forward takes its KV cache by (and returns it under): ``cache``
    (transformers >= 5.2x) or ``past_key_values`` (before)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(type(base).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def shares_prefix(model, input_ids, prompt_lens) -> bool:
    """Whether a pair batch can run its prompts once: one process (under several, FSDP, whole
    rows), every response has a token, the model keeps a KV cache (no activation checkpointing
    on any of its modules, which turns the cache off, and no sliding window shorter than the
    rows)."""
    from mplus.distributed import is_distributed

    if is_distributed():  # not yet checked under FSDP's sharded forwards: whole rows there
        return False
    if any(getattr(m, "gradient_checkpointing", False) for m in model.modules()):
        return False  # activation checkpointing turns the KV cache off
    window = getattr(getattr(model, "config", None), "sliding_window", None)
    if window is not None and input_ids.shape[1] > window:
        return False
    return bool(prompt_lens.numel()) and int(prompt_lens.max()) < input_ids.shape[1]


def _prompt_then_responses(model, input_ids, attention_mask, prompt_lens, pad_id, head):
    """Run the B prompts (cache on), repeat the cache for the chosen and the rejected rows,
    run the 2B responses on it with each prompt's positions continued. ``head(model, ids,
    mask, positions, **kw)`` runs a forward and returns what the caller reads; it is called
    with ``first=True`` for the prompts. Returns (prompt output, response output, response
    ids, response mask)."""
    prompt_ids, prompt_mask, response_ids, response_mask = split_pairs(
        input_ids, attention_mask, prompt_lens, pad_id
    )
    b = prompt_ids.shape[0]
    name = cache_kwarg(model)
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    first, cache = head(model, prompt_ids, prompt_mask, positions, name, None)
    cache.batch_select_indices(torch.arange(b, device=prompt_ids.device).repeat(2))
    lens = prompt_lens.to(prompt_ids.device).repeat(2)
    positions = lens[:, None] + torch.arange(response_ids.shape[1], device=lens.device)[None, :]
    mask = torch.cat([prompt_mask.repeat(2, 1), response_mask], dim=1)
    rest, _ = head(model, response_ids, mask, positions, name, cache)
    return first, rest, response_ids, response_mask


def _scores_head(model, ids, mask, positions, name, cache):
    if cache is None:  # the prompts: only their cache is read
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        return None, getattr(out, name)
    return token_scores(model, ids, mask, positions, **{name: cache}, use_cache=True), None


def shared_prefix_scores(model, input_ids, attention_mask, prompt_lens, pad_id: int = 0):
    """(2B,) reward-model scores of a ``PairCollator`` batch, each pair's prompt run once: the
    head's output at each row's last response token (its EOS), as
    :func:`mplus.models.reward.sequence_scores` reads it from the whole row. Gradients flow
    into the prompt through the cache. Check :func:`shares_prefix` first."""
    _, scores, _, response_mask = _prompt_then_responses(
        model, input_ids, attention_mask, prompt_lens, pad_id, _scores_head
    )
    return scores.gather(1, last_positions(response_mask)[:, None])[:, 0]


def _logits_head(model, ids, mask, positions, name, cache):
    from mplus.models.logprobs import _takes_logits_to_keep

    kw = {name: cache} if cache is not None else {}
    if cache is None and _takes_logits_to_keep(model):
        kw["logits_to_keep"] = 1  # a prompt's last position predicts the response's first token
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kw)
    return out.logits, getattr(out, name)


def shared_prefix_logps(model, input_ids, attention_mask, prompt_lens, pad_id: int = 0):
    """(2B,) summed log-probs of each row's response tokens (EOS included) of a
    ``PairCollator`` batch, each pair's prompt run once (its last position's logits predict the
    response's first token, the responses' own positions the rest), as
    :func:`mplus.modules.dpo.response_logps` gives them from the whole rows. Check
    :func:`shares_prefix` first."""
    prompt_logits, logits, response_ids, response_mask = _prompt_then_responses(
        model, input_ids, attention_mask, prompt_lens, pad_id, _logits_head
    )
    first = prompt_logits[:, -1:].repeat(2, 1, 1)  # (2B, 1, V): the prompts end in one column
    logits = torch.cat([first, logits[:, :-1]], dim=1)  # position k predicts response token k
    logps = logprobs_from_logits(logits, response_ids)
    return (logps * response_mask).sum(1)
