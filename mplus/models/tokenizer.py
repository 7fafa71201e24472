"""Tokenizers: the embedded one (trained on the synthetic corpus, no download) and hub ones."""

from __future__ import annotations

import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer deterministically on ``texts``.

    Byte-level keeps every string encodable (nothing maps to unk), so generated text round-trips.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with ``<pad>``/``<eos>``/``<unk>`` special tokens
        that ``AutoTokenizer.from_pretrained`` reloads from its saved folder.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK, padding_side="right"
    )


def load_tokenizer(path: str, *, revision: str | None = None, trust_remote_code: bool = False):
    """Load a tokenizer and make sure it can pad (base models often ship without a pad token)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        path, revision=revision, trust_remote_code=trust_remote_code
    )
    ensure_pad_token(tok)
    tok.padding_side = "right"
    return tok


def ensure_pad_token(tok) -> None:
    """Give ``tok`` a pad token distinct from EOS where possible.

    Base tokenizers often ship with no pad token, or with pad == EOS. mplus reads scores at the
    last attended position (:func:`mplus.models.reward.sequence_scores`), so a pad equal to EOS
    cannot hide the EOS from mplus; but exported models are used by tools that find the last
    non-pad token, so a distinct pad is still preferred: unk when there is one (Mistral/Llama),
    EOS only when nothing else exists.
    """
    pad_is_eos = tok.pad_token_id is not None and tok.pad_token_id == tok.eos_token_id
    if tok.pad_token is not None and not pad_is_eos:
        return
    if tok.unk_token is not None and tok.unk_token_id != tok.eos_token_id:
        if pad_is_eos:
            log.info("Tokenizer pad token is EOS: padding with %s instead", tok.unk_token)
        tok.pad_token = tok.unk_token
    elif tok.pad_token is None:
        log.info(
            "Tokenizer has no pad token and no unk: padding with EOS (scores are read at "
            "the last attended position, so the EOS is still seen)"
        )
        tok.pad_token = tok.eos_token


# ---------------------------------------------------------------- the one text -> ids rule
#
# Every stage (rollout, reward-model training and scoring, value, DPO, SFT, held-out evaluation,
# probe, mplus.eval) turns text into ids through these functions, so they all see the same
# tokens: the tokenizer's own leading special tokens (BOS for Mistral/Llama, none for the tiny
# tokenizer) exactly once, then the prompt, then the response, then EOS where the stage appends
# it. Prompt ids are always a prefix of prompt+response ids.


def special_prefix(tok) -> list[int]:
    """The special ids ``tok`` puts before a text by default (``[bos]`` or ``[]``).

    Read from the tokenizer's own behaviour (``add_bos_token`` and its post-processor), not
    assumed; trailing specials it would add (``add_eos_token``) are not used: stages append EOS
    themselves.
    """
    with_sp = tok("a")["input_ids"]
    plain = tok("a", add_special_tokens=False)["input_ids"]
    for k in range(len(with_sp) - len(plain) + 1):
        if with_sp[k : k + len(plain)] == plain:
            return list(with_sp[:k])
    return []


def encode_prompts(tok, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt as a generation query: special prefix + prompt ids."""
    prefix = special_prefix(tok)
    return [prefix + ids for ids in tok(list(prompts), add_special_tokens=False)["input_ids"]]


def encode_pairs(
    tok, prompts: list[str], responses: list[str], *, eos: bool = True
) -> tuple[list[list[int]], list[int]]:
    """Token ids of ``prompt + response`` (+ EOS) and each row's prompt length (prefix included).

    The response ids are the tail of the tokenised transcript when the prompt's own ids are a
    prefix of it (the usual case: a response starts a new word). When a tokenizer merges across
    the boundary (SentencePiece ``"is" + "n't"``), the response is tokenised on its own and
    appended, as TRL does, so the prompt ids stay a true prefix either way.

    Returns:
        ``(ids, prompt_lens)``: one id list per row, and the number of leading ids that are the
        special prefix and the prompt.
    """
    if eos and tok.eos_token_id is None:
        raise ValueError(f"the tokenizer {type(tok).__name__} has no EOS token to end a text with")
    prefix = special_prefix(tok)
    p_ids = tok(list(prompts), add_special_tokens=False)["input_ids"]
    full = tok([p + r for p, r in zip(prompts, responses, strict=True)], add_special_tokens=False)[
        "input_ids"
    ]
    tail = [tok.eos_token_id] if eos else []
    ids, lens = [], []
    for p, f, r in zip(p_ids, full, responses, strict=True):
        resp = f[len(p) :] if f[: len(p)] == p else tok(r, add_special_tokens=False)["input_ids"]
        ids.append(prefix + p + resp + tail)
        lens.append(len(prefix) + len(p))
    return ids, lens


def encode_texts(tok, texts: list[str], *, eos: bool = True) -> list[list[int]]:
    """Token ids of whole texts (a probe document, a transcript): prefix + text (+ EOS)."""
    return encode_pairs(tok, list(texts), [""] * len(texts), eos=eos)[0]
