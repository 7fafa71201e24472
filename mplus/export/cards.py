"""The ``README.md`` model cards of the ``policy/`` and ``reward_model/`` exports."""

from __future__ import annotations

from pathlib import Path

from mplus.config.rl import is_rl
from mplus.export.markdown import _fmt, _front_matter, _plain, _portable, _table, _yaml_block
from mplus.export.sections import (
    _ALGO_TEXT,
    _FORMAT,
    _algo_rows,
    _base_section,
    _data_section,
    _metrics_section,
    generation_snippet,
    sampling_settings,
)


def policy_card(*, cfg, algo, summary, model, tokenizer, out: Path) -> str:
    """README.md of a ``policy/`` export."""
    c = _plain(cfg) or {}
    a = _plain(algo) or c.get("algo") or {}
    summary = dict(summary or {})
    name = a.get("name", "policy")
    base, hub = _base_section(c, model)
    data, datasets = _data_section(c, summary)
    s = sampling_settings(cfg)
    rows = _algo_rows(a, skip=("rm",))
    rows["seed"] = c.get("seed")
    rl = is_rl(a)
    prefixes = ("heldout/", "eval/", "rl/" if rl else f"{name}/")
    rm_note = ""
    if rl:
        rm = a.get("reward_model")
        rm_note = (
            "\n\nReward model: "
            + (
                f"`{_fmt(_portable(rm))}` (given)"
                if rm
                else "trained in this run (`reward_model/` beside this folder; its card has the "
                "details)"
            )
            + "."
        )
        prefixes += ("rm/",)
    model_name = (c.get("model") or {}).get("name", "model")
    eos = tokenizer.eos_token
    return "\n".join(
        [
            _front_matter(
                ["mplus", "rlhf", name, "hh-rlhf-format"], hub, datasets, "text-generation"
            ),
            f"# {model_name} + {name.upper()} (mplus)",
            "",
            _ALGO_TEXT.get(name, f"A policy trained with `algo={name}`.") + rm_note,
            "",
            "## Base model",
            "",
            base,
            "",
            "## Data",
            "",
            data,
            "",
            f"## Algorithm: {name}",
            "",
            _table(rows),
            "",
            "<details><summary>the stage's full config</summary>",
            "",
            _yaml_block(a),
            "",
            "</details>",
            "",
            "## Results",
            "",
            _metrics_section(
                summary,
                prefixes,
                " (`heldout/*`: the held-out evaluation; `eval/<suite>/*`: benchmark suites;"
                " `*_start`/`*_end`: before/after training)",
            ),
            "",
            "## Prompt format",
            "",
            _FORMAT.format(eos=eos),
            "",
            "## Usage",
            "",
            f"Sampling as the run did ({f'{name.upper()} rollouts' if rl else 'held-out evaluation'}"
            f": temperature {s['temperature']:g}, top_p {s['top_p']:g}, top_k {s['top_k']}, up to "
            f"{s['max_new_tokens']} new tokens), several prompts in one batch:",
            "",
            "```python",
            generation_snippet(out.name, s).rstrip(),
            "```",
            "",
            "Notes for other tools:",
            "",
            "- The tokenizer pads on the **left** (batched `generate` continues each row right "
            "after its prompt); `model_max_length` is the model's context.",
            "- `generation_config.json` holds EOS and pad only; the stop string is not in it "
            "(transformers would then refuse every `generate` call made without `tokenizer=`), so "
            "pass `stop_strings=[...]` and `tokenizer=tok` to `generate` as above, or stop on EOS "
            'alone and cut at `"\\n\\nHuman:"` afterwards.',
            "",
        ]
    )


_RM_SNIPPET = """import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model_dir = {folder!r}  # this folder: its local path or hub id
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()

prompt = "\\n\\nHuman: How do I make a good cup of tea?\\n\\nAssistant:"
responses = [" Warm the pot, add the leaves, pour boiling water and wait four minutes.", " No."]
texts = [prompt + r + tok.eos_token for r in responses]  # ends with EOS, as in training
inputs = tok(texts, return_tensors="pt", padding=True)
with torch.no_grad():
    scores = model(**inputs).logits[:, 0]  # higher = preferred
normalised = (scores - {mean!r}) / {std!r}  # what RL used (reward_stats.json)
print(scores.tolist(), normalised.tolist())
"""


def reward_model_card(*, cfg, algo, summary, model, tokenizer, out: Path) -> str:
    """README.md of a ``reward_model/`` export: what the score means and its stats."""
    c = _plain(cfg) or {}
    a = _plain(algo) or c.get("algo") or {}
    if is_rl(a):
        a = a.get("rm") or {}
    summary = dict(summary or {})
    mean, std = summary.get("rm/reward_mean"), summary.get("rm/reward_std")
    acc = summary.get("rm/val_accuracy")
    base, hub = _base_section(c, model)
    data, datasets = _data_section(c, summary)
    stats = {"mean": mean, "std": std, "val_accuracy": acc}
    rl_algo = c.get("algo") or {}
    norm = ""
    if is_rl(rl_algo):
        r = rl_algo.get("reward") or {}
        norm = (
            f" This run's {rl_algo['name'].upper()} used `(score - mean) / std` (`algo.reward.normalize="
            f"{r.get('normalize')}`), clipped to ±{r.get('clip')} (`algo.reward.clip`)."
        )
    m = float(mean) if mean is not None else 0.0
    sd = float(std) if std else 1.0
    return "\n".join(
        [
            _front_matter(
                ["mplus", "rlhf", "reward-model", "hh-rlhf-format"],
                hub,
                datasets,
                "text-classification",
            ),
            f"# {(c.get('model') or {}).get('name', 'model')} reward model (mplus)",
            "",
            _ALGO_TEXT["rm"],
            "",
            "## What the score means",
            "",
            "`logits[:, 0]` of `AutoModelForSequenceClassification` on the transcript "
            "`prompt + response + EOS` in the HH format (see below), read at its last token. It is "
            "a Bradley-Terry score: `sigmoid(score_a - score_b)` is the modelled probability that "
            "response `a` is preferred to `b` for the same prompt. Only differences are meaningful; "
            "the offset is arbitrary, so compare against the stats below rather than against 0.",
            "",
            "Normalisation stats (the validation set at the end of training; also in "
            "`reward_stats.json`): a normalised reward is `(score - mean) / std`." + norm,
            "",
            _table(stats, ("stat", "value")),
            "",
            "## Padding",
            "",
            "The tokenizer pads on the **right**, as in training. Either side gives the same score: "
            "transformers' sequence-classification pooling reads the rightmost token that is not "
            f"`config.pad_token_id` (`{tokenizer.pad_token}`, id {tokenizer.pad_token_id}; distinct "
            f"from EOS `{tokenizer.eos_token}`, which is why EOS is appended and kept).",
            "",
            "## Base model",
            "",
            base,
            "",
            "## Data",
            "",
            data,
            "",
            "## Training",
            "",
            _table(_algo_rows(a)),
            "",
            "## Results",
            "",
            _metrics_section(summary, ("rm/",), " (`rm/val_*`: the validation pairs)"),
            "",
            "## Usage",
            "",
            "```python",
            _RM_SNIPPET.format(folder=out.name, mean=m, std=sd).rstrip(),
            "```",
            "",
            'Prompt format: `"\\n\\nHuman: <request>\\n\\nAssistant:"` (earlier turns before it); '
            "the response starts with a space.",
            "",
        ]
    )
