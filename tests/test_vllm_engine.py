"""The vLLM rollout engine against the HF one on the tiny test base (needs vllm: skipped without).

One vLLM engine serves the whole module (its first generate warms up for ~20 s on CPU). The
policy is trained for a few optimiser steps between rollouts, so equality after the update means
the weights were synced (the greedy responses differ from the untrained ones).

Run with the vLLM venv: ``VLLM_ENABLE_V1_MULTIPROCESSING=0 PYTHONPATH=. /tmp/vllm-venv/bin/python
-m pytest tests/test_vllm_engine.py -q -s`` (``-s`` shows the measured log-prob gap).
"""

from __future__ import annotations

import os

import pytest

vllm = pytest.importorskip("vllm")

import torch  # noqa: E402

from mplus.data.synthetic import SyntheticTask  # noqa: E402
from mplus.models.logprobs import token_logprobs  # noqa: E402
from mplus.rollout import HFGenerateEngine, make_engine  # noqa: E402
from mplus.rollout.vllm_engine import VLLMBackend, VLLMEngine  # noqa: E402

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

PROMPTS = SyntheticTask(seed=0).prompts(8, split="test")
SAMPLING = dict(max_new_tokens=20, stop_strings=(), max_prompt_length=192)


@pytest.fixture(scope="module")
def setup(cache_dir):
    """(tokenizer, policy, backend): the tiny base in float32 and one vLLM engine for it."""
    from hydra import compose, initialize_config_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mplus.config import validate
    from mplus.models.base import ensure_tiny_base
    from tests.conftest import REPO, TEST_MODEL

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = validate(
            compose("train", overrides=[*TEST_MODEL, f"cache_dir={cache_dir}", "run_dir=."])
        )
    base = ensure_tiny_base(cfg.model, cache_dir)  # the one the cache_dir fixture built
    tok = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    backend = VLLMBackend(tok, seed=0, gpu=False, cpu_kv_cache_gib=0.25)
    yield tok, policy, backend
    backend.close()


def _same(a, b) -> None:
    assert a.response_ids.tolist() == b.response_ids.tolist()
    assert a.response_mask.tolist() == b.response_mask.tolist()
    assert a.stopped.tolist() == b.stopped.tolist()
    assert a.responses == b.responses
    assert a.query_ids.tolist() == b.query_ids.tolist()


def _train(policy, tok, steps: int = 4) -> None:
    """A few AdamW steps on the log-likelihood of one fixed response after every prompt: the
    greedy responses move towards it."""
    target = " I'm sorry, I can't help with that. Blue."
    texts = [p + target for p in PROMPTS]
    batch = tok(texts, return_tensors="pt", padding=True)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    policy.train()
    for _ in range(steps):
        out = policy(
            **batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        )
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    policy.eval()


def test_greedy_rollouts_equal_hf_before_and_after_updates(setup):
    tok, policy, backend = setup
    hf = HFGenerateEngine(tok, temperature=0.0, **SAMPLING)
    ve = VLLMEngine(tok, temperature=0.0, backend=backend, **SAMPLING)
    before_hf, before_v = hf.generate(policy, PROMPTS), ve.generate(policy, PROMPTS)
    _same(before_v, before_hf)
    assert before_hf.sampler_logprobs is None
    assert before_v.sampler_logprobs.shape == before_v.response_ids.shape
    n_syncs = backend.n_syncs
    _train(policy, tok)
    after_hf, after_v = hf.generate(policy, PROMPTS), ve.generate(policy, PROMPTS)
    assert backend.n_syncs == n_syncs + 1
    assert after_hf.responses != before_hf.responses  # the update changed what greedy says ...
    _same(after_v, after_hf)  # ... and vLLM says the same: its weights were synced


