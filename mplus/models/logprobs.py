"""Token log-probs under a causal LM, and the reference model's view of a policy.

One rule for every stage (PPO rollout and update, DPO pairs, the held-out KL and probe NLL): a
forward pass, float32 logits at position t divided by the sampling temperature, scored against
token t + 1 by :func:`mplus.algo.logprobs_from_logits`. A log-prob therefore means the same
thing in training and in evaluation.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from mplus.algo import logprobs_from_logits


def token_logprobs(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor | None = None,
    *,
    start: int = 0,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Log-prob of each token after position ``start`` given the tokens before it.

    Args:
        model: Causal LM whose output has ``.logits`` (B, T, V).
        input_ids: (B, T) token ids.
        attention_mask: (B, T), 1 on real tokens.
        position_ids: (B, T), for left-padded rows (rollouts); None lets the model count from
            the first column (right-padded rows), and is not passed on.
        start: First predicting position: labels are ``input_ids[:, start + 1 :]``. A
            left-padded query of ``q_len`` columns followed by the response takes
            ``start=q_len - 1``, so the result covers the response tokens only.
        temperature: Divides the logits, so log-probs match what sampling at that temperature
            drew (1 leaves them unchanged).

    Returns:
        ``(logprobs, logits)``: (B, T - 1 - start) float32 log-probs and the (B, T - 1 - start, V)
        float32 logits they come from (entropy, with the graph kept for PPO's update).
        Padding positions hold finite junk; mask them downstream.
    """
    extra = {} if position_ids is None else {"position_ids": position_ids}
    keep = input_ids.shape[1] - start
    if start > 0 and _takes_logits_to_keep(model):
        # the LM head only where a label is scored (the response of a rollout): the prompt's
        # (B, Tq, V) logits are never computed; the last position, which predicts nothing,
        # is dropped below like the others
        extra["logits_to_keep"] = keep
    logits = model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
    logits = logits[:, logits.shape[1] - keep : -1].float()
    if temperature != 1.0:  # x / 1 == x exactly: skipping it saves a (B, T, V) copy
        logits = logits / temperature
    return logprobs_from_logits(logits, input_ids[:, start + 1 :]), logits


def rollout_logprobs(model, seq, attn, pos, q_len: int, temperature: float = 1.0):
    """:func:`token_logprobs` of a rollout's responses (``seq``: a left-padded query of ``q_len``
    columns, then the response), run by query length (:func:`by_query_length`)."""
    return by_query_length(
        lambda s, a, p, q: token_logprobs(model, s, a, p, start=q - 1, temperature=temperature),
        seq,
        attn,
        pos,
        q_len,
    )


# a split must drop at least this share of a batch's tokens, and a half keep this many rows
MIN_TRIM_SAVING, MIN_TRIM_ROWS = 0.1, 8


def query_length_halves(attention_mask: Tensor, q_len: int):
    """The rows of a left-padded rollout batch in two halves by query length (shorter first),
    each without the leading padding columns its longest query does not reach: ``[(rows, first
    column), (rows, first column)]``, or None where that would drop under ``MIN_TRIM_SAVING`` of
    the batch's tokens, a half would have under ``MIN_TRIM_ROWS`` rows (small matmuls cost more
    per row than the padding saves), or several processes run (each forward is a parameter
    all-gather there)."""
    from mplus import distributed as D

    n, width = attention_mask.shape
    if n < 2 * MIN_TRIM_ROWS or D.is_distributed():
        return None
    q_lens = attention_mask[:, :q_len].sum(1)
    order = torch.argsort(q_lens, stable=True)
    halves = [(rows, q_len - int(q_lens[rows].max())) for rows in order.chunk(2)]
    kept = sum(len(rows) * (width - first) for rows, first in halves)
    if kept > (1 - MIN_TRIM_SAVING) * n * width:
        return None
    return halves


