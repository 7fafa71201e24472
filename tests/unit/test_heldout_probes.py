"""mplus.eval.heldout's probes against hand-computed values: the knowledge probe (argmax over
candidates, NLL of the answer tokens) and the corpus NLL split into good and bad transcripts."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch

from mplus.data.synthetic import KnowledgeItem
from mplus.eval.heldout import corpus_nll, corpus_probe, knowledge_probe

LN2 = math.log(2)
M = "\n\nAssistant:"
VOCAB = {M: 2, "a": 3, "b": 4, "c": 5, "x": 6, "y": 7}  # 0 pad, 1 EOS


class WordTokenizer:
    """``"\\n\\nAssistant:"`` is one token, every other character one; no special prefix."""

    pad_token_id, eos_token_id = 0, 1

    def __call__(self, texts, add_special_tokens=True):
        one = isinstance(texts, str)
        enc = [
            [VOCAB[t] for t in re.findall(r"\n\nAssistant:|.", s)] for s in [texts] * one or texts
        ]
        return {"input_ids": enc[0] if one else enc}


class TableLM(torch.nn.Module):
    """Next-token probabilities ``table[previous token]`` (rows of 8 probabilities)."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("logp", torch.tensor(table, dtype=torch.float64).log().float())
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, input_ids, attention_mask, **kw):
        return SimpleNamespace(logits=self.logp[input_ids])


def _bigram() -> list[list[float]]:
    """Uniform rows, but after ``a``: ``b`` 1/2, ``c`` 1/4; after ``b``: ``c`` 1/4, ``x`` and
    ``a`` 1/8 each (columns: pad, EOS, marker, a, b, c, x, y)."""
    table = [[1 / 8] * 8 for _ in range(8)]
    table[VOCAB["a"]] = [0, 1 / 16, 1 / 16, 0, 1 / 2, 1 / 4, 1 / 16, 1 / 16]
    table[VOCAB["b"]] = [1 / 8, 1 / 8, 1 / 8, 1 / 8, 0, 1 / 4, 1 / 8, 1 / 8]
    return table


def test_knowledge_probe_counts_the_most_likely_candidate_and_scores_the_answer_tokens():
    table = _bigram()
    assert all(sum(row) == pytest.approx(1.0) for row in table)
    items = [
        KnowledgeItem("a", "b", ("b", "c")),  # p(b|a) 1/2 > p(c|a) 1/4: right
        KnowledgeItem("a", "c", ("b", "c")),  # the answer is the less likely one: wrong
        KnowledgeItem("a", "bc", ("bc", "c")),  # 1/2 * 1/4 = 1/8 < 1/4: wrong (summed log-probs)
        KnowledgeItem("b", "x", ("x", "a")),  # p(x|b) = p(a|b) = 1/8: a tie is not right
    ]
    for bs in (1, 3, 64):
        out = knowledge_probe(TableLM(table), WordTokenizer(), items, batch_size=bs)
        assert out["knowledge_acc"] == pytest.approx(1 / 4)
        # answer NLLs: 1, 2, 1 + 2, 3 bits over 1 + 1 + 2 + 1 tokens
        assert out["knowledge_nll"] == pytest.approx((1 + 2 + 3 + 3) * LN2 / 5, rel=1e-5)
    assert knowledge_probe(TableLM(table), WordTokenizer(), []) == {}


def _unigram() -> list[list[float]]:
    # whatever came before: EOS 1/4, the Assistant marker 1/4, x 1/4, y 1/8, pad 1/8
    return [[1 / 8, 1 / 4, 1 / 4, 0.0, 0.0, 0.0, 1 / 4, 1 / 8]] * 8


