"""One entry point from ``cfg.data`` to the pairs, prompts and gold reward every stage uses."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from mplus.data.types import PreferencePair
from mplus.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class PreferenceData:
    """Everything a stage needs from the data group.

    ``prompts`` feed PPO rollouts; ``eval_prompts`` are held out from every training stage and used
    for the before/after measurements. ``gold_fn(prompt, response) -> float``, ``knowledge`` and
    ``behaviour_fn`` exist for the synthetic task only. ``stats`` are flat ``data/...`` counts for logs and summary.json.
    """

    train_pairs: list[PreferencePair]
    val_pairs: list[PreferencePair]
    prompts: list[str]
    eval_prompts: list[str]
    gold_fn: Callable[[str, str], float] | None = None
    stats: dict[str, float] = field(default_factory=dict)
    probe_texts: list[str] = field(default_factory=list)  # held-out pretraining-style text
    # knowledge-probe questions (mplus.data.synthetic.KnowledgeItem: prefix, answer, candidates)
    # that no stage trains on; synthetic task only
    knowledge: list = field(default_factory=list)
    # ``(prompts, responses) -> {name: rate}`` per-behaviour rates; synthetic task only
    behaviour_fn: Callable[[list[str], list[str]], dict[str, float]] | None = None
    # held-out prompt -> its HH subset (harmless-base, helpful-base, ...); HH data only
    eval_subsets: dict[str, str] = field(default_factory=dict)


def build_preference_data(data_cfg, tokenizer) -> PreferenceData:
    if data_cfg.name == "synthetic":
        data = _synthetic(data_cfg, tokenizer)
    elif data_cfg.name == "hh_rlhf":
        data = _hh(data_cfg, tokenizer)
    else:  # validate() already rejects unknown data configs
        raise ValueError(f"data.name: unknown data source {data_cfg.name!r}")
    _check_enough(data, data_cfg)
    data.stats.update(
        {
            "data/train_pairs": len(data.train_pairs),
            "data/val_pairs": len(data.val_pairs),
            "data/prompts": len(data.prompts),
            "data/eval_prompts": len(data.eval_prompts),
        }
    )
    log.info("Data: %s", data.stats)
    return data


_LONG_HINT = "raise data.max_length to keep longer pairs"


def _check_enough(data: PreferenceData, cfg) -> None:
    """Refuse at start, naming the data, what would otherwise fail deep in a stage (an empty batch).

    Raises:
        DataError: no train or validation pairs, or no (held-out) prompts.
    """
    where = f"data={cfg.name}" + (f" data.files={cfg.files}" if getattr(cfg, "files", None) else "")
    skipped = {
        k.removeprefix("data/skipped/"): v
        for k, v in data.stats.items()
        if k.startswith("data/skipped/") and k != "data/skipped/total" and v
    }
    counts = f"{len(data.train_pairs)} train / {len(data.val_pairs)} validation pairs"
    if skipped:
        counts += f", skipped: {', '.join(f'{k}: {v}' for k, v in skipped.items())}"
    for what, items in (
        ("training pairs", data.train_pairs),
        ("validation pairs", data.val_pairs),
        ("prompts", data.prompts),
        ("held-out prompts", data.eval_prompts),
    ):
        if not items:
            hint = f"; {_LONG_HINT}" if skipped.get("too_long") else ""
            raise DataError(f"{where}: no {what} left ({counts}){hint}")


def _length_fn(tokenizer) -> Callable[[str], int]:
    """Tokens a transcript takes in training: special prefix + text + EOS (the shared rule)."""
    from mplus.models.tokenizer import special_prefix

    extra = len(special_prefix(tokenizer)) + 1  # BOS (if the tokenizer adds one) and EOS
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]) + extra


def _synthetic(cfg, tokenizer) -> PreferenceData:
    from mplus.data.synthetic import SyntheticTask, behaviour_rates, gold_reward, knowledge_items

    task = SyntheticTask(
        seed=cfg.seed,
        label_noise=cfg.label_noise,
        multi_turn_fraction=cfg.multi_turn_fraction,
        harmful_fraction=cfg.harmful_fraction,
    )
    length = _length_fn(tokenizer)
    skipped: Counter = Counter()

    def keep(pairs):
        out = []
        for p in pairs:
            if max(length(p.prompt + p.chosen), length(p.prompt + p.rejected)) > cfg.max_length:
                skipped["too_long"] += 1
            else:
                out.append(p)
        return out

    train = keep(task.pairs(cfg.num_train_pairs, split="train"))
    val = keep(task.pairs(cfg.num_val_pairs, split="val"))
    stats = {f"data/skipped/{k}": v for k, v in skipped.items()}
    stats["data/label_noise"] = cfg.label_noise
    return PreferenceData(
        train_pairs=train,
        val_pairs=val,
        prompts=task.prompts(cfg.num_prompts, split="train"),
        eval_prompts=task.prompts(cfg.num_eval_prompts, split="eval"),
        gold_fn=gold_reward,
        stats=stats,
        probe_texts=task.corpus(200, split="probe"),
        knowledge=knowledge_items(),
        behaviour_fn=behaviour_rates,
    )


def _hh(cfg, tokenizer) -> PreferenceData:
    from mplus.data import hh

    length = _length_fn(tokenizer)
    skipped: Counter = Counter()
    by_subset: dict[str, list[PreferencePair]] = {}
    if cfg.files is not None:
        files = [cfg.files] if isinstance(cfg.files, str) else list(cfg.files)
        for f in files:
            subset = hh.subset_from_filename(f)
            rows = hh.read_jsonl_once(f)  # read at start by mplus.preflight
            pairs, bad = hh.parse_rows(rows, subset, length_fn=length, max_length=cfg.max_length)
            hh.check_usable(pairs, bad, str(f), len(rows), hint=_LONG_HINT)
            by_subset.setdefault(subset, []).extend(pairs)
            skipped.update(bad)
        # The mix weighs the subsets found in the files; files of subsets the mix does not name
        # (e.g. "local") are weighed equally rather than dropped.
        mix = {s: w for s, w in cfg.mix.items() if s in by_subset} or dict.fromkeys(by_subset, 1.0)
        if missing := set(cfg.mix) - set(by_subset):
            log.warning("data.mix names subsets with no file in data.files: %s", sorted(missing))
    else:
        for subset, w in cfg.mix.items():
            if w <= 0:
                continue
            rows = hh.load_hh_rows(subset, "train", hub_path=cfg.hub_path)
            pairs, bad = hh.parse_rows(rows, subset, length_fn=length, max_length=cfg.max_length)
            hh.check_usable(
                pairs, bad, f"{cfg.hub_path} {subset} (train)", len(rows), hint=_LONG_HINT
            )
            by_subset[subset] = pairs
            skipped.update(bad)
        mix = dict(cfg.mix)

    # Hold out validation pairs per subset before mixing, so the held-out set never leaks.
    rng = random.Random(cfg.seed)
    train_by, val_pairs = {}, []
    for subset, pairs in by_subset.items():
        pairs = list(pairs)
        rng.shuffle(pairs)
        n_val = max(1, int(len(pairs) * cfg.val_fraction))
        val_pairs += pairs[:n_val]
        train_by[subset] = pairs[n_val:]
    train, counts = hh.mix_pairs(train_by, mix, total=cfg.max_pairs, seed=cfg.seed)

    prompts = list(dict.fromkeys(p.prompt for p in train))
    if cfg.num_prompts is not None:
        prompts = prompts[: cfg.num_prompts]
    eval_prompts = list(dict.fromkeys(p.prompt for p in val_pairs))[: cfg.num_eval_prompts]
    stats = {f"data/skipped/{k}": v for k, v in skipped.items()}
    stats["data/skipped/total"] = sum(skipped.values())
    stats.update({f"data/mix/{k}": v for k, v in counts.items()})
    log.info("HH mix realised: %s; skipped: %s", counts, dict(skipped))
    probe = [p.prompt + p.chosen for p in val_pairs[:200]]
    subsets = {p.prompt: p.subset for p in reversed(val_pairs)}  # a prompt's first pair decides
    return PreferenceData(
        train,
        val_pairs,
        prompts,
        eval_prompts,
        None,
        stats,
        probe,
        eval_subsets={p: subsets[p] for p in eval_prompts},
    )