def test_stop_strings_cut_identically_mid_token_and_across_tokens(setup):
    tok, policy, backend = setup
    hf = HFGenerateEngine(tok, temperature=0.0, **SAMPLING)
    ro = hf.generate(policy, PROMPTS[:1])
    ids = ro.response_ids[0, : int(ro.response_lengths[0])].tolist()
    pieces = tok.batch_decode([[i] for i in ids])
    # a stop that starts inside one token and ends inside a later one
    k = next(i for i in range(1, len(pieces) - 1) if len(pieces[i]) > 1 and len(pieces[i + 1]) > 1)
    stop = pieces[k][1:] + pieces[k + 1][:1]
    assert stop and stop not in "".join(pieces[: k + 1])
    sampling = {**SAMPLING, "stop_strings": (stop, "\n\nHuman:")}
    a = HFGenerateEngine(tok, temperature=0.0, **sampling).generate(policy, PROMPTS)
    b = VLLMEngine(tok, temperature=0.0, backend=backend, **sampling).generate(policy, PROMPTS)
    _same(b, a)
    assert bool(a.stopped[0]) and int(a.response_lengths[0]) == k + 2
    assert stop not in a.responses[0]


def test_sampler_logprobs_match_the_training_forward(setup):
    tok, policy, backend = setup
    temperature = 0.8
    ve = make_engine("vllm", tok, backend=backend, temperature=temperature, **SAMPLING)
    keys = list(range(100, 100 + 2 * len(PROMPTS)))
    ro = ve.generate(policy, PROMPTS * 2, keys=keys)
    again = ve.generate(policy, (PROMPTS * 2)[::-1], keys=keys[::-1])
    assert again.responses[::-1] == ro.responses  # keyed rows do not depend on the batch
    with torch.no_grad():
        logp, _ = token_logprobs(
            policy,
            ro.sequence_ids(),
            ro.sequence_mask(),
            ro.position_ids(),
            start=ro.query_ids.shape[1] - 1,
            temperature=temperature,
        )
    mask = ro.response_mask.bool()
    diff = (logp[mask] - ro.sampler_logprobs[mask]).abs()
    print(
        f"\nsampler_logprobs vs training forward (T={temperature}, {int(mask.sum())} tokens): "
        f"mean abs diff {diff.mean():.2e}, max {diff.max():.2e}"
    )
    assert float(diff.mean()) < 1e-3 and float(diff.max()) < 1e-2
    assert (ro.sampler_logprobs[~mask] == 0).all()


def test_lora_policy_syncs_merged_weights_and_stays_unmerged(setup):
    from peft import LoraConfig, get_peft_model

    tok, policy, backend = setup
    torch.manual_seed(1)
    peft_policy = get_peft_model(
        policy, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    with torch.no_grad():  # a trained-looking adapter: B != 0, large enough to change greedy
        for n, p in peft_policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    peft_policy.eval()
    hf = HFGenerateEngine(tok, temperature=0.0, **SAMPLING)
    ve = VLLMEngine(tok, temperature=0.0, backend=backend, **SAMPLING)
    with peft_policy.disable_adapter():
        plain = hf.generate(peft_policy, PROMPTS)
    a, b = hf.generate(peft_policy, PROMPTS), ve.generate(peft_policy, PROMPTS)
    assert a.responses != plain.responses  # the adapter matters ...
    _same(b, a)  # ... and vLLM got the merged weights
    assert not any(getattr(m, "merged", False) for m in peft_policy.modules())
    peft_policy.unload()  # the module's policy goes back to the plain model


def test_an_architecture_vllm_lacks_is_refused_at_first_use(setup):
    from transformers import MistralForCausalLM

    from mplus.errors import UserError

    tok, policy, _ = setup

    class TinyUnknownForCausalLM(MistralForCausalLM):
        pass

    model = TinyUnknownForCausalLM(policy.config)
    engine = VLLMEngine(tok, temperature=0.0, gpu=False, **SAMPLING)
    with pytest.raises(UserError, match="has no TinyUnknownForCausalLM.*algo.rollout.engine=hf"):
        engine.generate(model, PROMPTS[:1])
    assert engine.backend.llm is None


def test_row_seed_repeats_the_draws_of_every_call(setup):
    tok, policy, backend = setup
    ve = make_engine("vllm", tok, backend=backend, row_seed=7, temperature=1.0, **SAMPLING)
    a, b = ve.generate(policy, PROMPTS), ve.generate(policy, PROMPTS)
    assert a.responses == b.responses  # the held-out eval's same-stream-for-every-model rule
    free = make_engine("vllm", tok, backend=backend, temperature=1.0, **SAMPLING)
    assert free.generate(policy, PROMPTS).responses != free.generate(policy, PROMPTS).responses
