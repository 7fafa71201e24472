"""Rollout generation for PPO: prompts in, padded query/response tensors and texts out.

Engines are pluggable behind :class:`RolloutEngine`; :class:`HFGenerateEngine` uses Hugging Face
``model.generate`` with the KV cache. Whatever the engine, the response is cut by
:func:`mplus.rollout.stops.find_response_end`, so ``response_mask`` and ``responses`` mean the
same thing for every engine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from mplus.models.tokenizer import encode_prompts
from mplus.rollout.stops import find_response_end, strip_stop


@dataclass
class Rollout:
    """One batch of generated responses.

    The sequence the policy saw is ``query_ids ++ response_ids``: left padding keeps every query
    flush against its response, so response token ``t`` of every row sits at column ``Tq + t``.

    Attributes:
        query_ids: (B, Tq) long, prompts left-padded with the pad id.
        query_mask: (B, Tq) long, 1 on prompt tokens, 0 on padding.
        response_ids: (B, Tr) long, responses right-padded with the pad id after the kept tokens.
        response_mask: (B, Tr) float, 1 on the kept tokens (stop token/EOS included), else 0.
        stopped: (B,) bool, True where the response ended at EOS or a stop string; False where it
            ran into ``max_new_tokens`` (truncated).
        response_lengths: (B,) long, number of kept tokens, ``response_mask.sum(-1)``.
        prompts: The prompt texts as given to the engine (before any left truncation).
        responses: Decoded kept text with the stop string and EOS removed; the leading space is
            kept, so ``prompts[i] + responses[i]`` reads as the transcript.
        gen_seconds: Wall seconds of the whole ``generate`` call (tokenize, decode, cut).
        tokens_per_s: Kept response tokens over ``gen_seconds``.
        n_prompts_truncated: Prompts cut from the left to fit ``max_prompt_length``.
        sampler_logprobs: (B, Tr) float, the sampling engine's own log-prob of each response
            token at the sampling temperature (0 past the kept tokens), or None (the HF engine:
            its log-probs are the training forward's). For comparing the two only; the update's
            old log-probs always come from the training forward pass.
    """

    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    stopped: torch.Tensor
    response_lengths: torch.Tensor
    prompts: list[str]
    responses: list[str]
    gen_seconds: float = 0.0
    tokens_per_s: float = 0.0
    n_prompts_truncated: int = 0
    sampler_logprobs: torch.Tensor | None = None

    def sequence_ids(self) -> torch.Tensor:
        """Returns (B, Tq + Tr) long: query and response side by side."""
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    def sequence_mask(self) -> torch.Tensor:
        """Returns (B, Tq + Tr) attention mask (dtype of ``query_mask``): 0 on all padding."""
        return torch.cat([self.query_mask, self.response_mask.to(self.query_mask.dtype)], dim=1)

    def position_ids(self) -> torch.Tensor:
        """Returns (B, Tq + Tr) long positions that start at 0 on each row's first real token.

        Matches the positions ``generate`` used, so a forward pass over ``sequence_ids()``
        reproduces the sampling logits; padding gets position 0 (it is masked anyway).
        """
        return (self.sequence_mask().long().cumsum(-1) - 1).clamp(min=0)


class RolloutEngine(Protocol):
    """Turns prompt texts into a :class:`Rollout` with ``model``."""

    def generate(self, model: Any, prompts: list[str]) -> Rollout:
        """Generates one response per prompt."""
        ...


class TokenRolloutEngine:
    """What every engine shares: the sampling settings, the prompt encoding, the stop cut and the
    decoding of the kept tokens. An engine only turns query ids into generated ids
    (:meth:`_finish` builds the :class:`Rollout`), so responses end at the same token whatever
    generated them.

    Args:
        tokenizer: The policy's tokenizer (fast or slow); needs an EOS or a pad token.
        max_new_tokens: Most tokens per response; a response that reaches it without a stop is
            truncated (``stopped=False``).
        temperature: Sampling temperature; 0 means greedy decoding.
        top_p: Nucleus sampling mass, in (0, 1]; 1 disables it.
        top_k: Top-k sampling; 0 disables it.
        stop_strings: Texts that end a response besides EOS (the next HH turn by default).
        max_prompt_length: Prompts longer than this many tokens are cut from the left (the most
            recent turns matter most), keeping a leading BOS; None keeps them whole.
    """

    def __init__(
        self,
        tokenizer: Any,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_strings: Sequence[str] = ("\n\nHuman:",),
        max_prompt_length: int | None = None,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        if max_prompt_length is not None and max_prompt_length < 1:
            raise ValueError(f"max_prompt_length must be >= 1 or None, got {max_prompt_length}")
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.max_prompt_length = max_prompt_length
        self.eos_token_id: int | None = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
        self.pad_token_id: int = pad

    def _finish(
        self,
        start: float,
        prompts: list[str],
        query_ids: torch.Tensor,
        query_mask: torch.Tensor,
        n_truncated: int,
        generated: list[list[int]],
        token_logprobs: list[list[float]] | None = None,
    ) -> Rollout:
        """The :class:`Rollout` of ``generated`` (one list of new token ids per row, any length):
        cut by :func:`find_response_end`, decoded, timed from ``start``."""
        device = query_ids.device
        response_ids, response_mask, stopped = self._cut(generated, device)
        responses = self._decode_responses(query_ids[:, -1].tolist(), response_ids, response_mask)
        lengths = response_mask.sum(-1).long()
        sampler_logprobs = None
        if token_logprobs is not None:
            sampler_logprobs = torch.zeros(response_ids.shape, dtype=torch.float32)
            for b, (row, n) in enumerate(zip(token_logprobs, lengths.tolist(), strict=True)):
                if n:
                    sampler_logprobs[b, :n] = torch.tensor(row[:n], dtype=torch.float32)
            sampler_logprobs = sampler_logprobs.to(device)
        seconds = time.perf_counter() - start
        return Rollout(
            query_ids=query_ids,
            query_mask=query_mask,
            response_ids=response_ids,
            response_mask=response_mask,
            stopped=stopped,
            response_lengths=lengths,
            prompts=list(prompts),
            responses=responses,
            gen_seconds=seconds,
            tokens_per_s=float(lengths.sum()) / max(seconds, 1e-9),
            n_prompts_truncated=n_truncated,
            sampler_logprobs=sampler_logprobs,
        )

    def _encode_prompts(
        self, prompts: list[str], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Tokenizes, left-truncates and left-pads; returns (B, Tq) ids, (B, Tq) mask, n cut."""
        if not prompts:
            raise ValueError("generate() needs at least one prompt")
        # Padding by hand leaves the shared tokenizer's padding_side untouched.
        rows = encode_prompts(self.tokenizer, list(prompts))
        bos = getattr(self.tokenizer, "bos_token_id", None)
        n_truncated = 0
        limit = self.max_prompt_length
        for i, ids in enumerate(rows):
            if not ids:
                raise ValueError(f"prompt {i} tokenizes to no tokens: {prompts[i]!r}")
            if limit is not None and len(ids) > limit:
                n_truncated += 1
                keep_bos = bos is not None and ids[0] == bos and limit > 1
                rows[i] = (
                    [bos, *ids[len(ids) - limit + 1 :]] if keep_bos else ids[len(ids) - limit :]
                )
        width = max(len(ids) for ids in rows)
        query_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        query_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):
            query_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            query_mask[i, width - len(ids) :] = 1
        return query_ids.to(device), query_mask.to(device), n_truncated

    def _cut(
        self, generated: list[list[int]], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cuts each row at its stop; returns (B, Tr) ids, (B, Tr) float mask, (B,) stopped."""
        pieces = self._token_pieces({i for row in generated for i in row})
        ends = [
            find_response_end(
                [pieces[i] for i in row],
                row,
                self.eos_token_id,
                self.pad_token_id,
                self.stop_strings,
            )
            for row in generated
        ]
        width = max(1, max(n for n, _ in ends))
        response_ids = torch.full((len(generated), width), self.pad_token_id, dtype=torch.long)
        response_mask = torch.zeros((len(generated), width), dtype=torch.float32)
        for b, (row, (n_keep, _)) in enumerate(zip(generated, ends, strict=True)):
            if n_keep:
                response_ids[b, :n_keep] = torch.tensor(row[:n_keep], dtype=torch.long)
                response_mask[b, :n_keep] = 1.0
        stopped = torch.tensor([s for _, s in ends], dtype=torch.bool)
        return response_ids.to(device), response_mask.to(device), stopped.to(device)

    def _token_pieces(self, token_ids: set[int]) -> dict[int, str]:
        """Maps each id to its text decoded alone.

        ``convert_ids_to_tokens`` would give byte-level symbols such as ``"Ċ"`` for a newline;
        decoding each id gives the real text. Decoding alone can drop a SentencePiece leading
        space, so ``" Human:"`` after a blank line also counts as a stop there.
        """
        ids = sorted(token_ids)
        texts = self.tokenizer.batch_decode(
            [[i] for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        return dict(zip(ids, texts, strict=True))

    def _decode_responses(
        self, last_query_ids: list[int], response_ids: torch.Tensor, response_mask: torch.Tensor
    ) -> list[str]:
        """Decodes the kept tokens of each row, stop string and special tokens removed.

        Each row is decoded after its last prompt token and that token's text is cut off again:
        SentencePiece decoders drop the leading space of a text's first token, which would turn
        ``"Assistant: I"`` into ``"Assistant:I"``.
        """
        kept = [
            ids[: int(n)]
            for ids, n in zip(response_ids.tolist(), response_mask.sum(-1).tolist(), strict=True)
        ]
        decode = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)
        heads = self.tokenizer.batch_decode([[q] for q in last_query_ids], **decode)
        fulls = self.tokenizer.batch_decode(
            [[q, *ids] for q, ids in zip(last_query_ids, kept, strict=True)], **decode
        )
        alone = self.tokenizer.batch_decode(kept, **decode)
        texts = [
            full[len(head) :] if full.startswith(head) else text
            for head, full, text in zip(heads, fulls, alone, strict=True)
        ]
        return [strip_stop(text, self.stop_strings) for text in texts]


class HFGenerateEngine(TokenRolloutEngine):
    """Rollouts with Hugging Face ``model.generate`` (KV cache on); the arguments are
    :class:`TokenRolloutEngine`'s."""

    def generate(self, model: Any, prompts: list[str], keys: list[int] | None = None) -> Rollout:
        """Samples one response per prompt; see :class:`Rollout` for the layout.

        With ``keys`` (one int per prompt; a temperature > 0) row ``i`` samples from a random
        stream seeded by ``keys[i]`` (:class:`mplus.rollout.keyed.KeyedSampler`): its response
        does not depend on the other rows, the batch size or the process it runs in.
        """
        start = time.perf_counter()
        device = _device_of(model)
        query_ids, query_mask, n_truncated = self._encode_prompts(prompts, device)
        kwargs = self._generate_kwargs()
        if keys is not None:
            from transformers import LogitsProcessorList

            from mplus.rollout.keyed import KeyedSampler

            if len(keys) != len(prompts):
                raise ValueError(f"{len(keys)} sampling keys for {len(prompts)} prompts")
            for k in ("temperature", "top_p", "top_k"):
                kwargs.pop(k, None)
            kwargs["do_sample"] = False  # greedy search over the keyed Gumbel-perturbed scores
            kwargs["logits_processor"] = LogitsProcessorList(
                [KeyedSampler(keys, self.temperature, self.top_p, self.top_k)]
            )
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model.generate(input_ids=query_ids, attention_mask=query_mask, **kwargs)
        finally:
            model.train(was_training)
        generated = out.sequences[:, query_ids.shape[1] :]  # (B, T_gen)
        return self._finish(start, prompts, query_ids, query_mask, n_truncated, generated.tolist())

    def _generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "use_cache": True,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "return_dict_in_generate": True,
        }
        if self.temperature == 0:
            kwargs["do_sample"] = False
        else:
            kwargs.update(
                do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k
            )
        if self.stop_strings:
            # Only lets generate() finish rows early; the cut itself is find_response_end's.
            kwargs.update(stop_strings=list(self.stop_strings), tokenizer=self.tokenizer)
        return kwargs


def _device_of(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device
