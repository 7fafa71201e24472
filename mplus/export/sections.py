"""The model cards' sections: base model, data, algorithm, results, prompt format, usage."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from mplus.config.rl import is_rl
from mplus.export.files import context_length
from mplus.export.markdown import _flatten, _fmt, _plain, _portable, _table

HH_STOP = "\n\nHuman:"
# Prompts in the policy card's generation snippet (HH format: the response starts with a space).
CARD_PROMPTS = (
    "\n\nHuman: How do I make a good cup of tea?\n\nAssistant:",
    "\n\nHuman: Hi!\n\nAssistant: Hello! How can I help you today?"
    "\n\nHuman: Can you tell me a fun fact about octopuses?\n\nAssistant:",
)


def _hub_id(name_or_path) -> str | None:
    """``name_or_path`` when it is a hub id (``org/name``), not a local folder."""
    if not isinstance(name_or_path, str) or os.path.isabs(name_or_path):
        return None
    if name_or_path.count("/") != 1 or os.path.exists(name_or_path):
        return None
    return name_or_path


def _num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _base_section(c: dict, model) -> tuple[str, str | None]:
    m = c.get("model") or {}
    hub = _hub_id(m.get("name_or_path"))
    if m.get("name_or_path") is None and m.get("arch"):
        a, pt = m["arch"], m.get("pretrain") or {}
        text = (
            f"The embedded tiny Mistral-architecture model (`model={m.get('name', 'tiny')}`: "
            f"{a.get('num_hidden_layers')} layers, hidden {a.get('hidden_size')}, "
            f"context {a.get('max_position_embeddings')}), pretrained by mplus on its "
            f"synthetic corpus ({pt.get('steps')} steps, seed {pt.get('seed')}); not a hub "
            "model."
        )
    else:
        src = hub or _fmt(_portable(m.get("name_or_path")))
        rev = f" (revision `{m['revision']}`)" if m.get("revision") else ""
        text = f"`{src}`{rev} (`model={m.get('name')}`), the pretrained base: no SFT stage first."
    n = _num_parameters(model)
    rows = {
        "parameters": f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n:,}",
        "model.dtype": m.get("dtype"),
        "context (model_max_length)": context_length(model.config),
    }
    lora = m.get("lora") or {}
    if lora.get("enabled"):
        rows.update({f"model.lora.{k}": v for k, v in lora.items() if k != "enabled"})
        text += " Trained with LoRA; the adapter is merged into these weights."
    return text + "\n\n" + _table(rows), hub


def _data_section(c: dict, summary: Mapping) -> tuple[str, list[str]]:
    d = dict(c.get("data") or {})
    datasets = []
    if d.get("name") == "hh_rlhf":
        files = d.get("files")
        files = [files] if isinstance(files, str) else list(files or [])
        src = (
            f"local files in the HH-RLHF format: {', '.join(Path(f).name for f in files)}"
            if files
            else f"`{d.get('hub_path')}` from the Hugging Face hub"
        )
        if not files and d.get("hub_path"):
            datasets.append(d["hub_path"])
        mix = ", ".join(f"`{k}` {v:g}" for k, v in (d.get("mix") or {}).items())
        text = f"Anthropic HH-RLHF preference pairs: {src}. Subset mix (weights): {mix}."
        d.pop("files", None)
    elif d.get("name"):
        text = (
            "mplus's synthetic HH-format preference task (helpful and harmful requests with a "
            "programmatic gold reward), generated offline."
        )
    else:
        text = "Not recorded."
    stats = {k: v for k, v in summary.items() if k.startswith("data/")}
    body = text + "\n\n" + _table(_flatten(d, "data."))
    if stats:
        body += "\n\nWhat the run used (after filtering):\n\n" + _table(stats, ("metric", "value"))
    return body, datasets


def _algo_rows(algo: dict, skip: tuple = ()) -> dict:
    return _flatten(algo, "algo.", skip=tuple(f"algo.{s}" for s in skip))


_ALGO_TEXT = {
    "ppo": (
        "PPO directly on the base model (Mistral-Plus's direct RLHF, no SFT first): "
        "rollouts sampled from the policy, scored by the reward model (normalised with its "
        "validation stats), a KL penalty to the frozen base, GAE advantages, clipped policy "
        "and value losses."
    ),
    "grpo": (
        "GRPO directly on the base model (no SFT first, no value model): several responses "
        "sampled per prompt and scored by the reward model, each response's advantage its "
        "score against its group's mean divided by the group's std, a clipped policy loss and "
        "a k3 KL loss term to the frozen base."
    ),
    "rloo": (
        "RLOO directly on the base model (no SFT first, no value model): several responses "
        "sampled per prompt, each response's baseline the mean score of the other samples of "
        "its prompt, a per-token KL penalty to the frozen base in the reward, a clipped policy "
        "loss."
    ),
    "reinforce_pp": (
        "REINFORCE++ directly on the base model (no SFT first, no value model): a per-token KL "
        "penalty to the frozen base in the reward, discounted returns whitened over the batch "
        "as the advantages, a clipped policy loss."
    ),
    "sft": "Supervised fine-tuning of the base on the chosen responses (loss on response tokens).",
    "dpo": (
        "DPO from the base (no SFT first) against the frozen base as the reference, on the "
        "preference pairs."
    ),
    "rm": (
        "A Bradley-Terry reward model: the base with a scalar head, trained so that "
        "`score(chosen) > score(rejected)` (loss `-log sigmoid(s_chosen - s_rejected - "
        "margin)`)."
    ),
}


def _metrics_section(summary: Mapping, prefixes: tuple[str, ...], note: str = "") -> str:
    rows = {k: v for k, v in sorted(summary.items()) if k.startswith(prefixes)}
    if not rows:
        return "No metrics were recorded for this export."
    return f"Final values from the run's `summary.json`{note}:\n\n" + _table(
        rows, ("metric", "value")
    )


def sampling_settings(cfg) -> dict:
    """The sampling a run used: the RL rollout settings, else the held-out evaluation's."""
    c = _plain(cfg) or {}
    algo = c.get("algo") or {}
    if is_rl(algo) and algo.get("generation"):
        g = algo["generation"]
        return {
            "max_new_tokens": g["max_new_tokens"],
            "temperature": g["temperature"],
            "top_p": g["top_p"],
            "top_k": g["top_k"],
            "stop_strings": list(g.get("stop_strings") or [HH_STOP]),
        }
    ev = c.get("evaluation") or {}
    return {
        "max_new_tokens": ev.get("max_new_tokens", 64),
        "temperature": ev.get("temperature", 0.0),
        "top_p": 1.0,
        "top_k": 0,
        "stop_strings": list(ev.get("stop_strings") or [HH_STOP]),
    }


