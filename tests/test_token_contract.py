"""One text -> ids rule for every stage, checked on the real Mistral-7B tokenizer and the tiny one.

For the same (prompt, response) the ids that the rollout, reward-model training and scoring, the
value model, DPO, SFT, the held-out evaluation and ``mplus.eval`` feed a model must be identical:
the tokenizer's BOS exactly once at the start, EOS where the stage appends it, prompt ids a prefix
of prompt+response ids. The reward model reads its score at the EOS.
"""

from __future__ import annotations

import pytest
import torch

from mplus.data.synthetic import KnowledgeItem
from mplus.data.types import PreferencePair
from mplus.models.tokenizer import encode_pairs, encode_prompts, encode_texts, load_tokenizer

PROMPTS = [
    "\n\nHuman: How do I steal a car?\n\nAssistant:",
    "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.\n\nHuman: And of Italy?"
    "\n\nAssistant:",
    "\n\nHuman: Say a word.\n\nAssistant: The capital is",  # SentencePiece merges "is"+"n't"
]
RESPONSES = [" I can't help with that.", " Rome is the capital of Italy.", "n't known"]


@pytest.fixture(scope="module", params=["mistral", "tiny"])
def tok(request, mistral_tokenizer_dir, cache_dir):
    if request.param == "mistral":
        return load_tokenizer(str(mistral_tokenizer_dir))
    return load_tokenizer(str(_tiny_base(cache_dir)))


def _tiny_base(cache_dir):
    return next(p.parent for p in cache_dir.rglob("config.json"))


def _strip(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]


def _seq_classifier(vocab: int, pad: int):
    from transformers import MistralConfig, MistralForSequenceClassification

    torch.manual_seed(0)
    cfg = MistralConfig(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=pad,
        sliding_window=None,
    )
    return MistralForSequenceClassification(cfg).eval()


def _recording(model) -> list[torch.Tensor]:
    """Record (input_ids, attention_mask) of every forward call of ``model``."""
    seen: list = []
    model.register_forward_pre_hook(
        lambda m, args, kw: seen.append((kw["input_ids"].cpu(), kw["attention_mask"].cpu())),
        with_kwargs=True,
    )
    return seen


def test_bos_once_and_prompt_is_a_prefix(tok):
    ids, lens = encode_pairs(tok, PROMPTS, RESPONSES)
    prompts = encode_prompts(tok, PROMPTS)
    for row, n, p in zip(ids, lens, prompts, strict=True):
        assert row[:n] == p  # the query the rollout generates from is the prompt part
        assert row[-1] == tok.eos_token_id and row.count(tok.eos_token_id) == 1
        if tok.bos_token_id is not None and tok("a")["input_ids"][0] == tok.bos_token_id:
            assert row[0] == tok.bos_token_id and row.count(tok.bos_token_id) == 1
        else:
            assert tok.bos_token_id is None or tok.bos_token_id not in row
    # decoding the response part gives the response back
    for row, n, r in zip(ids, lens, RESPONSES, strict=True):
        assert tok.decode(row[n:-1]).strip() == r.strip()
    assert encode_texts(tok, ["x y"])[0] == encode_pairs(tok, ["x y"], [""])[0][0]


def test_real_tokenizer_facts(mistral_tokenizer_dir):
    t = load_tokenizer(str(mistral_tokenizer_dir))
    assert (len(t), t.bos_token_id, t.eos_token_id) == (32000, 1, 2)
    assert t.pad_token_id == t.unk_token_id == 0  # no pad shipped: unk, never EOS
    ids, _ = encode_pairs(t, ["\n\nHuman: How do I steal a car?"], [""], eos=False)
    assert ids[0][:8] == [1, 28705, 13, 13, 28769, 6366, 28747, 1602]


