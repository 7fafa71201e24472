"""DPO and SFT plumbing: response masking, response log-probs, the DPO module on a tiny model."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from mplus.data.collate import PairCollator, SFTCollator, SFTDataset
from mplus.data.types import PreferencePair
from mplus.modules.dpo import (
    DPOModule,
    attach_reference_logps,
    pair_logps,
    precompute_reference_logps,
    response_logps,
)

VOCAB = 50
PAD = 0


class CharTokenizer:
    """One token per character (its code point); EOS is 1."""

    eos_token_id = 1

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(ch) for ch in t] for t in texts]}


def _tiny_lm(seed=0):
    cfg = MistralConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=PAD,
    )
    torch.manual_seed(seed)
    return MistralForCausalLM(cfg)


def _cfg(**kw):
    base = dict(
        beta=0.1,
        loss_type="sigmoid",
        label_smoothing=0.0,
        lr=1e-2,
        weight_decay=0.0,
        warmup_ratio=0.0,
        max_steps=8,
        shared_prefix=True,  # the default (mplus.config.DPOConfig)
    )
    return SimpleNamespace(**{**base, **kw})


def _pair_items():
    # prompt + response + EOS(=2) token ids; the rejected response differs in length
    return [
        {"chosen": [3, 4, 5, 6, 2], "rejected": [3, 4, 7, 2], "prompt_len": 2},
        {"chosen": [8, 9, 10, 2], "rejected": [8, 11, 12, 13, 2], "prompt_len": 1},
        {"chosen": [14, 15, 16, 17, 18, 2], "rejected": [14, 15, 16, 19, 2], "prompt_len": 3},
    ]


# ------------------------------------------------------------------ SFT data


def test_sft_collator_masks_prompt_and_padding_literal():
    batch = [
        {"input_ids": [5, 6, 7, 2], "prompt_len": 2},
        {"input_ids": [8, 9, 2], "prompt_len": 1},
    ]
    out = SFTCollator(pad_id=0)(batch)
    assert out["input_ids"].tolist() == [[5, 6, 7, 2], [8, 9, 2, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert out["labels"].tolist() == [[-100, -100, 7, 2], [-100, 9, 2, -100]]


def test_sft_collator_keeps_eos_when_pad_equals_eos():
    # Many tokenizers pad with EOS: padding must be found from the mask, not from the id.
    batch = [{"input_ids": [5, 6, 2], "prompt_len": 1}, {"input_ids": [8, 2], "prompt_len": 1}]
    out = SFTCollator(pad_id=2)(batch)
    assert out["input_ids"].tolist() == [[5, 6, 2], [8, 2, 2]]
    assert out["labels"].tolist() == [[-100, 6, 2], [-100, 2, -100]]


def test_sft_dataset_tokenises_prompt_plus_chosen_plus_eos():
    ds = SFTDataset(
        [PreferencePair("ab", "c", "zz"), PreferencePair("d", "ef", "y")], CharTokenizer()
    )
    assert len(ds) == 2
    assert ds[0] == {"input_ids": [97, 98, 99, 1], "prompt_len": 2}
    assert ds[1] == {"input_ids": [100, 101, 102, 1], "prompt_len": 1}


def test_pair_collator_adds_ref_logps_only_when_every_item_has_them():
    items = [
        {"chosen": [1, 9], "rejected": [1, 8, 9], "prompt_len": 1, "ref_logps": (-1.5, -2.0)},
        {"chosen": [4, 9], "rejected": [4, 9], "prompt_len": 1, "ref_logps": (-0.5, -3.0)},
    ]
    out = PairCollator(pad_id=0)(items)
    assert out["ref_logps"].dtype == torch.float32
    assert out["ref_logps"].tolist() == [[-1.5, -2.0], [-0.5, -3.0]]
    del items[1]["ref_logps"]
    assert "ref_logps" not in PairCollator(pad_id=0)(items)


# ------------------------------------------------------------------ response log-probs


class FixedLM(torch.nn.Module):
    """Ignores the tokens: position t always predicts the distribution ``probs[t]``."""

    def __init__(self, probs):
        super().__init__()
        self.register_buffer("logits", torch.tensor(probs).log())  # (T, V)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, input_ids, attention_mask):
        assert attention_mask.shape == input_ids.shape
        n, t = input_ids.shape
        return SimpleNamespace(logits=self.logits[:t].expand(n, t, -1))


PROBS = [[1 / 2, 1 / 4, 1 / 4], [1 / 4, 1 / 2, 1 / 4], [1 / 4, 1 / 4, 1 / 2], [1 / 3, 1 / 3, 1 / 3]]


def test_response_logps_hand_computed_with_shift_and_padding():
    ids = torch.tensor([[0, 1, 2, 2], [1, 0, 1, 2]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])  # row 1: last token is padding
    lp = response_logps(FixedLM(PROBS), ids, mask, torch.tensor([2, 1]))
    # row 0: response tokens at positions 2, 3 (both id 2), predicted by positions 1 and 2
    # row 1: response tokens at positions 1 (id 0) and 2 (id 1), predicted by positions 0 and 1;
    #        the pad at position 3 would add log(1/2) if it were counted
    expected = [math.log(1 / 4) + math.log(1 / 2), math.log(1 / 2) + math.log(1 / 2)]
    assert lp.dtype == torch.float32
    assert lp.tolist() == pytest.approx(expected, abs=1e-6)


def test_response_logps_skips_the_shared_prompt_columns_without_changing_the_sum():
    """The LM head runs from the shortest prompt on (logits_to_keep): the sums equal those of
    the full forward, prompt lengths 3 and 5, with right padding."""
    from mplus.algo import sequence_logps
    from mplus.models.logprobs import label_mask, token_logprobs

    model = _tiny_lm().eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, VOCAB, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    prompt_lens = torch.tensor([3, 5])
    full, _ = token_logprobs(model, ids, mask)  # start=0: every column through the head
    want = sequence_logps(full, label_mask(mask, prompt_lens))
    got = response_logps(model, ids, mask, prompt_lens)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
    calls = []
    model.register_forward_hook(lambda m, a, kw, out: calls.append(kw), with_kwargs=True)
    response_logps(model, ids, mask, prompt_lens)
    assert calls[-1].get("logits_to_keep") == 9 - 2  # from column 2, the shorter prompt's last


def test_pair_logps_splits_chosen_and_rejected_rows():
    # chosen rows then rejected rows, as PairCollator stacks them; prompt_lens (B,) is repeated
    batch = {
        "input_ids": torch.tensor([[0, 1, 2, 2], [1, 0, 0, 0], [0, 0, 0, 0], [2, 2, 2, 2]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]),
        "prompt_lens": torch.tensor([3, 1]),
    }
    out = pair_logps(FixedLM(PROBS), batch)
    chosen = [
        math.log(1 / 2),  # pair 0: id 2 at position 3, from P[2]
        math.log(1 / 2),
    ]  # pair 1: id 0 at position 1, from P[0]; the rest is padding
    rejected = [
        0.0,  # pair 0: prompt of 3 tokens, then only padding: an empty response
        2 * math.log(1 / 4) + math.log(1 / 2),
    ]  # pair 1: id 2 at 1, 2, 3 from P[0..2]
    assert out.shape == (2, 2)
    assert out[:, 0].tolist() == pytest.approx(chosen, abs=1e-6)
    assert out[:, 1].tolist() == pytest.approx(rejected, abs=1e-6)


# ------------------------------------------------------------------ reference precompute


def test_precompute_reference_logps_keeps_dataset_order():
    model = _tiny_lm()
    items = _pair_items()
    loader = torch.utils.data.DataLoader(
        items, batch_size=2, shuffle=False, collate_fn=PairCollator(PAD)
    )
    model.train()
    ref = precompute_reference_logps(model, loader)
    assert model.training  # mode restored
    assert ref.shape == (3, 2) and ref.dtype == torch.float32
    model.eval()
    with torch.no_grad():
        for i, it in enumerate(items):  # each pair alone: no padding, no batch neighbours
            single = pair_logps(model, PairCollator(PAD)([it]))[0]
            assert torch.allclose(ref[i], single, atol=1e-5)
    assert not torch.allclose(ref[0], ref[1])  # rows are distinguishable, so order is tested

    attach_reference_logps(items, ref)
    batch = PairCollator(PAD)(items[1:])
    assert torch.equal(batch["ref_logps"], ref[1:])


def test_precompute_reference_logps_refuses_a_shuffled_loader():
    loader = torch.utils.data.DataLoader(
        _pair_items(), batch_size=2, shuffle=True, collate_fn=PairCollator(PAD)
    )
    with pytest.raises(ValueError, match="dataset order"):
        precompute_reference_logps(_tiny_lm(), loader)


# ------------------------------------------------------------------ the module


def test_dpo_module_training_increases_the_implicit_reward_margin():
    policy = _tiny_lm()
    ref = copy.deepcopy(policy)
    ref_before = {k: v.clone() for k, v in ref.state_dict().items()}
    module = DPOModule(policy, ref, _cfg(max_steps=8))
    batch = PairCollator(PAD)(_pair_items())
    with torch.no_grad():
        start = module._loss(batch)[0]
    assert start.margin.item() == pytest.approx(0.0, abs=1e-6)  # policy == reference
    assert start.loss.item() == pytest.approx(math.log(2), abs=1e-5)

    loader = torch.utils.data.DataLoader([batch] * 8, batch_size=None)  # the same batch, 8 times
    trainer = L.Trainer(
        max_steps=8,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=loader)

    module.train()  # as Lightning does after a validation loop
    assert policy.training and not ref.training  # the frozen reference stays in eval mode
    assert all(torch.equal(v, ref_before[k]) for k, v in ref.state_dict().items())
    with torch.no_grad():
        end = module._loss(batch)[0]
    assert end.margin.item() > 0.05
    assert end.reward_accuracy.item() == 1.0
    assert end.loss.item() < math.log(2)
    for key in (
        "loss",
        "reward_accuracy",
        "margin",
        "chosen_reward",
        "rejected_reward",
        "chosen_logps",
        "rejected_logps",
    ):
        assert f"dpo/{key}" in trainer.callback_metrics

    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    assert ckpt["state_dict"] and not any(k.startswith("ref_model.") for k in ckpt["state_dict"])
    assert module.strict_loading is False


def test_dpo_module_uses_precomputed_reference_logps_when_present():
    module = DPOModule(_tiny_lm(), _tiny_lm(seed=1), _cfg())
    batch = PairCollator(PAD)(_pair_items())
    computed = module.reference_logps(batch)
    assert not computed.requires_grad
    fake = torch.tensor([[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]])
    assert torch.equal(module.reference_logps({**batch, "ref_logps": fake}), fake)


def test_dpo_validation_logs_epoch_metrics():
    module = DPOModule(_tiny_lm(), _tiny_lm(seed=1), _cfg())
    batch = PairCollator(PAD)(_pair_items())
    loader = torch.utils.data.DataLoader([batch, batch], batch_size=None)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(module, dataloaders=loader, verbose=False)
    m = trainer.callback_metrics
    with torch.no_grad():
        direct = module._loss(batch)[0]
    assert m["dpo/val_loss"].item() == pytest.approx(direct.loss.item(), abs=1e-5)
    assert m["dpo/val_margin"].item() == pytest.approx(direct.margin.item(), abs=1e-5)
    for key in ("reward_accuracy", "chosen_reward", "rejected_reward"):
        assert f"dpo/val_{key}" in m


def test_lora_policy_reference_is_the_base_with_the_adapter_disabled():
    from peft import LoraConfig, get_peft_model

    base = _tiny_lm()
    base_copy = copy.deepcopy(base).eval()
    policy = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    module = DPOModule(policy, None, _cfg()).eval()
    batch = PairCollator(PAD)(_pair_items())
    with torch.no_grad():
        expected = pair_logps(base_copy, batch)
        # a fresh adapter has zero effect: policy and reference both equal the base
        assert torch.allclose(module.reference_logps(batch), expected, atol=1e-5)
        assert torch.allclose(pair_logps(policy, batch), expected, atol=1e-5)
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
        # with a live adapter the policy moves, the reference stays the base
        assert not torch.allclose(pair_logps(policy, batch), expected, atol=1e-3)
        assert torch.allclose(module.reference_logps(batch), expected, atol=1e-5)
    opt = module.configure_optimizers()["optimizer"]
    n_trained = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_trained == sum(p.numel() for n, p in policy.named_parameters() if "lora_" in n)
