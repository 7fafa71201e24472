"""mplus.models.logprobs: the one token log-prob rule (PPO, DPO, held-out KL and corpus NLL)."""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from mplus.algo import logprobs_from_logits, masked_sum, sequence_logps
from mplus.eval.heldout import corpus_nll
from mplus.models.logprobs import label_mask, reference_context, token_logprobs
from mplus.modules.dpo import response_logps

# position t predicts the distribution PROBS[t], whatever the tokens
PROBS = [[1 / 2, 1 / 4, 1 / 4], [1 / 4, 1 / 2, 1 / 4], [1 / 4, 1 / 4, 1 / 2], [1 / 3, 1 / 3, 1 / 3]]
L = [[math.log(p) for p in row] for row in PROBS]


class FixedLM(torch.nn.Module):
    """Ignores the tokens; records the keyword arguments of each call."""

    def __init__(self):
        super().__init__()
        self.register_buffer("logits", torch.tensor(PROBS).log())
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device
        self.calls: list[dict] = []

    def forward(self, **kw):
        self.calls.append(kw)
        n, t = kw["input_ids"].shape
        return SimpleNamespace(logits=self.logits[:t].expand(n, t, -1))


class TwoCharTokenizer:
    """'a' -> 0 (also the pad id), 'b' -> 2; EOS is 1; no special prefix."""

    eos_token_id, pad_token_id = 1, 0

    def __call__(self, texts, add_special_tokens=True):
        enc = [
            [{"a": 0, "b": 2}[ch] for ch in t]
            for t in ([texts] if isinstance(texts, str) else texts)
        ]
        return {"input_ids": enc[0] if isinstance(texts, str) else enc}


def _tiny_lm():
    torch.manual_seed(0)
    cfg = MistralConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=0,
    )
    return MistralForCausalLM(cfg).eval()


def _rollout_batch(g):
    """Left-padded queries (Tq=5) then right-padded responses (Tr=4), as a Rollout gives them."""
    q_lens, r_lens = torch.tensor([5, 2, 3]), torch.tensor([4, 1, 0])
    qmask = (torch.arange(5)[None] >= (5 - q_lens)[:, None]).long()
    rmask = (torch.arange(4)[None] < r_lens[:, None]).long()
    query = torch.randint(1, 40, (3, 5), generator=g) * qmask
    resp = torch.randint(1, 40, (3, 4), generator=g) * rmask
    attn = torch.cat([qmask, rmask], 1)
    return torch.cat([query, resp], 1), attn, (attn.cumsum(-1) - 1).clamp(min=0), resp


# ------------------------------------------------------------------ by hand


def test_token_logprobs_shift_start_and_temperature_by_hand():
    model = FixedLM()
    ids = torch.tensor([[0, 1, 2, 2]])
    lp, logits = token_logprobs(model, ids, torch.ones_like(ids))
    # token t + 1 scored by position t: ids 1, 2, 2 under PROBS[0], PROBS[1], PROBS[2]
    assert lp[0].tolist() == pytest.approx([L[0][1], L[1][2], L[2][2]], abs=1e-6)
    assert logits.shape == (1, 3, 3) and logits.dtype == torch.float32
    lp, _ = token_logprobs(model, ids, torch.ones_like(ids), start=2)
    assert lp[0].tolist() == pytest.approx([L[2][2]], abs=1e-6)
    # temperature 2 halves the logits: position 2 becomes softmax(log p / 2) ~ sqrt(p)
    lp, logits = token_logprobs(model, ids, torch.ones_like(ids), start=2, temperature=2.0)
    w = [math.sqrt(p) for p in PROBS[2]]
    assert lp.item() == pytest.approx(math.log(w[2] / sum(w)), abs=1e-6)
    assert torch.allclose(logits, model.logits[2:3].expand(1, 1, 3) / 2)


