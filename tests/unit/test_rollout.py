"""Rollout: stop detection on hand-built token lists, then HFGenerateEngine on a tiny random model."""

from __future__ import annotations

import pytest
import torch

from mplus.rollout import HFGenerateEngine, Rollout, find_response_end, strip_stop

HUMAN = "\n\nHuman:"
EOS, PAD = 1, 0


def _ids(n: int, start: int = 10) -> list[int]:
    return list(range(start, start + n))


# --- find_response_end ---------------------------------------------------------------------------


def test_eos_in_the_middle_keeps_eos_and_drops_what_follows():
    pieces = [" Hi", " there", "<eos>", "<pad>", "<pad>"]
    assert find_response_end(pieces, [10, 11, EOS, PAD, PAD], EOS, PAD, [HUMAN]) == (3, True)


def test_stop_string_split_across_tokens_keeps_the_completing_token():
    pieces = [" ok", "\n", "\nHu", "man", ":", " more"]
    assert find_response_end(pieces, _ids(6), EOS, PAD, [HUMAN]) == (5, True)


def test_stop_string_starting_mid_token():
    assert find_response_end([" ok.\n", "\nHuman", ": hi"], _ids(3), EOS, PAD, [HUMAN]) == (3, True)
    assert find_response_end([" ok.\n\nHum", "an:", " x"], _ids(3), EOS, PAD, [HUMAN]) == (2, True)


def test_stop_string_inside_one_token_with_text_after_it():
    pieces = [" ok", "\n\nHuman: hi", " x"]
    assert find_response_end(pieces, _ids(3), EOS, PAD, [HUMAN]) == (2, True)


def test_no_stop_without_padding_is_truncated_at_full_length():
    assert find_response_end([" a", " b", " c"], _ids(3), EOS, PAD, [HUMAN]) == (3, False)


def test_no_stop_with_trailing_padding_drops_the_padding():
    pieces = [" a", " b", "<pad>", "<pad>"]
    assert find_response_end(pieces, [10, 11, PAD, PAD], EOS, PAD, [HUMAN]) == (2, False)


def test_partial_stop_string_at_the_end_is_not_a_stop():
    assert find_response_end([" a", "\n\nHum"], _ids(2), EOS, PAD, [HUMAN]) == (2, False)
    assert find_response_end([" a", "\n\nHuman", " b"], _ids(3), EOS, PAD, [HUMAN]) == (3, False)


def test_stop_at_the_very_first_token():
    assert find_response_end(["\n\nHuman:", " hi"], _ids(2), EOS, PAD, [HUMAN]) == (1, True)
    assert find_response_end(["<eos>", "<pad>"], [EOS, PAD], EOS, PAD, [HUMAN]) == (1, True)


def test_multiple_stop_strings_first_completion_wins():
    stops = [HUMAN, "\n\nAssistant:"]
    pieces = [" a", "\n\nAssist", "ant:", "\n\nHuman:"]
    assert find_response_end(pieces, _ids(4), EOS, PAD, stops) == (3, True)
    # "cd" completes at token 1 although "abcdef" started earlier.
    assert find_response_end(["ab", "cd", "ef"], _ids(3), EOS, PAD, ["abcdef", "cd"]) == (2, True)


def test_eos_before_stop_string_and_stop_string_before_eos():
    assert find_response_end([" a", "<eos>", HUMAN], [10, EOS, 11], EOS, PAD, [HUMAN]) == (2, True)
    assert find_response_end([" a", HUMAN, "<eos>"], [10, 11, EOS], EOS, PAD, [HUMAN]) == (2, True)


def test_pad_equal_to_eos_counts_the_first_as_eos():
    assert find_response_end([" a", "</s>", "</s>"], [10, EOS, EOS], EOS, EOS, [HUMAN]) == (2, True)


def test_no_special_ids_no_stop_strings_and_empty_input():
    assert find_response_end([" a", "<pad>"], [10, PAD], None, None, []) == (2, False)
    assert find_response_end([" a", HUMAN], [10, 11], None, None, [""]) == (2, False)
    assert find_response_end([], [], EOS, PAD, [HUMAN]) == (0, False)