def test_every_stage_feeds_the_same_ids(tok):
    """Rollout, value, RM training/scoring, DPO, SFT, held-out evaluation, mplus.eval."""
    from mplus.data.collate import PairDataset, SFTCollator, SFTDataset
    from mplus.eval.heldout import corpus_nll, evaluate_policy, knowledge_probe
    from mplus.models.reward import score_texts
    from mplus.rollout import HFGenerateEngine

    want, lens = encode_pairs(tok, PROMPTS, RESPONSES)
    pairs = [PreferencePair(p, r, " No.") for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    # RM training and DPO: the same dataset class; SFT its own
    rm_items = PairDataset(pairs, tok).items
    assert [it["chosen"] for it in rm_items] == want
    assert [it["prompt_len"] for it in rm_items] == lens
    sft = SFTDataset(pairs, tok)
    assert [it["input_ids"] for it in sft.items] == want
    batch = SFTCollator(tok.pad_token_id)(sft.items)
    for row, n, lab in zip(want, lens, batch["labels"], strict=True):
        assert lab[:n].eq(-100).all() and lab[n : len(row)].tolist() == row[n:]

    # Rollout: a policy that "samples" exactly the contract's response ids (EOS included).
    policy = _forced_policy(tok, [row[n:] for row, n in zip(want, lens, strict=True)])
    engine = HFGenerateEngine(tok, max_new_tokens=64, stop_strings=("\n\nHuman:",))
    ro = engine.generate(policy, PROMPTS)
    assert policy.queries == [row[:n] for row, n in zip(want, lens, strict=True)]
    assert _strip(ro.sequence_ids(), ro.sequence_mask()) == want  # what policy/value/ref see
    assert [r.strip() for r in ro.responses] == [r.strip() for r in RESPONSES]

    # Scoring (PPO's reward, held-out evaluation, mplus.eval harmlessness) sees RM-training ids.
    rm = _seq_classifier(len(tok), tok.pad_token_id)
    seen = _recording(rm)
    score_texts(rm, tok, PROMPTS, RESPONSES)
    assert _strip(*seen[-1]) == want
    seen.clear()
    out = evaluate_policy(policy, tok, PROMPTS, engine, reward_model=rm)
    assert _strip(*seen[-1]) == [
        encode_pairs(tok, [p], [r])[0][0] for p, r in zip(PROMPTS, ro.responses, strict=True)
    ]
    assert "reward" in out
    # the probe: whole texts, BOS once, EOS appended (batched by length: in any order)
    lm_seen = _recording(policy)
    corpus_nll(policy, tok, [p + r for p, r in zip(PROMPTS, RESPONSES, strict=True)])
    assert sorted(_strip(*lm_seen[-1])) == sorted(
        encode_texts(tok, [p + r for p, r in zip(PROMPTS, RESPONSES, strict=True)])
    )
    # the knowledge probe: prefix + each candidate, BOS once, no EOS
    item = KnowledgeItem("The day after Monday is", " Tuesday", (" Tuesday", " Friday"))
    knowledge_probe(policy, tok, [item])
    assert sorted(_strip(*lm_seen[-1])) == sorted(
        encode_pairs(tok, [item.prefix] * 2, list(item.candidates), eos=False)[0]
    )


def test_mplus_eval_harmlessness_feeds_the_same_ids(tok, tmp_path, monkeypatch):
    """``python -m mplus.eval``'s generation and reward scoring (harmlessness suite)."""
    from types import SimpleNamespace

    import mplus.eval.harmlessness as H

    want, lens = encode_pairs(tok, PROMPTS, RESPONSES)
    policy = _forced_policy(tok, [row[n:] for row, n in zip(want, lens, strict=True)])
    rm = _seq_classifier(len(tok), tok.pad_token_id)
    seen = _recording(rm)
    monkeypatch.setattr(H, "load_classifier", lambda *a, **k: (rm, tok))
    cfg = SimpleNamespace(
        max_new_tokens=64,
        temperature=0.0,
        top_p=1.0,
        stop_strings=["\n\nHuman:"],
        max_prompt_length=None,
        batch_size=8,
        reward_model="unused",
        reward_batch_size=8,
        limit=None,
    )
    suite = H.HarmlessnessSuite(
        cfg, limit=None, seed=0, out_dir=tmp_path, device="cpu", attn="sdpa"
    )
    suite.items = [("harmless-base", p) for p in PROMPTS]
    suite.run_model("m", policy, tok)
    suite.finish(["m"])
    assert _strip(*seen[-1]) == want
    assert policy.queries == [row[:n] for row, n in zip(want, lens, strict=True)]


def _forced_policy(tok, forced: list[list[int]]):
    """A small causal LM whose ``generate`` "samples" exactly ``forced`` (one row per prompt) and
    records the unpadded query ids it was given."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    policy = MistralForCausalLM(
        MistralConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            sliding_window=None,
        )
    ).eval()
    policy.queries = []

    def fake_generate(input_ids, attention_mask, **kw):
        policy.queries += _strip(input_ids, attention_mask)
        width = max(len(f) for f in forced)
        out = torch.full((len(forced), width), tok.pad_token_id)
        for i, f in enumerate(forced):
            out[i, : len(f)] = torch.tensor(f)
        return type("Out", (), {"sequences": torch.cat([input_ids, out], 1)})()

    policy.generate = fake_generate
    return policy


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_reward_model_reads_its_score_at_the_eos(tok, pad_is_eos):
    from mplus.data.collate import pad_right
    from mplus.models.reward import score_texts, sequence_scores, token_scores

    pad = tok.eos_token_id if pad_is_eos else tok.pad_token_id
    rm = _seq_classifier(len(tok), pad)
    ids, _ = encode_pairs(tok, PROMPTS, RESPONSES)
    x, mask = pad_right(ids, pad)
    per_token = token_scores(rm, x, mask)
    at_eos = torch.stack([per_token[i, len(r) - 1] for i, r in enumerate(ids)])
    assert torch.equal(sequence_scores(rm, x, mask), at_eos)
    old_tok_pad = tok.pad_token
    try:
        if pad_is_eos:
            tok.pad_token = tok.eos_token
        torch.testing.assert_close(score_texts(rm, tok, PROMPTS, RESPONSES), at_eos)
    finally:
        tok.pad_token = old_tok_pad
    if pad_is_eos:  # Hugging Face's own pooling reads the token before the EOS here
        before = torch.stack([per_token[i, len(r) - 2] for i, r in enumerate(ids)])
        torch.testing.assert_close(rm(input_ids=x, attention_mask=mask).logits[:, 0], before)


def test_pad_equal_to_eos_is_replaced_by_unk(mistral_tokenizer_dir):
    from mplus.models.tokenizer import ensure_pad_token

    t = load_tokenizer(str(mistral_tokenizer_dir))
    t.pad_token = t.eos_token
    ensure_pad_token(t)
    assert t.pad_token_id == t.unk_token_id != t.eos_token_id
