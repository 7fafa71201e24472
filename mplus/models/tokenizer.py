"""Tokenizers: the embedded one (trained on the synthetic corpus, no download) and hub ones."""

from __future__ import annotations

from collections.abc import Iterable

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

    The reward model reads the last non-pad token; if pad were EOS, a trailing EOS would be read as
    padding. So prefer unk (Mistral/Llama have one), and fall back to EOS only when nothing else
    exists.
    """
    if tok.pad_token is not None:
        return
    tok.pad_token = tok.unk_token if tok.unk_token is not None else tok.eos_token
