"""Model plumbing: value head alignment, reward scoring, tokenizer padding."""

from __future__ import annotations

import torch
from transformers import MistralConfig, MistralForSequenceClassification

from mplus.models.tokenizer import train_tokenizer
from mplus.models.value import ValueModel


def _tiny_cls(vocab=300):
    cfg = MistralConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return MistralForSequenceClassification(cfg).eval()


def test_value_model_returns_every_token_and_matches_the_pooled_score():
    model = _tiny_cls()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = (ids != 0).long()
    values = ValueModel(model)(ids, mask)
    assert values.shape == (2, 4) and values.dtype == torch.float32
    pooled = model(input_ids=ids, attention_mask=mask).logits[:, 0]
    # the sequence classifier reads the last non-pad token: position 3 and position 1
    assert torch.allclose(values[0, 3], pooled[0]) and torch.allclose(values[1, 1], pooled[1])


def test_trained_tokenizer_round_trips_and_has_distinct_pad_and_eos():
    texts = ["\n\nHuman: What is the capital of France?\n\nAssistant: Paris."] * 20
    tok = train_tokenizer(texts, vocab_size=300)
    assert tok.pad_token_id != tok.eos_token_id
    ids = tok(texts[0], add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == texts[0]
    assert (
        tok.decode(tok("unseen text: Zürich!", add_special_tokens=False)["input_ids"])
        == "unseen text: Zürich!"
    )  # byte-level: nothing maps to unk