def test_position_ids_are_passed_only_when_given():
    model = FixedLM()
    ids = torch.tensor([[0, 1, 2]])
    token_logprobs(model, ids, torch.ones_like(ids))
    assert set(model.calls[-1]) == {"input_ids", "attention_mask"}
    token_logprobs(model, ids, torch.ones_like(ids), torch.tensor([[0, 0, 1]]))
    assert model.calls[-1]["position_ids"].tolist() == [[0, 0, 1]]


def test_label_mask_drops_padding_and_the_prompt():
    attn = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    assert label_mask(attn).tolist() == [[True, True, True], [True, True, False]]
    # labels sit at positions 1..3; prompt lengths 2 and 1 keep positions >= 2 and >= 1
    assert label_mask(attn, torch.tensor([2, 1])).tolist() == [
        [False, True, True],
        [True, True, False],
    ]


def test_corpus_nll_by_hand_whatever_the_batch_size():
    # "ab" + EOS -> [0, 2, 1]; "b" + EOS -> [2, 1] then a pad
    # labels: 2 under PROBS[0], 1 under PROBS[1]; 1 under PROBS[0]; the pad is not counted
    expected = -(L[0][2] + L[1][1] + L[0][1]) / 3
    for bs in (1, 2):
        assert corpus_nll(FixedLM(), TwoCharTokenizer(), ["ab", "b"], bs) == pytest.approx(expected)


# ------------------------------------------------------------------ the callers' old formulas


def test_ppo_and_eval_response_logprobs_equal_the_inline_formula_bit_for_bit():
    model, g = _tiny_lm(), torch.Generator().manual_seed(1)
    seq, attn, pos, resp = _rollout_batch(g)
    q_len = 5
    for temp in (1.0, 0.7):
        lp, logits = token_logprobs(model, seq, attn, pos, start=q_len - 1, temperature=temp)
        ref = model(input_ids=seq, attention_mask=attn, position_ids=pos).logits
        ref = ref[:, q_len - 1 : -1].float() / temp
        assert torch.equal(logits, ref)
        assert torch.equal(lp, logprobs_from_logits(ref, resp))  # labels = the response ids


@torch.no_grad()
def test_dpo_and_probe_equal_the_inline_formula_bit_for_bit():
    model, g = _tiny_lm(), torch.Generator().manual_seed(2)
    attn = (torch.arange(7)[None] < torch.tensor([7, 4, 5, 3])[:, None]).long()
    ids = torch.randint(1, 40, (4, 7), generator=g) * attn
    prompt_lens = torch.tensor([2, 1, 3, 1])
    logits = model(input_ids=ids, attention_mask=attn).logits
    lp = logprobs_from_logits(logits[:, :-1], ids[:, 1:])
    pos = torch.arange(1, 7)
    dpo_mask = attn[:, 1:].bool() & (pos[None, :] >= prompt_lens[:, None])
    assert torch.equal(response_logps(model, ids, attn, prompt_lens), sequence_logps(lp, dpo_mask))
    new_lp, _ = token_logprobs(model, ids, attn)
    assert torch.equal(new_lp, lp)
    # corpus_nll's sum: the old product with a float mask, now the NaN-safe masked_sum
    assert float(-(lp * attn[:, 1:].float()).sum()) == float(-masked_sum(new_lp, label_mask(attn)))


# ------------------------------------------------------------------ the reference model


