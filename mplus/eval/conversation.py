"""``conversation``: MT-Bench-style multi-turn evaluation with a single-answer judge.

Each two-turn question is answered by the model turn by turn in the base-model transcript format
(``"\\n\\nHuman: q1\\n\\nAssistant: a1\\n\\nHuman: q2\\n\\nAssistant:"``, each answer cut at the
next ``"\\n\\nHuman:"``), at FastChat's per-category temperature. Each turn is then graded 1-10 by
the judge with FastChat's ``single-v1`` / ``single-v1-multi-turn`` prompts (the ``math`` variants,
with the reference answer, for math/reasoning/coding questions that have one), and the
``[[rating]]`` is parsed. Verdicts with no valid rating are counted (``unparsed``), requests the
judge failed are counted (``judge_errors``); neither enters a mean.

Metrics: ``score`` (mean over every graded turn, MT-Bench's number), ``score_turn1``,
``score_turn2``, ``score/<category>``, ``judged``, ``unparsed``, ``judge_errors``,
``skipped_questions`` (malformed rows in the question file).
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from mplus.eval.common import EvalError, chunks, effective_limit, load_rows, write_jsonl
from mplus.eval.judge import build_judge, judge_request
from mplus.eval.metrics import mean_or_nan, parse_rating

log = logging.getLogger("mplus.eval")


@dataclass(frozen=True)
class Question:
    question_id: str
    category: str
    turns: tuple[str, str]
    reference: tuple[str, ...] | None = None


def parse_questions(rows: list[dict]) -> tuple[list[Question], int]:
    """Question rows -> two-turn questions; rows that do not fit are skipped and counted.

    Accepts FastChat's ``question.jsonl`` (``question_id``, ``category``, ``turns``[, ``reference``])
    and the hub's ``HuggingFaceH4/mt_bench_prompts`` (``prompt_id``, ``category``, ``prompt``,
    ``reference``).
    """
    out, skipped = [], 0
    for i, row in enumerate(rows):
        turns = row.get("turns", row.get("prompt"))
        if (
            not isinstance(turns, list)
            or len(turns) != 2
            or not all(isinstance(t, str) and t.strip() for t in turns)
        ):
            skipped += 1
            continue
        ref = row.get("reference")
        ref = (
            tuple(str(r) for r in ref)
            if isinstance(ref, list) and any(str(r).strip() for r in ref)
            else None
        )
        qid = row.get("question_id", row.get("prompt_id", i))
        out.append(
            Question(
                str(qid),
                str(row.get("category") or "general"),
                (turns[0].strip(), turns[1].strip()),
                ref,
            )
        )
    return out, skipped


def transcript(turns: list[str], answers: list[str]) -> str:
    """The HH transcript up to the Assistant tag of turn ``len(answers) + 1``."""
    text = ""
    for i, q in enumerate(turns[: len(answers) + 1]):
        text += f"\n\nHuman: {q}\n\nAssistant:"
        if i < len(answers):
            text += f" {answers[i]}"
    return text


class ConversationSuite:
    name = "conversation"

    def __init__(self, cfg, *, limit, seed: int, out_dir: Path, device: str, attn: str):
        self.cfg, self.seed, self.out_dir = cfg, seed, out_dir
        self.limit = effective_limit(limit, cfg.limit)
        self.judge = build_judge(cfg.judge)
        if hasattr(self.judge, "device"):
            self.judge.device, self.judge.attn = device, attn
        self.questions: list[Question] = []
        self.skipped = 0
        self.answers: dict[str, list[list[str]]] = {}

    def check(self) -> None:
        """Load the questions and reach the judge, before any model is loaded."""
        rows = load_rows(
            self.cfg.questions, split=self.cfg.split, key="eval.conversation.questions"
        )
        self.questions, self.skipped = parse_questions(rows)
        if self.limit is not None:
            self.questions = self.questions[: int(self.limit)]
        if not self.questions:
            raise EvalError(
                f"eval.conversation.questions={self.cfg.questions}: no usable "
                f"two-turn question ({self.skipped} malformed rows)"
            )
        if self.skipped:
            log.warning("conversation: skipped %d malformed question rows", self.skipped)
        self.judge.check()
        log.info(
            "conversation: %d two-turn questions from %s", len(self.questions), self.cfg.questions
        )

    def _temperature(self, q: Question) -> float:
        return self.cfg.temperature.get(q.category, self.cfg.default_temperature)

    def run_model(self, label: str, model, tok) -> dict:
        """Answers every question turn by turn; keeps them for :meth:`finish`."""
        import torch

        from mplus.rollout import HFGenerateEngine

        t0 = time.time()
        answers = [[] for _ in self.questions]
        by_temp = collections.defaultdict(list)
        for i, q in enumerate(self.questions):
            by_temp[self._temperature(q)].append(i)
        torch.manual_seed(self.seed)
        for turn in range(2):
            for temp, idx in sorted(by_temp.items()):
                engine = HFGenerateEngine(
                    tok,
                    max_new_tokens=self.cfg.max_new_tokens,
                    temperature=temp,
                    stop_strings=self.cfg.stop_strings,
                    max_prompt_length=self.cfg.max_prompt_length,
                )
                for batch in chunks(idx, self.cfg.batch_size):
                    prompts = [transcript(list(self.questions[i].turns), answers[i]) for i in batch]
                    for i, r in zip(batch, engine.generate(model, prompts).responses, strict=True):
                        answers[i].append(r.strip())
            log.info(
                "conversation [%s]: turn %d answered (%d questions, %.0fs)",
                label,
                turn + 1,
                len(self.questions),
                time.time() - t0,
            )
        self.answers[label] = answers
        write_jsonl(
            self.out_dir / "conversation" / f"{label}.answers.jsonl",
            (
                {
                    "question_id": q.question_id,
                    "category": q.category,
                    "turns": list(q.turns),
                    "answers": a,
                }
                for q, a in zip(self.questions, answers, strict=True)
            ),
        )
        return {}

    def finish(self, labels: list[str]) -> dict[str, dict]:
        """Grades every model's answers with one judge load; returns metrics per label."""
        requests, owners = [], []
        for label in labels:
            for qi, q in enumerate(self.questions):
                for turn in (1, 2):
                    name, system, user = judge_request(
                        turn,
                        list(q.turns),
                        self.answers[label][qi],
                        q.category,
                        list(q.reference) if q.reference else None,
                    )
                    requests.append((system, user))
                    owners.append((label, qi, turn, name))
        log.info(
            "conversation: grading %d turns with %s judge %s",
            len(requests),
            self.cfg.judge.kind,
            self.cfg.judge.model,
        )
        self.judge.load()
        try:
            verdicts = self.judge.complete(requests)
        finally:
            self.judge.close()

        rows = collections.defaultdict(list)
        for (label, qi, turn, name), verdict in zip(owners, verdicts, strict=True):
            q = self.questions[qi]
            rows[label].append(
                {
                    "question_id": q.question_id,
                    "category": q.category,
                    "turn": turn,
                    "judge_prompt": name,
                    "judgment": verdict,
                    "rating": parse_rating(verdict),
                    "error": verdict is None,
                }
            )
        results = {}
        for label in labels:
            write_jsonl(self.out_dir / "conversation" / f"{label}.judgments.jsonl", rows[label])
            results[label] = self._metrics(rows[label])
        return results

    def _metrics(self, rows: list[dict]) -> dict:
        p = "eval/conversation"
        rated = [r for r in rows if r["rating"] is not None]
        m = {
            f"{p}/score": mean_or_nan([r["rating"] for r in rated]),
            f"{p}/score_turn1": mean_or_nan([r["rating"] for r in rated if r["turn"] == 1]),
            f"{p}/score_turn2": mean_or_nan([r["rating"] for r in rated if r["turn"] == 2]),
            f"{p}/judged": len(rated),
            f"{p}/unparsed": sum(r["rating"] is None and not r["error"] for r in rows),
            f"{p}/judge_errors": sum(r["error"] for r in rows),
            f"{p}/skipped_questions": self.skipped,
        }
        for cat in sorted({r["category"] for r in rows}):
            m[f"{p}/score/{cat}"] = mean_or_nan(
                [r["rating"] for r in rated if r["category"] == cat]
            )
        return m