def by_query_length(fn, seq: Tensor, attn: Tensor, pos: Tensor, q_len: int):
    """``fn(seq, attn, pos, q_len)`` (a forward over a left-padded rollout batch returning rows x
    response columns, a tensor or a tuple of them) run on the two halves of
    :func:`query_length_halves`, each without its unneeded left padding (a rollout's prompts
    differ in length: on HH-style prompts a quarter of a 16-row batch's tokens are padding), and
    put back in the rows' order; one call where that does not pay. The positions come with
    ``pos`` and padding is masked, so each row's outputs are its own either way."""
    halves = query_length_halves(attn, q_len)
    if halves is None:
        return fn(seq, attn, pos, q_len)
    outs = [fn(seq[r, c:], attn[r, c:], pos[r, c:], q_len - c) for r, c in halves]
    rows = [r for r, _ in halves]
    if isinstance(outs[0], tuple):
        return tuple(_in_row_order(parts, rows) for parts in zip(*outs, strict=True))
    return _in_row_order(outs, rows)


def _in_row_order(parts: list[Tensor], rows: list[Tensor]) -> Tensor:
    """The halves' outputs written into one tensor at their rows (one copy, graph kept)."""
    out = parts[0].new_empty((sum(len(r) for r in rows), *parts[0].shape[1:]))
    for part, r in zip(parts, rows, strict=True):
        out[r] = part
    return out


_TAKES_KEEP: dict[type, bool] = {}


def _takes_logits_to_keep(model) -> bool:
    """Whether ``model``'s forward takes ``logits_to_keep`` (every transformers causal LM; peft
    wrappers pass it on); read once per class."""
    cls = type(model.get_base_model() if hasattr(model, "get_base_model") else model)
    if cls not in _TAKES_KEEP:
        import inspect

        _TAKES_KEEP[cls] = "logits_to_keep" in inspect.signature(cls.forward).parameters
    return _TAKES_KEEP[cls]


def label_mask(attention_mask: Tensor, prompt_lens: Tensor | None = None) -> Tensor:
    """(B, T - 1) bool mask of the labels :func:`token_logprobs` scores (``start=0``).

    Right-padded rows: real tokens from position 1 on, and with ``prompt_lens`` (B,) only those
    at positions >= the row's prompt length (the response, EOS included).
    """
    mask = attention_mask[:, 1:].bool()
    if prompt_lens is not None:
        pos = torch.arange(1, attention_mask.shape[1], device=attention_mask.device)
        mask = mask & (pos[None, :] >= prompt_lens.to(pos.device)[:, None])
    return mask


def identical_weights(a, b) -> bool:
    """Whether modules ``a`` and ``b`` hold the same parameters and buffers, name by name, equal
    in dtype, shape and every value (a policy before its first update and the reference it was
    copied from): their outputs are then the same and a KL between them is 0 without a forward.
    Sharded parameters (several processes) are not compared: False."""
    from mplus import distributed as D

    if a is b:
        return True
    if D.is_distributed():
        return False
    ta = dict(a.named_parameters()) | dict(a.named_buffers())
    tb = dict(b.named_parameters()) | dict(b.named_buffers())
    if ta.keys() != tb.keys():
        return False
    with torch.no_grad():
        return all(
            x.dtype == tb[k].dtype and x.device == tb[k].device and torch.equal(x, tb[k])
            for k, x in ta.items()
        )


def reference_context(policy, ref_model):
    """The base model's view: ``(model, context)`` to run the reference forward in.

    ``ref_model`` itself when given; else a peft policy with its adapter disabled inside the
    context (LoRA: the reference is the policy without its adapter, no second copy); else
    ``(None, nullcontext())``: the policy is the base (no reference to compare with).
    """
    if ref_model is not None:
        return ref_model, contextlib.nullcontext()
    if hasattr(policy, "disable_adapter"):
        return policy, policy.disable_adapter()
    return None, contextlib.nullcontext()
