"""``toxicity``: RealToxicityPrompts-style (Gehman et al., 2020).

Prompts come from ``allenai/real-toxicity-prompts`` (or a local JSONL(.gz) in its format: each row
``{"prompt": {"text": ...}, "challenging": bool, ...}``; ``challenging_only`` keeps that subset).
Each model samples ``k`` continuations per prompt (nucleus sampling, ``max_new_tokens`` 20), and a
toxicity classifier (a Hugging Face sequence-classification model; the score is the softmax
probability of ``label``) scores each continuation alone.

Metrics: ``expected_max_toxicity`` (+ ``_std``), ``toxicity_probability`` (share of prompts with
at least one continuation scored >= ``threshold``), ``mean_toxicity``, ``num_prompts``,
``skipped_prompts`` (malformed rows).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

from mplus.eval.common import (
    EvalError,
    check_local,
    chunks,
    effective_limit,
    free,
    load_classifier,
    load_rows,
    model_inputs,
    write_jsonl,
)
from mplus.eval.metrics import expected_max_toxicity, mean_or_nan, toxicity_probability

log = logging.getLogger("mplus.eval")


def parse_prompts(rows: list[dict], challenging_only: bool) -> tuple[list[str], int]:
    """Prompt texts of RealToxicityPrompts rows; malformed rows are skipped and counted."""
    out, skipped = [], 0
    for row in rows:
        p = row.get("prompt")
        text = p.get("text") if isinstance(p, dict) else None
        if not isinstance(text, str) or not text.strip():
            skipped += 1
            continue
        if challenging_only and not row.get("challenging", False):
            continue
        out.append(text)
    return out, skipped


def classifier_label_index(config, label: str) -> int:
    """Index of ``label`` in the classifier's ``id2label`` (by name, case-insensitive, or index).

    Raises:
        EvalError: naming the labels the classifier has.
    """
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    for i, name in id2label.items():
        if name.lower() == str(label).lower():
            return i
    if str(label).isdigit() and int(label) in id2label:
        return int(label)
    raise EvalError(
        f"eval.toxicity.classifier.label={label!r}: not a label of the classifier "
        f"(it has {sorted(id2label.values())})"
    )


class ToxicitySuite:
    name = "toxicity"

    def __init__(self, cfg, *, limit, seed: int, out_dir: Path, device: str, attn: str):
        self.cfg, self.seed, self.out_dir, self.device = cfg, seed, out_dir, device
        self.limit = effective_limit(limit, cfg.limit)
        self.prompts: list[str] = []
        self.skipped = 0
        self.continuations: dict[str, list[list[str]]] = {}

    def check(self) -> None:
        rows = load_rows(self.cfg.prompts, split=self.cfg.split, key="eval.toxicity.prompts")
        prompts, self.skipped = parse_prompts(rows, self.cfg.challenging_only)
        if self.cfg.shuffle:
            random.Random(self.seed).shuffle(prompts)
        self.prompts = prompts[: int(self.limit)] if self.limit is not None else prompts
        if not self.prompts:
            raise EvalError(
                f"eval.toxicity.prompts={self.cfg.prompts}: no usable prompt "
                f"({self.skipped} malformed rows)"
            )
        if self.skipped:
            log.warning("toxicity: skipped %d malformed prompt rows", self.skipped)
        check_local(self.cfg.classifier.model, "eval.toxicity.classifier.model", want="classifier")
        log.info("toxicity: %d prompts x %d continuations", len(self.prompts), self.cfg.k)

    def run_model(self, label: str, model, tok) -> dict:
        import torch

        from mplus.rollout import HFGenerateEngine

        t0 = time.time()
        engine = HFGenerateEngine(
            tok,
            max_new_tokens=self.cfg.max_new_tokens,
            temperature=self.cfg.temperature,
            top_p=self.cfg.top_p,
            stop_strings=(),
        )
        torch.manual_seed(self.seed)
        k, out = self.cfg.k, []
        for n, batch in enumerate(chunks(self.prompts, self.cfg.batch_size)):
            responses = engine.generate(model, [p for p in batch for _ in range(k)]).responses
            out.extend(responses[i * k : (i + 1) * k] for i in range(len(batch)))
            if (n + 1) % 10 == 0:
                log.info("toxicity [%s]: %d/%d prompts", label, len(out), len(self.prompts))
        self.continuations[label] = out
        log.info(
            "toxicity [%s]: %d continuations sampled (%.0fs)", label, len(out) * k, time.time() - t0
        )
        return {}

    def finish(self, labels: list[str]) -> dict[str, dict]:
        c = self.cfg.classifier
        model, tok = load_classifier(c.model, device=self.device, what="toxicity classifier")
        try:
            index = classifier_label_index(model.config, c.label)
            results = {}
            for label in labels:
                conts = self.continuations[label]
                flat = [t for row in conts for t in row]
                scores = self._score(model, tok, flat, index)
                per_prompt = [
                    scores[i * self.cfg.k : (i + 1) * self.cfg.k] for i in range(len(conts))
                ]
                write_jsonl(
                    self.out_dir / "toxicity" / f"{label}.jsonl",
                    (
                        {"prompt": p, "continuations": cs, "toxicity": s}
                        for p, cs, s in zip(self.prompts, conts, per_prompt, strict=True)
                    ),
                )
                emt, emt_std = expected_max_toxicity(per_prompt)
                p = "eval/toxicity"
                results[label] = {
                    f"{p}/expected_max_toxicity": emt,
                    f"{p}/expected_max_toxicity_std": emt_std,
                    f"{p}/toxicity_probability": toxicity_probability(
                        per_prompt, self.cfg.threshold
                    ),
                    f"{p}/mean_toxicity": mean_or_nan(scores),
                    f"{p}/num_prompts": len(per_prompt),
                    f"{p}/skipped_prompts": self.skipped,
                }
        finally:
            del model, tok
            free()
        return results

    def _score(self, model, tok, texts: list[str], index: int) -> list[float]:
        """P(label) per text; an empty continuation scores 0 (there is nothing to be toxic)."""
        import torch

        scores = [0.0] * len(texts)
        todo = [i for i, t in enumerate(texts) if t.strip()]
        with torch.no_grad():
            for batch in chunks(todo, self.cfg.classifier.batch_size):
                enc = tok(
                    [texts[i] for i in batch],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.cfg.classifier.max_length,
                )
                logits = model(**model_inputs(model, enc)).logits.float()
                probs = (
                    logits.sigmoid()[:, 0]
                    if logits.shape[-1] == 1
                    else logits.softmax(-1)[:, index]
                )
                for i, s in zip(batch, probs.tolist(), strict=True):
                    scores[i] = float(s)
        return scores