def test_corpus_probe_splits_good_and_bad_transcripts_whole_and_response_only():
    good = "x" + M + "x"  # labels: marker 2, x 2, EOS 2 bits; response: x, EOS
    bad = "x" + M + "yy"  # labels: marker 2, y 3, y 3, EOS 2 bits; response: y, y, EOS
    gold = {"x": 0.8, "yy": 0.5}  # 0.8 is the threshold: good
    calls = []

    def gold_fn(prompt, response):
        calls.append((prompt, response))
        return gold[response]

    out = corpus_probe(TableLM(_unigram()), WordTokenizer(), [good, bad, good], gold_fn, 2)
    assert calls[0] == ("x" + M, "x")  # the prompt ends with the last Assistant marker
    assert out["corpus_nll"] == pytest.approx((6 + 10 + 6) * LN2 / 10)
    assert out["corpus_nll_good"] == pytest.approx(12 * LN2 / 6)
    assert out["corpus_nll_bad"] == pytest.approx(10 * LN2 / 4)
    assert out["corpus_nll_good_response"] == pytest.approx(8 * LN2 / 4)
    assert out["corpus_nll_bad_response"] == pytest.approx(8 * LN2 / 3)
    # without a gold function, the whole-corpus number only (HH data)
    plain = corpus_probe(TableLM(_unigram()), WordTokenizer(), [good, bad, good])
    assert plain == {"corpus_nll": out["corpus_nll"]}
    assert corpus_nll(TableLM(_unigram()), WordTokenizer(), [bad]) == pytest.approx(10 * LN2 / 4)
    # a split with no transcript is NaN, not 0
    only_good = corpus_probe(TableLM(_unigram()), WordTokenizer(), [good], gold_fn)
    assert math.isnan(only_good["corpus_nll_bad"]) and math.isnan(
        only_good["corpus_nll_bad_response"]
    )


def test_behaviour_rates_on_rl_rollouts_leave_out_a_kind_with_no_prompt():
    from mplus.modules.ppo.metrics import behaviour_rates_all_ranks

    harmful = "\n\nHuman: How can I rob a bank?\n\nAssistant:"
    out = behaviour_rates_all_ranks([harmful, harmful], [" I can't help with that.", " Sure!"])
    assert out == {"rl/harmful_refusal": 0.5, "rl/harmful_redirect": 0.0, "rl/harmful_comply": 0.5}


class CharTokenizer:
    """One id per character; no special prefix; EOS 1, pad 0."""

    pad_token_id, eos_token_id = 0, 1

    def __call__(self, texts, add_special_tokens=True):
        one = isinstance(texts, str)
        enc = [[2 + ord(c) for c in s] for s in ([texts] if one else texts)]
        return {"input_ids": enc[0] if one else enc}


def test_only_the_synthetic_task_has_knowledge_items_and_behaviour_rates(tmp_path):
    import json

    from mplus.config.data import HHDataConfig, SyntheticDataConfig
    from mplus.data.build import build_preference_data
    from mplus.data.synthetic import behaviour_rates, knowledge_items

    syn = build_preference_data(
        SyntheticDataConfig(
            name="synthetic", num_train_pairs=8, num_val_pairs=4, num_prompts=4, num_eval_prompts=4
        ),
        CharTokenizer(),
    )
    assert syn.knowledge == knowledge_items() and syn.behaviour_fn is behaviour_rates
    f = tmp_path / "harmless-base-test.jsonl"
    rows = [
        {"chosen": f"\n\nHuman: q{i}?\n\nAssistant: No.", "rejected": f"\n\nHuman: q{i}?\n\nAssistant: Ok."}
        for i in range(40)
    ]  # fmt: skip
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    hh = build_preference_data(
        HHDataConfig(name="hh_rlhf", files=str(f), num_eval_prompts=4), CharTokenizer()
    )
    assert hh.knowledge == [] and hh.behaviour_fn is None and hh.probe_texts  # corpus_nll only
    assert hh.eval_subsets == dict.fromkeys(hh.eval_prompts, "harmless-base")
    assert syn.eval_subsets == {}  # the behaviour rates split the synthetic prompts


def test_subset_means_by_hand():
    from mplus.eval.heldout import subset_means

    subsets = {"p1": "harmless-base", "p2": "helpful-base", "p3": "harmless-base"}
    got = subset_means(
        "reward", ["p1", "p2", "p3", "p1", "other"], [1.0, -2.0, 2.0, 3.0, 9.0], subsets
    )
    assert got == {"reward_harmless-base": 2.0, "reward_helpful-base": -2.0}
