"""``harmlessness``: responses to held-out HH-RLHF prompts, scored by a reward model.

Prompts are the parsed prompts (up to the last ``"\\n\\nAssistant:"``) of the HH-RLHF test split
of each subset (``harmless-base`` and ``helpful-base`` by default; hub ``Anthropic/hh-rlhf`` or
local files in its format), deduplicated, the first ``limit`` per subset. Every model answers the
same prompts (same seed); one reward model (an mplus ``reward_model/`` export or any
sequence-classification model) scores ``prompt + response`` as mplus's reward models were
trained (:func:`mplus.models.reward.score_texts`).

Metrics: ``reward_mean`` and ``win_rate`` (against the first model: a win 1, a tie 0.5; the first
model itself gets 0.5), overall and per subset (``<subset>/reward_mean``, ``<subset>/win_rate``),
``num_prompts``, ``skipped_rows`` (HH rows that did not parse).
"""

from __future__ import annotations

import collections
import logging
import time
from pathlib import Path

from mplus.eval.common import (
    EvalError,
    check_local,
    chunks,
    effective_limit,
    free,
    load_classifier,
    write_jsonl,
)
from mplus.eval.metrics import mean_or_nan, win_rate

log = logging.getLogger("mplus.eval")


def load_prompts(cfg, limit) -> tuple[list[tuple[str, str]], int]:
    """``[(subset, prompt)]`` and the number of HH rows skipped while parsing.

    With ``files``, each file's subset comes from its name (``harmless-base-test...``); else each
    of ``subsets`` is read from the hub's ``split``.

    Raises:
        EvalError: a file is missing or malformed (file and line), or the hub cannot be reached.
    """
    from mplus.data.hh import DataFileError, load_hh_rows, parse_rows, subset_from_filename

    sources: dict[str, list] = collections.defaultdict(list)
    if cfg.files is not None:
        files = [cfg.files] if isinstance(cfg.files, str) else list(cfg.files)
        for f in files:
            if not Path(f).expanduser().is_file():
                raise EvalError(f"eval.harmlessness.files: {f}: file not found")
            sources[subset_from_filename(f)].append(f)
    else:
        sources = {s: None for s in cfg.subsets}
    prompts, skipped = [], 0
    for subset, files in sources.items():
        try:
            if files is not None:
                from mplus.data.hh import read_jsonl

                rows = [r for f in files for r in read_jsonl(f)]
            else:
                rows = load_hh_rows(subset, cfg.split, hub_path=cfg.hub_path)
        except DataFileError as e:
            raise EvalError(f"eval.harmlessness.files: {e}") from e
        except ValueError as e:  # unknown subset
            raise EvalError(f"eval.harmlessness.subsets: {e}") from e
        except Exception as e:  # hub unreachable / offline
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EvalError(
                f"eval.harmlessness: cannot load {cfg.hub_path} {subset} "
                f"({type(e).__name__}: {first}); give eval.harmlessness.files"
            ) from e
        pairs, skip = parse_rows(rows, subset)
        skipped += sum(skip.values())
        seen, kept = set(), []
        for pair in pairs:
            if pair.prompt not in seen:
                seen.add(pair.prompt)
                kept.append((subset, pair.prompt))
        prompts.extend(kept[: int(limit)] if limit is not None else kept)
    return prompts, skipped


class HarmlessnessSuite:
    name = "harmlessness"

    def __init__(self, cfg, *, limit, seed: int, out_dir: Path, device: str, attn: str):
        self.cfg, self.seed, self.out_dir, self.device = cfg, seed, out_dir, device
        self.limit = effective_limit(limit, cfg.limit)
        self.items: list[tuple[str, str]] = []
        self.skipped = 0
        self.responses: dict[str, list[str]] = {}

    def check(self) -> None:
        if not self.cfg.reward_model:
            raise EvalError(
                "eval.harmlessness.reward_model: not set; give an mplus "
                "reward_model/ export or a sequence-classification model"
            )
        check_local(self.cfg.reward_model, "eval.harmlessness.reward_model", want="reward model")
        self.items, self.skipped = load_prompts(self.cfg, self.limit)
        if not self.items:
            raise EvalError(f"eval.harmlessness: no usable HH prompt ({self.skipped} rows skipped)")
        counts = collections.Counter(s for s, _ in self.items)
        log.info("harmlessness: %s held-out prompts", dict(counts))

    def run_model(self, label: str, model, tok) -> dict:
        import torch

        from mplus.rollout import HFGenerateEngine

        t0 = time.time()
        c = self.cfg
        engine = HFGenerateEngine(
            tok,
            max_new_tokens=c.max_new_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            stop_strings=c.stop_strings,
            max_prompt_length=c.max_prompt_length,
        )
        torch.manual_seed(self.seed)
        out = []
        for batch in chunks([p for _, p in self.items], c.batch_size):
            out.extend(engine.generate(model, batch).responses)
        self.responses[label] = out
        log.info("harmlessness [%s]: %d responses (%.0fs)", label, len(out), time.time() - t0)
        return {}

    def finish(self, labels: list[str]) -> dict[str, dict]:
        from mplus.models.reward import score_texts

        model, tok = load_classifier(self.cfg.reward_model, device=self.device, what="reward model")
        if tok.eos_token_id is None:
            del model
            free()
            raise EvalError(
                f"eval.harmlessness.reward_model={self.cfg.reward_model}: its "
                "tokenizer has no EOS token to end the scored text with"
            )
        try:
            prompts = [p for _, p in self.items]
            scores = {
                label: score_texts(
                    model,
                    tok,
                    prompts,
                    self.responses[label],
                    batch_size=self.cfg.reward_batch_size,
                ).tolist()
                for label in labels
            }
        finally:
            del model, tok
            free()
        ref = scores[labels[0]]
        subsets = sorted({s for s, _ in self.items})
        results = {}
        for label in labels:
            write_jsonl(
                self.out_dir / "harmlessness" / f"{label}.jsonl",
                (
                    {"subset": s, "prompt": p, "response": r, "reward": x, "reward_first_model": y}
                    for (s, p), r, x, y in zip(
                        self.items, self.responses[label], scores[label], ref, strict=True
                    )
                ),
            )
            p = "eval/harmlessness"
            m = {
                f"{p}/reward_mean": mean_or_nan(scores[label]),
                f"{p}/win_rate": win_rate(scores[label], ref),
                f"{p}/num_prompts": len(self.items),
                f"{p}/skipped_rows": self.skipped,
            }
            for sub in subsets:
                idx = [i for i, (s, _) in enumerate(self.items) if s == sub]
                mine, theirs = [scores[label][i] for i in idx], [ref[i] for i in idx]
                m[f"{p}/{sub}/reward_mean"] = mean_or_nan(mine)
                m[f"{p}/{sub}/win_rate"] = win_rate(mine, theirs)
            results[label] = m
        return results
