"""Exported ``policy/`` and ``reward_model/`` folders work as they are with plain transformers.

Most checks call :func:`mplus.export.export_model` directly on small models built from config;
one goes through ``python -m mplus.train algo=sft``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, read_summary

# Four HH prompts of different lengths (one to three turns).
HH_PROMPTS = [
    "\n\nHuman: Hi\n\nAssistant:",
    "\n\nHuman: What is the capital of France?\n\nAssistant:",
    "\n\nHuman: Can you help me plan a short trip to the seaside next weekend?\n\nAssistant:"
    " Sure, where do you live?\n\nHuman: In London.\n\nAssistant:",
    "\n\nHuman: hello\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me about cats."
    "\n\nAssistant: Cats are small carnivorous mammals.\n\nHuman: And dogs? Please give me a few"
    " facts about their history and behaviour.\n\nAssistant:",
]
MACHINE_KEYS = {"is_local", "local_files_only", "name_or_path", "_name_or_path"}


def _cfg(*overrides: str):
    from hydra import compose, initialize_config_dir

    from mplus.config import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return validate(
            compose("train", overrides=[*overrides, "cache_dir=/nonexistent", "run_dir=."])
        )


def _hh_tokenizer(vocab_size: int = 400):
    from mplus.models.tokenizer import train_tokenizer

    texts = [p + " Sure thing! I am fine, thanks." for p in HH_PROMPTS] * 20
    return train_tokenizer(texts, vocab_size)


def _mistral(
    vocab_size: int, tok, *, hidden: int = 64, layers: int = 2, context: int = 512, seed: int = 0
):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        sliding_window=None,
        tie_word_embeddings=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=getattr(tok, "bos_token_id", None),
    )
    return MistralForCausalLM(config).eval()


def _greedy(model, tok, prompts: list[str], max_new_tokens: int = 12) -> list[str]:
    """Plain transformers batch generation: ``tok(prompts, padding=True)`` -> ``generate``."""
    inputs = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def _assert_batch_matches_single(folder: Path, prompts=HH_PROMPTS, max_new_tokens: int = 12):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    lengths = {len(tok(p)["input_ids"]) for p in prompts}
    assert len(lengths) == len(prompts), "the prompts must differ in length to need padding"
    batched = _greedy(model, tok, prompts, max_new_tokens)
    single = [_greedy(model, tok, [p], max_new_tokens)[0] for p in prompts]
    assert batched == single
    return batched


def _assert_portable(folder: Path) -> None:
    for name in (
        "config.json",
        "generation_config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ):
        f = folder / name
        if not f.exists():
            continue
        text = f.read_text()
        cfg = json.loads(text)
        assert not MACHINE_KEYS & set(cfg), (name, MACHINE_KEYS & set(cfg))
        assert "/tmp/" not in text and str(Path.home()) not in text, name
        assert "stop_strings" not in cfg, name


def _python_block(readme: Path) -> str:
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S)
    assert len(blocks) == 1, f"expected one python block in {readme}, found {len(blocks)}"
    return blocks[0]


def _run_snippet(readme: Path, folder: Path) -> dict:
    code = _python_block(readme)
    line = f"model_dir = {folder.name!r}"
    assert line in code, code
    ns: dict = {}
    exec(compile(code.replace(line, f"model_dir = {str(folder)!r}"), str(readme), "exec"), ns)
    return ns


# ---------------------------------------------------------------- policy


def test_policy_export_batch_generation_matches_one_at_a_time(tmp_path):
    from transformers import AutoTokenizer

    from mplus.export import export_model

    tok = _hh_tokenizer()
    tok(["a", "a b c"], padding=True)  # a padded call leaves right padding in the backend
    model = _mistral(len(tok), tok)
    out = tmp_path / "policy"
    export_model(
        model,
        tok,
        out,
        dtype="float32",
        kind="policy",
        cfg=_cfg("algo=sft"),
        summary={"sft/val_loss": 1.5, "heldout/kl": 0.2},
    )
    assert tok.padding_side == "right", "the training tokenizer must stay right-padded"
    saved = json.loads((out / "tokenizer_config.json").read_text())
    assert saved["padding_side"] == "left" and saved["model_max_length"] == 512
    reloaded = AutoTokenizer.from_pretrained(out)
    assert reloaded.padding_side == "left" and reloaded.pad_token_id == tok.pad_token_id
    assert reloaded.model_max_length == 512
    batched = _assert_batch_matches_single(out)
    # the same model with the training tokenizer's right padding goes wrong, as the issue saw
    assert _greedy(model, tok, HH_PROMPTS) != batched
    _assert_portable(out)


def test_plain_generate_works_without_a_tokenizer_argument(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mplus.export import export_model

    tok = _hh_tokenizer()
    model = _mistral(len(tok), tok, layers=1)
    model.generation_config.stop_strings = ["\n\nHuman:"]  # would break plain generate if saved
    model.generation_config.pad_token_id = None
    export_model(model, tok, tmp_path / "policy", kind="policy")
    gen = json.loads((tmp_path / "policy" / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.eos_token_id and gen["pad_token_id"] == tok.pad_token_id
    assert "stop_strings" not in gen
    assert model.generation_config.stop_strings == ["\n\nHuman:"], "the model was changed"
    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    tok2 = AutoTokenizer.from_pretrained(tmp_path / "policy")
    inputs = tok2(HH_PROMPTS[:2], return_tensors="pt", padding=True)
    out = policy.generate(**inputs)  # no tokenizer=, no settings: must not raise
    assert out.shape[1] > inputs["input_ids"].shape[1]


def _scripted_policy(tok, continuation: str):
    """A Mistral whose output follows a fixed token chain from the prompt's last token.

    Every layer writes nothing (zero output projections), so the logits depend on the current
    token alone; ``lm_head`` maps each token of the chain to the next with a huge margin, so
    sampling at temperature 1 follows it too.
    """
    model = _mistral(len(tok), tok, layers=1, seed=1)
    last = tok(CARD_PROMPTS_LAST)["input_ids"][-1]
    chain = [last, *tok(continuation, add_special_tokens=False)["input_ids"]]
    assert len(set(chain)) == len(chain), tok.convert_ids_to_tokens(chain)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        model.lm_head.weight.zero_()
        for a, b in zip(chain, chain[1:], strict=False):
            h = emb[a] / emb[a].pow(2).mean().sqrt()
            model.lm_head.weight[b] += 60.0 * h / h.numel()
    return model, len(chain) - 1


CARD_PROMPTS_LAST = "\n\nAssistant:"


def test_policy_card_snippet_runs_as_written_and_stops_at_the_next_turn(tmp_path):
    from transformers import AddedToken

    from mplus.export import CARD_PROMPTS, export_model

    assert all(p.endswith(CARD_PROMPTS_LAST) for p in CARD_PROMPTS)
    tok = _hh_tokenizer()
    # "\n\nHuman:" as one token, so a model that looks at one token at a time can reach it
    tok.add_tokens([AddedToken("\n\nHuman:", normalized=False)])
    model, n_chain = _scripted_policy(tok, " Sure thing!\n\nHuman:")
    cfg = _cfg("algo=sft")
    out = tmp_path / "run" / "policy"
    export_model(model, tok, out, kind="policy", cfg=cfg, summary={"heldout/gold_reward": 0.5})
    readme = (out / "README.md").read_text()
    for needed in (
        "## Base model",
        "## Data",
        "## Algorithm: sft",
        "`algo.lr`",
        "heldout/gold_reward",
        '"\\n\\nHuman: <request>\\n\\nAssistant:"',
        "stop_strings=stop_strings",
        "tokenizer=tok",
        "temperature=1.0",
        f"max_new_tokens={cfg.evaluation.max_new_tokens}",
    ):
        assert needed in readme, needed
    ns = _run_snippet(out / "README.md", out)
    assert ns["responses"] == ["Sure thing!"] * len(CARD_PROMPTS)
    width = ns["inputs"]["input_ids"].shape[1]
    assert ns["out"].shape[1] - width == n_chain < cfg.evaluation.max_new_tokens, "did not stop"
    raw = ns["tok"].decode(ns["out"][0, width:], skip_special_tokens=True)
    assert raw.endswith("\n\nHuman:"), raw


def test_ppo_card_uses_the_rollout_sampling_and_stop_strings(tmp_path):
    from mplus.export import export_model

    tok = _hh_tokenizer()
    model = _mistral(len(tok), tok, layers=1)
    cfg = _cfg(
        "algo.generation.temperature=0.7",
        "algo.generation.top_p=0.9",
        "algo.generation.max_new_tokens=8",
        "evaluation.reward_model=/abs/path/rm",
    )
    summary = {
        "rl/gold_reward_end": 0.4,
        "rl/kl_end": 1.2,
        "rm/val_accuracy": 0.8,
        "heldout/kl": 1.1,
        "time/ppo_s": 3.0,
        "data/train_pairs": 100,
    }
    export_model(model, tok, tmp_path / "policy", cfg=cfg, summary=summary)
    readme = (tmp_path / "policy" / "README.md").read_text()
    assert "do_sample=True, temperature=0.7, top_p=0.9, top_k=0" in readme
    assert "max_new_tokens=8" in readme and "rl/kl_end" in readme and "`algo.kl.coef`" in readme
    assert "/abs/path" not in readme and "time/ppo_s" not in readme
    ns = _run_snippet(tmp_path / "policy" / "README.md", tmp_path / "policy")
    assert len(ns["responses"]) == 2


def test_lora_export_merges_without_changing_the_trained_model(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mplus.export import export_model

    tok = _hh_tokenizer()
    policy = get_peft_model(
        _mistral(len(tok), tok, layers=1),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_()
    ids = torch.tensor([tok(HH_PROMPTS[1])["input_ids"]])
    with torch.no_grad():
        before = policy(input_ids=ids).logits
    export_model(policy, tok, tmp_path / "policy", kind="policy")
    with torch.no_grad():
        assert torch.equal(policy(input_ids=ids).logits, before)
        with policy.disable_adapter():  # still a peft model (DPO's reference after export)
            base = policy(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")(input_ids=ids).logits
    assert not torch.allclose(base, before)
    assert torch.allclose(merged, before, atol=1e-4)


def test_real_mistral_tokenizer_export(tmp_path, mistral_tokenizer_dir):
    from transformers import AutoTokenizer

    from mplus.export import export_model
    from mplus.models.tokenizer import load_tokenizer

    src = mistral_tokenizer_dir  # the real Mistral-7B-v0.1 tokenizer, from mistral-common
    tok = load_tokenizer(str(src))
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 0)
    model = _mistral(32000, tok, context=32768)
    out = tmp_path / "policy"
    export_model(
        model,
        tok,
        out,
        kind="policy",
        cfg=_cfg("model=mistral-7b", "algo=ppo"),
        summary={"rl/gold_reward_end": 0.1},
    )
    assert tok.padding_side == "right"
    saved = json.loads((out / "tokenizer_config.json").read_text())
    assert saved["padding_side"] == "left" and saved["model_max_length"] == 32768
    assert saved["pad_token"] == "<unk>"
    reloaded = AutoTokenizer.from_pretrained(out)
    assert reloaded.padding_side == "left" and reloaded.model_max_length == 32768
    assert (reloaded.bos_token_id, reloaded.eos_token_id, reloaded.pad_token_id) == (1, 2, 0)
    assert reloaded(HH_PROMPTS[0])["input_ids"] == tok(HH_PROMPTS[0])["input_ids"]
    assert reloaded(HH_PROMPTS[0])["input_ids"][0] == 1  # BOS
    gen = json.loads((out / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (1, 2, 0)
    _assert_portable(out)
    _assert_batch_matches_single(out, max_new_tokens=6)
    readme = (out / "README.md").read_text()
    assert "base_model: mistralai/Mistral-7B-v0.1" in readme
    assert "datasets:" not in readme  # synthetic data: no hub dataset
    assert len(_run_snippet(out / "README.md", out)["responses"]) == 2


# ---------------------------------------------------------------- reward model


def test_reward_model_export_keeps_right_padding_and_documents_its_score(tmp_path):
    from transformers import AutoTokenizer, MistralForSequenceClassification

    from mplus.export import export_model

    tok = _hh_tokenizer()
    config = _mistral(len(tok), tok, layers=1).config
    config.num_labels = 1
    torch.manual_seed(0)
    rm = MistralForSequenceClassification(config).eval()
    out = tmp_path / "reward_model"
    summary = {"rm/reward_mean": 0.25, "rm/reward_std": 2.0, "rm/val_accuracy": 0.7}
    export_model(rm, tok, out, cfg=_cfg("algo=ppo"), summary=summary)  # kind inferred
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.padding_side == "right" and saved.model_max_length == 512
    assert json.loads((out / "config.json").read_text())["pad_token_id"] == tok.pad_token_id
    assert (
        not (out / "generation_config.json").exists()
        or "stop_strings" not in (out / "generation_config.json").read_text()
    )
    _assert_portable(out)
    readme = (out / "README.md").read_text()
    for needed in (
        "Bradley-Terry",
        "(score - mean) / std",
        "0.25",
        "| `std` | 2 |",
        "`algo.margin`",
        "rightmost token",
    ):
        assert needed in readme, needed
    ns = _run_snippet(out / "README.md", out)
    texts = ns["texts"]
    with torch.no_grad():  # one at a time, unpadded: the snippet's padded batch scores the same
        single = torch.cat([rm(**tok([t], return_tensors="pt")).logits[:, 0] for t in texts])
        left = AutoTokenizer.from_pretrained(out)
        left.padding_side = "left"
        lscores = rm(**left(texts, return_tensors="pt", padding=True)).logits[:, 0]
    assert torch.allclose(ns["scores"], single, atol=1e-5)
    assert torch.allclose(lscores, single, atol=1e-4)  # either padding side scores the same
    assert torch.allclose(ns["normalised"], (single - 0.25) / 2.0, atol=1e-5)


# ---------------------------------------------------------------- through the entry point


@pytest.mark.slow  # end to end through a subprocess: CI's slow set runs it
def test_sft_run_exports_a_policy_that_batch_generates_like_one_at_a_time(run_train):
    _, run_dir = run_train(
        "algo=sft",
        "algo.max_steps=20",
        "algo.val_every=20",
        "algo.batch_size=16",
        "data.num_train_pairs=256",
        "data.num_val_pairs=64",
        "data.num_eval_prompts=16",
        "evaluation.probe_docs=32",
    )
    policy = run_dir / "policy"
    _assert_batch_matches_single(policy, max_new_tokens=16)
    _assert_portable(policy)
    saved = json.loads((policy / "tokenizer_config.json").read_text())
    assert saved["padding_side"] == "left" and saved["model_max_length"] == 512
    s = read_summary(run_dir)
    readme = (policy / "README.md").read_text()
    assert f"| `sft/steps` | {s['sft/steps']} |" in readme
    assert "heldout/gold_reward" in readme and "heldout/kl" in readme  # the final held-out metrics
    assert len(_run_snippet(policy / "README.md", policy)["responses"]) == 2
