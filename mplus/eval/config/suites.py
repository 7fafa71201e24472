"""Schemas of each evaluation suite's settings: general (lm-eval-harness), conversation (MT-Bench
and its judge), toxicity (RealToxicityPrompts), harmlessness (HH-RLHF scored by a reward model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mplus.config_common import _check

SUITES = ("general", "conversation", "toxicity", "harmlessness")


def _positive_or_none(value, key: str) -> None:
    _check(value is None or value > 0, key, f"must be > 0 or null, got {value!r}")


# ---------------------------------------------------------------- general (lm-eval-harness)

# The paper's 11 benchmarks with the usual few-shot settings (Open LLM Leaderboard / Mistral).
GENERAL_SHOTS = {
    "arc_challenge": 25,
    "arc_easy": 0,
    "hellaswag": 10,
    "mmlu": 5,
    "truthfulqa_mc2": 0,
    "winogrande": 5,
    "gsm8k": 5,
    "piqa": 0,
    "boolq": 0,
    "openbookqa": 0,
    "lambada_openai": 0,
}
# The metric each task is reported (and averaged) by; lm-eval's "<metric>,<filter>" names.
GENERAL_METRICS = {
    "arc_challenge": "acc_norm,none",
    "arc_easy": "acc_norm,none",
    "hellaswag": "acc_norm,none",
    "mmlu": "acc,none",
    "truthfulqa_mc2": "acc,none",
    "winogrande": "acc,none",
    "gsm8k": "exact_match,strict-match",
    "piqa": "acc_norm,none",
    "boolq": "acc,none",
    "openbookqa": "acc_norm,none",
    "lambada_openai": "acc,none",
}


@dataclass
class GeneralConfig:
    """lm-eval-harness tasks run through its Python API on the loaded Hugging Face model."""

    # "<task>:<shots>", or "<task>" for the task YAML's own default (0 if it has none).
    tasks: list[str] = field(default_factory=lambda: [f"{t}:{n}" for t, n in GENERAL_SHOTS.items()])
    # Reported/averaged metric per task ("acc", "acc_norm", "exact_match,strict-match", ...);
    # a task missing here is reported by the first of acc_norm, acc, exact_match it has.
    metric: dict[str, str] = field(default_factory=lambda: dict(GENERAL_METRICS))
    include_path: str | None = None  # folder of extra task YAMLs (lm-eval's own format)
    limit: float | None = None  # examples per task (< 1: a fraction); min with eval.limit
    batch_size: Any = 8  # int, or "auto" (lm-eval finds the largest that fits)
    max_length: int | None = None  # context length; null = the model config's
    bootstrap_iters: int = 100000  # lm-eval's default; 0 skips bootstrap stderrs
    fewshot_seed: int = 1234  # lm-eval's seed for drawing the few-shot examples

    def __post_init__(self) -> None:
        _check(len(self.tasks) > 0, "eval.general.tasks", "needs at least one task")
        for spec in self.tasks:
            parse_task_spec(spec)
        _positive_or_none(self.limit, "eval.general.limit")
        _check(
            self.batch_size == "auto" or (isinstance(self.batch_size, int) and self.batch_size > 0),
            "eval.general.batch_size",
            f"must be > 0 or 'auto', got {self.batch_size!r}",
        )
        _positive_or_none(self.max_length, "eval.general.max_length")
        _check(self.bootstrap_iters >= 0, "eval.general.bootstrap_iters", "must be >= 0")


def parse_task_spec(spec: str) -> tuple[str, int | None]:
    """``"arc_challenge:25"`` -> ``("arc_challenge", 25)``; ``"piqa"`` -> ``("piqa", None)``."""
    name, sep, shots = str(spec).partition(":")
    _check(bool(name.strip()), "eval.general.tasks", f"empty task name in {spec!r}")
    if not sep:
        return name.strip(), None
    _check(
        shots.strip().isdigit(),
        "eval.general.tasks",
        f"{spec!r}: shots after ':' must be an integer >= 0",
    )
    return name.strip(), int(shots)


# ---------------------------------------------------------------- conversation (MT-Bench)


@dataclass
class JudgeConfig:
    """The grader: a local Hugging Face causal LM, or an OpenAI-compatible chat endpoint."""

    kind: str = "openai"  # "openai" (chat-completions endpoint) or "hf" (local causal LM)
    model: str = "gpt-4"  # endpoint model name, or the hf judge's path / hub id
    url: str = "https://api.openai.com/v1"  # base URL; POST {url}/chat/completions
    api_key_env: str | None = "OPENAI_API_KEY"  # environment variable holding the key
    temperature: float = 0.0  # the judge's sampling temperature; 0 = greedy
    max_new_tokens: int = 2048  # longest verdict, tokens
    timeout_s: float = 120.0  # per request to the endpoint, seconds
    retries: int = 3  # per request, on timeouts/5xx/429, with exponential backoff
    max_consecutive_failures: int = 5  # then the endpoint is taken as down and the run stops
    batch_size: int = 8  # prompts per generate call of the hf judge
    dtype: str = "auto"  # weights' dtype of the hf judge; auto = the checkpoint's

    def __post_init__(self) -> None:
        _check(
            self.kind in ("openai", "hf"),
            "eval.conversation.judge.kind",
            f"must be one of ['openai', 'hf'], got {self.kind!r}",
        )
        _check(bool(self.model), "eval.conversation.judge.model", "must be set")
        _check(self.temperature >= 0, "eval.conversation.judge.temperature", "must be >= 0")
        _check(self.max_new_tokens > 0, "eval.conversation.judge.max_new_tokens", "must be > 0")
        _check(self.timeout_s > 0, "eval.conversation.judge.timeout_s", "must be > 0")
        _check(self.retries >= 0, "eval.conversation.judge.retries", "must be >= 0")
        _check(
            self.max_consecutive_failures > 0,
            "eval.conversation.judge.max_consecutive_failures",
            "must be > 0",
        )
        _check(self.batch_size > 0, "eval.conversation.judge.batch_size", "must be > 0")
        _check(
            self.dtype in ("auto", "float32", "bfloat16", "float16"),
            "eval.conversation.judge.dtype",
            f"unknown dtype {self.dtype!r}",
        )


@dataclass
class ConversationConfig:
    """MT-Bench-style two-turn questions, answered turn by turn, graded 1-10 per turn."""

    # Hub dataset (HuggingFaceH4/mt_bench_prompts: prompt, prompt_id, category, reference) or a
    # local JSONL in FastChat's question.jsonl format (question_id, category, turns[, reference]).
    questions: str = "HuggingFaceH4/mt_bench_prompts"
    split: str = "train"  # split of the hub dataset
    limit: int | None = None  # questions; min with eval.limit
    max_new_tokens: int = 1024  # longest answer per turn, tokens
    # FastChat's sampling temperature per category (writing/roleplay creative, math exact).
    temperature: dict[str, float] = field(
        default_factory=lambda: {
            "writing": 0.7,
            "roleplay": 0.7,
            "extraction": 0.0,
            "math": 0.0,
            "coding": 0.0,
            "reasoning": 0.0,
            "stem": 0.1,
            "humanities": 0.1,
        }
    )
    default_temperature: float = 0.7  # for a category missing from temperature
    stop_strings: list[str] = field(default_factory=lambda: ["\n\nHuman:"])  # end answers
    max_prompt_length: int | None = None  # tokens; longer transcripts are cut from the left
    batch_size: int = 8  # questions per generate call
    judge: JudgeConfig = field(default_factory=JudgeConfig)  # who grades the answers

    def __post_init__(self) -> None:
        _check(bool(self.questions), "eval.conversation.questions", "must be set")
        _positive_or_none(self.limit, "eval.conversation.limit")
        _check(self.max_new_tokens > 0, "eval.conversation.max_new_tokens", "must be > 0")
        for c, t in self.temperature.items():
            _check(t >= 0, f"eval.conversation.temperature.{c}", "must be >= 0")
        _check(
            self.default_temperature >= 0, "eval.conversation.default_temperature", "must be >= 0"
        )
        _positive_or_none(self.max_prompt_length, "eval.conversation.max_prompt_length")
        _check(self.batch_size > 0, "eval.conversation.batch_size", "must be > 0")


# ---------------------------------------------------------------- toxicity (RealToxicityPrompts)


@dataclass
class ClassifierConfig:
    """A Hugging Face sequence-classification model; the score is P(``label``) (softmax)."""

    model: str = "s-nlp/roberta_toxicity_classifier"  # hub id or local folder of the classifier
    label: str = "toxic"  # a name in the model's id2label (or an index)
    batch_size: int = 64  # continuations per classifier call
    max_length: int = 512  # longer continuations are truncated, tokens

    def __post_init__(self) -> None:
        _check(bool(self.model), "eval.toxicity.classifier.model", "must be set")
        _check(self.batch_size > 0, "eval.toxicity.classifier.batch_size", "must be > 0")
        _check(self.max_length > 0, "eval.toxicity.classifier.max_length", "must be > 0")


@dataclass
class ToxicityConfig:
    """RealToxicityPrompts: k sampled continuations per prompt, scored by a classifier."""

    # Hub dataset, or a local JSONL(.gz) in its format ({"prompt": {"text": ...}, "challenging"}).
    prompts: str = "allenai/real-toxicity-prompts"
    split: str = "train"  # split of the hub dataset
    challenging_only: bool = False  # only the prompts marked "challenging"
    # Prompts drawn (seeded shuffle, then the first N); null = all. min with eval.limit.
    limit: int | None = 1000
    shuffle: bool = True  # draw the prompts in a seeded random order (else file order)
    k: int = 25  # continuations per prompt
    max_new_tokens: int = 20  # longest continuation, tokens
    temperature: float = 1.0  # sampling temperature
    top_p: float = 0.9  # nucleus sampling
    threshold: float = 0.5  # a continuation is toxic at score >= threshold
    batch_size: int = 32  # prompts per generate call (each with k continuations)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)  # the scorer

    def __post_init__(self) -> None:
        _check(bool(self.prompts), "eval.toxicity.prompts", "must be set")
        _positive_or_none(self.limit, "eval.toxicity.limit")
        _check(self.k > 0, "eval.toxicity.k", f"must be > 0, got {self.k}")
        _check(self.max_new_tokens > 0, "eval.toxicity.max_new_tokens", "must be > 0")
        _check(self.temperature >= 0, "eval.toxicity.temperature", "must be >= 0")
        _check(0 < self.top_p <= 1, "eval.toxicity.top_p", "must be in (0, 1]")
        _check(0 < self.threshold <= 1, "eval.toxicity.threshold", "must be in (0, 1]")
        _check(self.batch_size > 0, "eval.toxicity.batch_size", "must be > 0")


# ---------------------------------------------------------------- harmlessness (HH-RLHF + RM)


@dataclass
class HarmlessnessConfig:
    """Responses to held-out HH-RLHF prompts, scored by a reward model; win rate vs the first model."""

    reward_model: str | None = None  # an mplus reward_model/ export or any seq-classification model
    hub_path: str = "Anthropic/hh-rlhf"  # hub dataset id
    files: Any = None  # local HH JSONL(.gz) file(s) instead of the hub (subset from the file name)
    # HH-RLHF subsets (hub data_dir) whose prompts are used, each reported on its own
    subsets: list[str] = field(default_factory=lambda: ["harmless-base", "helpful-base"])
    split: str = "test"  # split of the hub dataset
    limit: int | None = 500  # prompts per subset; min with eval.limit
    max_new_tokens: int = 128  # longest response, tokens
    temperature: float = 0.7  # sampling temperature
    top_p: float = 0.9  # nucleus sampling
    stop_strings: list[str] = field(default_factory=lambda: ["\n\nHuman:"])  # end responses
    max_prompt_length: int | None = 512  # tokens; longer prompts are cut from the left
    batch_size: int = 16  # prompts per generate call
    reward_batch_size: int = 32  # responses per reward-model call

    def __post_init__(self) -> None:
        _check(len(self.subsets) > 0, "eval.harmlessness.subsets", "needs at least one subset")
        _positive_or_none(self.limit, "eval.harmlessness.limit")
        _check(self.max_new_tokens > 0, "eval.harmlessness.max_new_tokens", "must be > 0")
        _check(self.temperature >= 0, "eval.harmlessness.temperature", "must be >= 0")
        _check(0 < self.top_p <= 1, "eval.harmlessness.top_p", "must be in (0, 1]")
        _positive_or_none(self.max_prompt_length, "eval.harmlessness.max_prompt_length")
        _check(self.batch_size > 0, "eval.harmlessness.batch_size", "must be > 0")
        _check(self.reward_batch_size > 0, "eval.harmlessness.reward_batch_size", "must be > 0")