def test_pieces_and_ids_must_have_the_same_length():
    with pytest.raises(ValueError, match="pieces"):
        find_response_end([" a"], [10, 11], EOS, PAD, [HUMAN])


# --- Rollout helpers -----------------------------------------------------------------------------


def test_sequence_mask_and_position_ids_on_a_left_padded_batch():
    r = Rollout(
        query_ids=torch.tensor([[PAD, PAD, 5, 6], [7, 8, 9, 10]]),
        query_mask=torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]),
        response_ids=torch.tensor([[11, 12, PAD], [13, PAD, PAD]]),
        response_mask=torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
        stopped=torch.tensor([True, False]),
        response_lengths=torch.tensor([2, 1]),
        prompts=["a", "b"],
        responses=["x", "y"],
    )
    assert r.sequence_ids().tolist() == [[PAD, PAD, 5, 6, 11, 12, PAD], [7, 8, 9, 10, 13, PAD, PAD]]
    assert r.sequence_mask().tolist() == [[0, 0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0]]
    assert r.position_ids().tolist() == [[0, 0, 0, 1, 2, 3, 3], [0, 1, 2, 3, 4, 4, 4]]


# --- strip_stop ----------------------------------------------------------------------------------


def test_strip_stop():
    assert strip_stop(" Sure.\n\nHuman: and?", [HUMAN]) == " Sure."
    assert strip_stop(" No stop here", [HUMAN]) == " No stop here"
    assert strip_stop(" a\n\nAssistant: b\n\nHuman: c", [HUMAN, "\n\nAssistant:"]) == " a"
    assert strip_stop("\n\nHuman: x", [HUMAN]) == ""
    assert strip_stop(" kept", ["", HUMAN]) == " kept"


# --- HFGenerateEngine on a tiny random Mistral ---------------------------------------------------

CORPUS = [
    "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, salt and yeast.",
    "\n\nHuman: What is the capital of France?\n\nAssistant: Paris is the capital.",
    "\n\nHuman: Can you help me with my homework?\n\nAssistant: Sure, what is the question?",
    "\n\nHuman: Tell me a joke.\n\nAssistant: Why did the chicken cross the road?",
    "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.",
    "\n\nHuman: What time is it?\n\nAssistant: I don't have a clock, sorry.",
    "\n\nHuman: Thanks!\n\nAssistant: You're welcome. Anything else?",
    "\n\nHuman: Why is the sky blue?\n\nAssistant: Sunlight scatters off the air.",
    "\n\nHuman: Write a poem about the sea.\n\nAssistant: The sea is wide and deep and blue.",
    "\n\nHuman: Is it safe to swim after eating?\n\nAssistant: Yes, it is generally fine.",
] * 4


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


@pytest.fixture(scope="module")
def model(tokenizer):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return MistralForCausalLM(config).eval()


PROMPTS = [
    "\n\nHuman: Hi\n\nAssistant:",
    "\n\nHuman: How do I bake bread at home without yeast?\n\nAssistant:",
    "\n\nHuman: Tell me a joke.\n\nAssistant: Why?\n\nHuman: Another one please.\n\nAssistant:",
]


def _kept(rollout: Rollout, b: int) -> list[int]:
    return rollout.response_ids[b, : int(rollout.response_lengths[b])].tolist()


def _force(model, scripts: list[list[int]]):
    """Makes row b of the next generate() emit scripts[b] (then repeat its last token)."""
    step = {"n": 0}

    def hook(module, inputs, logits):  # logits: (B, t, V)
        forced = torch.full_like(logits[:, -1], -1e4)
        for b, script in enumerate(scripts):
            forced[b, script[min(step["n"], len(script) - 1)]] = 1e4
        step["n"] += 1
        logits = logits.clone()
        logits[:, -1] = forced
        return logits

    return model.lm_head.register_forward_hook(hook)


