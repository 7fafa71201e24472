"""Exports in Hugging Face format that downstream tools load with ``from_pretrained`` alone.

A run writes two kinds of export, each usable as it is by plain transformers:

``policy/`` (PPO, SFT, DPO)
    The causal LM (LoRA merged in); a tokenizer that pads on the **left** (what batched
    ``generate`` needs; training keeps its own right-padded copy) with ``model_max_length`` equal
    to the model's context; a ``generation_config.json`` holding EOS and pad only, so a plain
    ``model.generate(**inputs)`` works (no ``stop_strings`` there: transformers then refuses every
    ``generate`` call made without ``tokenizer=``); and a ``README.md`` model card with the base,
    data, algorithm and hyperparameters, final metrics, the HH prompt format and a generation
    snippet that stops at the next ``"\\n\\nHuman:"`` turn.

``reward_model/``
    The scalar-head model; its tokenizer keeps **right** padding, as the model was trained
    (transformers' sequence-classification pooling reads the rightmost non-pad token, so left
    padding scores the same); a ``README.md`` saying what the score means, with its
    normalisation stats.

Saved JSON configs carry nothing machine-specific (``is_local``, ``local_files_only``,
``name_or_path``, absolute paths).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mplus import distributed as D

HH_STOP = "\n\nHuman:"
# Prompts in the policy card's generation snippet (HH format: the response starts with a space).
CARD_PROMPTS = (
    "\n\nHuman: How do I make a good cup of tea?\n\nAssistant:",
    "\n\nHuman: Hi!\n\nAssistant: Hello! How can I help you today?"
    "\n\nHuman: Can you tell me a fun fact about octopuses?\n\nAssistant:",
)
# Keys from_pretrained records that only make sense on the machine that loaded the files.
MACHINE_KEYS = frozenset(
    {
        "is_local",
        "local_files_only",
        "name_or_path",
        "_name_or_path",
        "cache_dir",
        "_commit_hash",
        "token",
        "use_auth_token",
        "force_download",
        "proxies",
    }
)
_CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
# Context-length attributes of transformers configs, most common first.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def export_model(
    model,
    tokenizer,
    out: Path,
    dtype: str | None = None,
    *,
    kind: str | None = None,
    cfg=None,
    algo=None,
    summary: Mapping | None = None,
) -> None:
    """Save in Hugging Face format (LoRA merged in), loadable with ``from_pretrained`` alone.

    A sharded model is gathered into one full state dict (every rank takes part) and written once,
    by rank 0. ``dtype`` (``model.dtype``): weights trained as fp32 masters under mixed precision
    are written in the model's own dtype (bf16 for a 7B), not doubled. Neither ``model`` nor
    ``tokenizer`` is changed: LoRA is merged into a CPU copy, and the saved tokenizer files are
    rewritten on disk.

    Args:
        kind: ``"policy"`` or ``"reward_model"``; None infers it from the model class.
        cfg: The run's validated config, for the model card (None: a card without run details).
        algo: The config of the stage that trained this model (default ``cfg.algo``; the reward
            model a PPO run trains has its own, ``cfg.algo.rm``).
        summary: The run's flat metrics so far; the card lists them as the final results.
    """
    from mplus.models.builders import torch_dtype

    full = D.full_state_dict(model)  # None unless sharded
    if D.is_rank_zero():
        if hasattr(model, "merge_and_unload"):  # peft: merge into a CPU copy, `model` untouched
            if full is None:
                full = _cpu_copy(model.state_dict())
            model, full = D.unsharded_peft_copy(model, full), None
            model = model.merge_and_unload()
        kind = kind or infer_kind(model)
        if kind not in ("policy", "reward_model"):
            raise ValueError(f"kind must be 'policy' or 'reward_model', got {kind!r}")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        sd = full if full is not None else model.state_dict()
        dt = torch_dtype(dtype) if dtype and dtype != "auto" else None
        if dt is not None:
            sd = {k: v.to(dt) if v.is_floating_point() else v for k, v in sd.items()}
        model.save_pretrained(out, safe_serialization=True, state_dict=sd)
        tokenizer.save_pretrained(out)
        finish_tokenizer_files(
            out, tokenizer, model.config, padding_side="left" if kind == "policy" else "right"
        )
        if kind == "policy":
            write_generation_config(out, model, tokenizer)
        else:
            _set_config_pad(out, tokenizer)
        for name in _CONFIG_FILES:
            sanitize_json_file(out / name)
        card = (policy_card if kind == "policy" else reward_model_card)(
            cfg=cfg, algo=algo, summary=summary, model=model, tokenizer=tokenizer, out=out
        )
        (out / "README.md").write_text(card)
    D.barrier()


def _cpu_copy(sd: dict) -> dict:
    """A CPU copy of a state dict; tensors shared in it (tied weights) stay shared."""
    copies: dict = {}
    out = {}
    for k, v in sd.items():
        key = (v.device, v.data_ptr())
        if key not in copies:
            copies[key] = v.detach().to("cpu", copy=True)
        out[k] = copies[key]
    return out


def infer_kind(model) -> str:
    """``"reward_model"`` for a sequence-classification (scalar head) model, else ``"policy"``."""
    names = [type(model).__name__, *(getattr(model.config, "architectures", None) or [])]
    return "reward_model" if any("ForSequenceClassification" in n for n in names) else "policy"


def context_length(config) -> int | None:
    """The model's context (``max_position_embeddings`` or its equivalent), or None."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in _CONTEXT_KEYS:
        n = getattr(text, key, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


# ---------------------------------------------------------------- the saved files


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(
        json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def finish_tokenizer_files(out: Path, tokenizer, config, padding_side: str) -> None:
    """Rewrite the saved tokenizer so it loads as downstream use needs (the object is untouched).

    ``tokenizer_config.json`` gets ``padding_side``, ``model_max_length`` (the model's context)
    and the pad token; ``tokenizer.json`` loses the padding/truncation state a padded call left in
    the backend (it would otherwise reload as a right-padding default).
    """
    path = out / "tokenizer_config.json"
    tc = _read_json(path) if path.exists() else {}
    tc["padding_side"] = padding_side
    n = context_length(config)
    if n is not None:
        tc["model_max_length"] = n
    if tokenizer.pad_token is not None and not tc.get("pad_token"):
        tc["pad_token"] = str(tokenizer.pad_token)
    _write_json(path, tc)
    fast = out / "tokenizer.json"
    if fast.exists():
        tj = _read_json(fast)
        if tj.get("padding") is not None or tj.get("truncation") is not None:
            tj["padding"], tj["truncation"] = None, None
            fast.write_text(json.dumps(tj, indent=2, ensure_ascii=False), encoding="utf-8")


def write_generation_config(out: Path, model, tokenizer) -> None:
    """``generation_config.json`` with the tokenizer's EOS, pad (and BOS), and no stop strings.

    ``stop_strings`` there would make transformers raise on every ``generate`` call that does not
    pass ``tokenizer=``; the card's snippet passes them instead.
    """
    from transformers import GenerationConfig

    gc = getattr(model, "generation_config", None)
    gc = copy.deepcopy(gc) if gc is not None else GenerationConfig.from_model_config(model.config)
    eos = gc.eos_token_id
    eos = [] if eos is None else list(eos) if isinstance(eos, list | tuple) else [eos]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.append(tokenizer.eos_token_id)
    gc.eos_token_id = eos[0] if len(eos) == 1 else (eos or None)
    if tokenizer.pad_token_id is not None:
        gc.pad_token_id = tokenizer.pad_token_id
    if gc.bos_token_id is None and getattr(tokenizer, "bos_token_id", None) is not None:
        gc.bos_token_id = tokenizer.bos_token_id
    gc.stop_strings = None
    gc.save_pretrained(out)


def _set_config_pad(out: Path, tokenizer) -> None:
    """The reward model's pooling finds the last non-pad token by ``config.pad_token_id``."""
    path = out / "config.json"
    c = _read_json(path)
    if c.get("pad_token_id") is None and tokenizer.pad_token_id is not None:
        c["pad_token_id"] = tokenizer.pad_token_id
        _write_json(path, c)


def _is_machine_path(v: Any) -> bool:
    return isinstance(v, str) and "\n" not in v and os.path.isabs(v) and len(Path(v).parts) >= 3


def _sanitized(obj):
    if isinstance(obj, dict):
        return {
            k: _sanitized(v)
            for k, v in obj.items()
            if k not in MACHINE_KEYS and not _is_machine_path(v)
        }
    if isinstance(obj, list):
        return [_sanitized(v) for v in obj]
    return obj


def sanitize_json_file(path: Path) -> None:
    """Drop machine-specific keys (:data:`MACHINE_KEYS`, absolute paths) from a saved config."""
    if not path.exists():
        return
    obj = _read_json(path)
    clean = _sanitized(obj)
    if clean != obj:
        _write_json(path, clean)


# ---------------------------------------------------------------- model cards


def _plain(x):
    """A config node (dataclass, OmegaConf node, mapping) as plain dicts and lists."""
    if x is None:
        return None
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(x, DictConfig | ListConfig):
            return OmegaConf.to_container(x, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _portable(v):
    """Values as a card shows them: an absolute local path becomes its last part."""
    if _is_machine_path(v):
        return f"<local>/{Path(v).name}"
    if isinstance(v, list | tuple):
        return [_portable(x) for x in v]
    if isinstance(v, dict):
        return {k: _portable(x) for k, x in v.items()}
    return v


def _fmt(v) -> str:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, str):
        return repr(v) if v != v.strip() or "\n" in v else v
    return json.dumps(_portable(v)) if isinstance(v, list | dict) else str(v)


def _cell(v) -> str:
    return _fmt(v).replace("|", "\\|")


def _flatten(d: dict, prefix: str = "", skip: tuple = ()) -> dict:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if key in skip:
            continue
        if isinstance(v, dict) and v:
            flat.update(_flatten(v, key + ".", skip))
        else:
            flat[key] = _portable(v)
    return flat


def _table(rows: dict, head: tuple[str, str] = ("setting", "value")) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| `{k}` | {_cell(v)} |" for k, v in rows.items()]
    return "\n".join(lines)


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
    """The sampling a run used: PPO's rollout settings, else the held-out evaluation's."""
    c = _plain(cfg) or {}
    algo = c.get("algo") or {}
    if algo.get("name") == "ppo" and algo.get("generation"):
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


def _front_matter(tags: list[str], hub: str | None, datasets: list[str], pipeline: str) -> str:
    lines = ["---", "library_name: transformers", f"pipeline_tag: {pipeline}"]
    if hub:
        lines.append(f"base_model: {hub}")
    if datasets:
        lines += ["datasets:", *(f"- {d}" for d in datasets)]
    lines += ["tags:", *(f"- {t}" for t in tags), "---", ""]
    return "\n".join(lines)


def _yaml_block(algo: dict) -> str:
    return "```json\n" + json.dumps(_portable(algo), indent=2, sort_keys=True) + "\n```"


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
    prefixes = ("eval/", f"{name}/")
    rm_note = ""
    if name == "ppo":
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
                " (`eval/*`: the held-out evaluation; `*_start`/`*_end`: before/after training)",
            ),
            "",
            "## Prompt format",
            "",
            _FORMAT.format(eos=eos),
            "",
            "## Usage",
            "",
            f"Sampling as the run did ({'PPO rollouts' if name == 'ppo' else 'held-out evaluation'}"
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
normalised = (scores - {mean!r}) / {std!r}  # what PPO used (reward_stats.json)
print(scores.tolist(), normalised.tolist())
"""


def reward_model_card(*, cfg, algo, summary, model, tokenizer, out: Path) -> str:
    """README.md of a ``reward_model/`` export: what the score means and its stats."""
    c = _plain(cfg) or {}
    a = _plain(algo) or c.get("algo") or {}
    if a.get("name") == "ppo":
        a = a.get("rm") or {}
    summary = dict(summary or {})
    mean, std = summary.get("rm/reward_mean"), summary.get("rm/reward_std")
    acc = summary.get("rm/val_accuracy")
    base, hub = _base_section(c, model)
    data, datasets = _data_section(c, summary)
    stats = {"mean": mean, "std": std, "val_accuracy": acc}
    ppo = c.get("algo") or {}
    norm = ""
    if ppo.get("name") == "ppo":
        r = ppo.get("reward") or {}
        norm = (
            f" This run's PPO used `(score - mean) / std` (`algo.reward.normalize="
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