def test_reference_context_picks_the_reference_model_the_adapter_or_nothing():
    policy, ref = _tiny_lm(), _tiny_lm()
    model, ctx = reference_context(policy, ref)
    assert model is ref and isinstance(ctx, contextlib.nullcontext)
    model, ctx = reference_context(policy, None)  # not a peft model: the policy is the base
    assert model is None and isinstance(ctx, contextlib.nullcontext)

    from peft import LoraConfig, get_peft_model

    peft_policy = get_peft_model(policy, LoraConfig(r=2, target_modules=["q_proj"]))
    for name, p in peft_policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, 0, 1.0)
    ids = torch.randint(1, 40, (2, 6), generator=torch.Generator().manual_seed(3))
    base_lp, _ = token_logprobs(_tiny_lm(), ids, torch.ones_like(ids))
    with torch.no_grad():
        moved, _ = token_logprobs(peft_policy, ids, torch.ones_like(ids))
        model, ctx = reference_context(peft_policy, None)
        with ctx:
            ref_lp, _ = token_logprobs(model, ids, torch.ones_like(ids))
    assert model is peft_policy
    assert torch.allclose(ref_lp, base_lp, atol=1e-6)  # the adapter is off inside the context
    assert not torch.allclose(moved, base_lp, atol=1e-3)


# ------------------------------------------------------------------ rollouts run by query length


def _mixed_rollout(g, q_lens):
    """Left-padded queries of ``q_lens`` tokens (width their max), 6-token responses."""
    q_lens = torch.tensor(q_lens)
    tq = int(q_lens.max())
    qmask = (torch.arange(tq)[None] >= (tq - q_lens)[:, None]).long()
    query = torch.randint(1, 40, (len(q_lens), tq), generator=g) * qmask
    resp = torch.randint(1, 40, (len(q_lens), 6), generator=g)
    attn = torch.cat([qmask, torch.ones_like(resp)], 1)
    return torch.cat([query, resp], 1), attn, (attn.cumsum(-1) - 1).clamp(min=0), tq


def test_query_length_halves_split_only_where_it_drops_enough_padding():
    from mplus.models.logprobs import MIN_TRIM_ROWS, query_length_halves

    g = torch.Generator().manual_seed(0)
    n = 2 * MIN_TRIM_ROWS
    _, attn, _, tq = _mixed_rollout(g, [2, 20] * (n // 2))  # half the rows: 18 pad columns
    (short, c_short), (long, c_long) = query_length_halves(attn, tq)
    assert c_short == 18 and c_long == 0  # the short half drops its 18 leading pad columns
    assert sorted(short.tolist()) == list(range(0, n, 2))
    assert sorted(long.tolist()) == list(range(1, n, 2))
    _, attn, _, tq = _mixed_rollout(g, [19, 20] * (n // 2))  # one pad column: not worth it
    assert query_length_halves(attn, tq) is None
    _, attn, _, tq = _mixed_rollout(g, [2, 20] * (n // 2 - 1))  # halves under MIN_TRIM_ROWS
    assert query_length_halves(attn, tq) is None


def test_rollout_logprobs_by_query_length_equal_one_forward_with_their_gradients():
    """Split (two halves without their unneeded padding, put back in order) or not, the same
    log-probs, logits and parameter gradients up to float rounding."""
    from mplus.models.logprobs import MIN_TRIM_ROWS, query_length_halves, rollout_logprobs

    model, g = _tiny_lm(), torch.Generator().manual_seed(3)
    lens = torch.randint(2, 20, (2 * MIN_TRIM_ROWS,), generator=g).tolist()
    lens[5] = 20
    seq, attn, pos, tq = _mixed_rollout(g, lens)
    assert query_length_halves(attn, tq) is not None  # the split runs
    outs = []
    for split in (True, False):
        model.zero_grad()
        if split:
            lp, logits = rollout_logprobs(model, seq, attn, pos, tq, temperature=0.7)
        else:
            lp, logits = token_logprobs(model, seq, attn, pos, start=tq - 1, temperature=0.7)
        (lp.sum() + logits.square().mean()).backward()
        outs.append((lp.detach(), logits.detach(), [p.grad.clone() for p in model.parameters()]))
    (lp_a, lg_a, gr_a), (lp_b, lg_b, gr_b) = outs
    assert lp_a.shape == (len(lens), 6)
    torch.testing.assert_close(lp_a, lp_b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lg_a, lg_b, rtol=1e-5, atol=1e-5)
    for a, b in zip(gr_a, gr_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