def test_batch_shapes_padding_and_masks(tokenizer, model):
    engine = HFGenerateEngine(tokenizer, max_new_tokens=10, temperature=1.0, top_k=20)
    torch.manual_seed(1)
    r = engine.generate(model, PROMPTS)
    B, Tq = r.query_ids.shape
    Tr = r.response_ids.shape[1]
    assert B == len(PROMPTS) and 1 <= Tr <= 10
    assert r.query_mask.shape == (B, Tq) and r.response_mask.shape == (B, Tr)
    assert r.stopped.shape == (B,) and r.stopped.dtype == torch.bool
    assert r.response_mask.dtype == torch.float32
    lengths = [len(tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert Tq == max(lengths)
    for b, n in enumerate(lengths):
        # Left padding: pads first, then exactly the prompt's own tokens.
        assert r.query_mask[b].tolist() == [0] * (Tq - n) + [1] * n
        assert r.query_ids[b, Tq - n :].tolist() == tokenizer(PROMPTS[b])["input_ids"]
        assert (r.query_ids[b, : Tq - n] == tokenizer.pad_token_id).all()
        k = int(r.response_lengths[b])
        assert r.response_mask[b].tolist() == [1.0] * k + [0.0] * (Tr - k)
        assert (r.response_ids[b, k:] == tokenizer.pad_token_id).all()
        # Not stopped means it used the whole budget.
        assert bool(r.stopped[b]) or k == 10
    assert r.response_lengths.tolist() == r.response_mask.sum(-1).long().tolist()
    assert r.prompts == PROMPTS and len(r.responses) == B
    assert r.sequence_ids().shape == (B, Tq + Tr)
    assert torch.equal(r.sequence_mask()[:, Tq:], r.response_mask.long())
    pos = r.position_ids()
    assert pos[0, Tq - lengths[0] :].tolist()[: lengths[0]] == list(range(lengths[0]))
    assert r.gen_seconds > 0 and r.tokens_per_s == pytest.approx(
        float(r.response_lengths.sum()) / r.gen_seconds
    )


def test_greedy_batch_equals_each_prompt_alone(tokenizer, model):
    engine = HFGenerateEngine(tokenizer, max_new_tokens=12, temperature=0.0)
    batch = engine.generate(model, PROMPTS)
    for b, prompt in enumerate(PROMPTS):
        alone = engine.generate(model, [prompt])
        assert alone.query_mask.all()
        assert _kept(batch, b) == _kept(alone, 0)
        assert batch.responses[b] == alone.responses[0]
        assert bool(batch.stopped[b]) == bool(alone.stopped[0])


def test_forward_over_sequence_reproduces_greedy_tokens(tokenizer, model):
    """Logits at columns Tq-1 .. Tq+Tr-2 predict response tokens 0 .. Tr-1."""
    engine = HFGenerateEngine(tokenizer, max_new_tokens=12, temperature=0.0)
    r = engine.generate(model, PROMPTS)
    Tq = r.query_ids.shape[1]
    with torch.no_grad():
        logits = model(
            input_ids=r.sequence_ids(),
            attention_mask=r.sequence_mask(),
            position_ids=r.position_ids(),
        ).logits
    predicted = logits[:, Tq - 1 : -1].argmax(-1)  # (B, Tr)
    kept = r.response_mask.bool()
    assert torch.equal(predicted[kept], r.response_ids[kept])


def test_stop_string_ends_one_row_while_the_other_runs_on(tokenizer, model):
    stop_script = tokenizer(" Sure.\n\nHuman: again and again")["input_ids"]
    long_script = tokenizer(" fine" * 20)["input_ids"]
    handle = _force(model, [stop_script, long_script])
    try:
        engine = HFGenerateEngine(tokenizer, max_new_tokens=12, temperature=0.0)
        r = engine.generate(model, PROMPTS[:2])
    finally:
        handle.remove()
    assert r.stopped.tolist() == [True, False]
    assert r.responses[0] == " Sure."
    text0 = tokenizer.decode(_kept(r, 0))
    assert text0.startswith(" Sure.\n\nHuman:") and "again" not in text0
    assert int(r.response_lengths[1]) == 12
    assert r.responses[1] == tokenizer.decode(long_script[:12])


def test_eos_ends_the_response_and_is_kept_but_not_in_the_text(tokenizer, model):
    script = [*tokenizer(" Paris")["input_ids"], tokenizer.eos_token_id, *_ids(3, 40)]
    handle = _force(model, [script])
    try:
        r = HFGenerateEngine(tokenizer, max_new_tokens=8, temperature=0.0).generate(
            model, PROMPTS[:1]
        )
    finally:
        handle.remove()
    n = len(script) - 3
    assert bool(r.stopped[0]) and int(r.response_lengths[0]) == n
    assert _kept(r, 0)[-1] == tokenizer.eos_token_id
    assert r.responses == [" Paris"]


def test_prompts_are_truncated_from_the_left(tokenizer, model):
    engine = HFGenerateEngine(tokenizer, max_new_tokens=4, temperature=0.0, max_prompt_length=8)
    r = engine.generate(model, PROMPTS)
    assert r.query_ids.shape[1] == 8
    full = [tokenizer(p)["input_ids"] for p in PROMPTS]
    assert r.n_prompts_truncated == sum(len(ids) > 8 for ids in full) > 0
    for b, ids in enumerate(full):
        # The end of the prompt ("...Assistant:") survives.
        assert r.query_ids[b, -min(8, len(ids)) :].tolist() == ids[-8:]


def test_mode_and_tokenizer_state_are_restored(tokenizer, model):
    side = tokenizer.padding_side
    model.train()
    try:
        HFGenerateEngine(tokenizer, max_new_tokens=3).generate(model, PROMPTS[:2])
        assert model.training
    finally:
        model.eval()
    assert tokenizer.padding_side == side


def test_bad_settings_fail_at_construction(tokenizer):
    with pytest.raises(ValueError, match="max_new_tokens"):
        HFGenerateEngine(tokenizer, max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        HFGenerateEngine(tokenizer, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        HFGenerateEngine(tokenizer, temperature=-1.0)


def test_sentencepiece_style_tokenizer_keeps_the_leading_space():
    """Metaspace decoders (Mistral, Llama) drop a text's leading space; responses must not."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<pad>", "<eos>"], show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    sp = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    script = sp(" Sure.\n\nHuman: again")["input_ids"]
    assert sp.decode(script).startswith("Sure.")  # the loss this test guards against
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(sp),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    sp_model = MistralForCausalLM(config).eval()
    handle = _force(sp_model, [script])
    try:
        r = HFGenerateEngine(sp, max_new_tokens=12, temperature=0.0).generate(sp_model, PROMPTS[:1])
    finally:
        handle.remove()
    assert bool(r.stopped[0])
    assert r.responses == [" Sure."]


def test_left_truncation_keeps_a_leading_bos(tokenizer):
    from tokenizers import processors
    from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

    backend = tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str())
    backend.add_special_tokens(["<bos>"])
    bos_id = backend.token_to_id("<bos>")
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", bos_id)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    ids = tok(PROMPTS[1])["input_ids"]
    assert ids[0] == bos_id and len(ids) > 8
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    engine = HFGenerateEngine(tok, max_new_tokens=2, temperature=0.0, max_prompt_length=8)
    r = engine.generate(MistralForCausalLM(config).eval(), [PROMPTS[1]])
    assert r.query_ids[0].tolist() == [bos_id, *ids[-7:]]
    assert r.n_prompts_truncated == 1


def test_heldout_kl_skips_the_forwards_only_while_the_policy_is_the_reference(tokenizer, model):
    """Before RL the policy's weights are the reference's: KL 0 with no forward of either;
    once they differ (one parameter nudged, or another dtype) the forwards run and KL is not 0."""
    import copy

    from mplus.eval.heldout import evaluate_policy
    from mplus.models.logprobs import identical_weights

    engine = HFGenerateEngine(tokenizer, max_new_tokens=6, temperature=1.0)
    ref = copy.deepcopy(model)
    calls: list[int] = []
    ref.register_forward_hook(lambda *a: calls.append(1))
    assert identical_weights(model, ref) and identical_weights(model, model)
    out = evaluate_policy(model, tokenizer, PROMPTS, engine, ref_model=ref)
    assert out["kl"] == 0.0 and calls == []

    assert not identical_weights(model, copy.deepcopy(model).double())
    with torch.no_grad():
        ref.model.norm.weight.mul_(1.5)
    assert not identical_weights(model, ref)
    out = evaluate_policy(model, tokenizer, PROMPTS, engine, ref_model=ref)
    assert len(calls) == 1 and out["kl"] != 0.0