def generation_snippet(folder: str, s: dict) -> str:
    """The card's Python snippet: batched HH generation, cut at the stop string."""
    if s["temperature"] > 0:
        sampling = (
            f"do_sample=True, temperature={s['temperature']!r}, top_p={s['top_p']!r}, "
            f"top_k={s['top_k']!r}"
        )
    else:
        sampling = "do_sample=False"
    prompts = "\n".join(f"    {p!r}," for p in CARD_PROMPTS)
    return f"""from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir = {folder!r}  # this folder: its local path or hub id
tok = AutoTokenizer.from_pretrained(model_dir)  # pads on the left, as batched generate needs
model = AutoModelForCausalLM.from_pretrained(model_dir)

stop_strings = {s["stop_strings"]!r}  # the next turn
prompts = [
{prompts}
]
inputs = tok(prompts, return_tensors="pt", padding=True)
out = model.generate(
    **inputs, max_new_tokens={s["max_new_tokens"]}, {sampling},
    stop_strings=stop_strings, tokenizer=tok,  # stop strings need the tokenizer passed here
)
responses = []
for row in out[:, inputs["input_ids"].shape[1]:]:
    text = tok.decode(row, skip_special_tokens=True)
    for stop in stop_strings:  # generation ends after the stop string: cut it off
        text = text.split(stop)[0]
    responses.append(text.strip())
for prompt, response in zip(prompts, responses):
    print(prompt + " " + response)
"""


_FORMAT = """Anthropic HH format. A prompt is one or more turns ending with the Assistant's cue:

```text
"\\n\\nHuman: <request>\\n\\nAssistant:"
"\\n\\nHuman: <turn 1>\\n\\nAssistant: <reply 1>\\n\\nHuman: <turn 2>\\n\\nAssistant:"
```

The response starts with a space (`" Sure, ..."`) and ends at EOS (`{eos}`) or where the model
starts the next turn, `"\\n\\nHuman:"`: pass it as a stop string and cut the text there."""
