"""The reward model's shared-prefix forward: each pair's prompt runs once, its KV cache serves
the chosen and the rejected row. Same scores and gradients as the whole rows (float rounding
aside), on a tiny Mistral with prompts of different lengths, with and without LoRA; the split of
a batch into prompts and responses against literals; when it does not apply."""

from __future__ import annotations

import pytest
import torch
from transformers import MistralConfig, MistralForSequenceClassification

from mplus.data.collate import PairCollator
from mplus.models.prefix import shared_prefix_scores, shares_prefix, split_pairs
from mplus.models.reward import sequence_scores

PAD = 0


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = MistralConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=PAD,
        sliding_window=None,
    )
    return MistralForSequenceClassification(cfg)


def _batch(seed=1, pairs=4):
    """A PairCollator batch: prompt lengths 2..6, responses 1..5 (EOS included)."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(pairs):
        prompt = torch.randint(2, 64, (2 + i,), generator=g).tolist()
        c = torch.randint(2, 64, (1 + (i * 3) % 5,), generator=g).tolist()
        r = torch.randint(2, 64, (1 + (i * 2) % 4,), generator=g).tolist()
        items.append({"chosen": prompt + c, "rejected": prompt + r, "prompt_len": len(prompt)})
    return PairCollator(PAD)(items)


def test_split_pairs_against_literals():
    ids = torch.tensor([[5, 6, 7, 8, 0], [9, 3, 4, 0, 0], [5, 6, 2, 0, 0], [9, 1, 1, 1, 1]])
    mask = (ids != 0).long()
    mask[3] = 1
    p, pm, r, rm = split_pairs(ids, mask, torch.tensor([2, 1]))
    assert p.tolist() == [[5, 6], [0, 9]] and pm.tolist() == [[1, 1], [0, 1]]
    assert r.tolist() == [[7, 8, 0, 0], [3, 4, 0, 0], [2, 0, 0, 0], [1, 1, 1, 1]]
    assert rm.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_shared_prefix_scores_and_gradients_equal_the_whole_rows(lora):
    model = _model()
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        for n, p in model.named_parameters():  # a non-zero adapter, so its gradients matter
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1)
    model.train()
    b = _batch()
    ids, mask, lens = b["input_ids"], b["attention_mask"], b["prompt_lens"]
    assert shares_prefix(model, ids, lens)

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        s = fn()
        loss = -torch.nn.functional.logsigmoid(s[:4] - s[4:]).mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return s.detach(), grads

    want, g_want = loss_and_grads(lambda: sequence_scores(model, ids, mask))
    got, g_got = loss_and_grads(lambda: shared_prefix_scores(model, ids, mask, lens, PAD))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert sorted(g_got) == sorted(g_want) and g_want
    for n in g_want:
        torch.testing.assert_close(g_got[n], g_want[n], rtol=1e-4, atol=1e-6, msg=n)


def test_shared_prefix_is_not_used_where_the_cache_is_off_or_cut():
    model = _model()
    b = _batch()
    ids, lens = b["input_ids"], b["prompt_lens"]
    model.gradient_checkpointing_enable()
    assert not shares_prefix(model, ids, lens)  # activation checkpointing turns the cache off
    short = _model()
    short.config.sliding_window = ids.shape[1] - 1  # rows longer than the window
    assert not shares_prefix(short, ids, lens)


def _lm(seed=0):
    from transformers import MistralForCausalLM

    m = _model(seed)
    torch.manual_seed(seed)
    return MistralForCausalLM(m.config)


def test_dpo_pair_logps_with_the_shared_prefix_equal_the_whole_rows():
    """Log-probs and their gradients, policy-style (train mode, grads) and reference-style."""
    from mplus.modules.dpo import pair_logps

    model = _lm().train()
    b = _batch(seed=3)
    grads = []
    outs = []
    for shared in (False, True):
        model.zero_grad(set_to_none=True)
        lp = pair_logps(model, b, shared_prefix=shared)
        (lp[:, 0] - lp[:, 1]).sum().backward()
        outs.append(lp.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6, msg=n)
    with torch.no_grad():
        torch.testing.assert_close(
            pair_logps(model.eval(), b, shared_prefix=True), outs[0], rtol=1e-5, atol=1e-5
        )
