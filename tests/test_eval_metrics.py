"""mplus.eval's pure metrics against values worked out by hand, and its small parsers."""

from __future__ import annotations

import math

import pytest

from mplus.config import ConfigError
from mplus.eval.config import SuitesConfig, parse_task_spec, suite_settings
from mplus.eval.conversation import parse_questions, transcript
from mplus.eval.judge import SINGLE_MATH_V1, SINGLE_V1, SINGLE_V1_MULTI_TURN, judge_request
from mplus.eval.metrics import (
    expected_max_toxicity,
    parse_rating,
    toxicity_probability,
    win_rate,
)
from mplus.eval.toxicity import parse_prompts
from tests.conftest import REPO

# ---------------------------------------------------------------- [[rating]] parsing


@pytest.mark.parametrize(
    "text, want",
    [
        ("The answer is accurate and helpful.\n\nRating: [[8]]", 8.0),
        ("Rating: [[7.5]]", 7.5),
        ("[[10]]", 10.0),
        ("Rating: [[1]] and later [[9]]", 1.0),  # the first [[x]] counts, as in FastChat
        ('the format is "[[rating]]". Rating: [[3]]', 3.0),  # the literal placeholder is no rating
        ("no double brackets, but [6] at the end", 6.0),  # FastChat's single-bracket fallback
        ("[4] first, then [[9]]", 9.0),  # [[x]] wins over an earlier [x]
    ],
)
def test_parse_rating_well_formed(text, want):
    assert parse_rating(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "Rating: [[seven]]",  # not a number
        "Rating: [[ 7 ]]",  # spaces inside are not FastChat's format
        "Rating: [[-3]]",  # negative: no match
        "Rating: [[11]]",  # out of the 1-10 scale
        "Rating: [[0]]",
        "Rating: [[7",  # unclosed
        "Rating: 7/10",  # no brackets at all
    ],
)
def test_parse_rating_malformed_is_none(text):
    assert parse_rating(text) is None


@pytest.mark.parametrize("text", ["", None, "I think the answer is fine."])
def test_parse_rating_missing_is_none(text):
    assert parse_rating(text) is None


# ---------------------------------------------------------------- toxicity


def test_expected_max_toxicity_by_hand():
    scores = [[0.1, 0.7, 0.2], [0.05, 0.0, 0.3], [0.9, 0.95, 0.5]]
    # maxima 0.7, 0.3, 0.95 -> mean 1.95 / 3 = 0.65
    mean, std = expected_max_toxicity(scores)
    assert mean == pytest.approx(0.65)
    # population std: deviations 0.05, -0.35, 0.3 -> (0.0025 + 0.1225 + 0.09) / 3 = 0.071666...
    assert std == pytest.approx(math.sqrt(0.215 / 3))


def test_toxicity_probability_by_hand():
    scores = [[0.1, 0.7, 0.2], [0.05, 0.0, 0.3], [0.9, 0.95, 0.5], [0.5, 0.1, 0.1]]
    # at least one >= 0.5: prompts 0, 2, 3 (0.5 counts) -> 3/4
    assert toxicity_probability(scores) == pytest.approx(0.75)
    assert toxicity_probability(scores, threshold=0.8) == pytest.approx(0.25)


def test_toxicity_metrics_reject_empty_input():
    with pytest.raises(ValueError):
        expected_max_toxicity([])
    with pytest.raises(ValueError):
        toxicity_probability([[0.2], []])


# ---------------------------------------------------------------- win rate


def test_win_rate_counts_ties_half():
    # win, tie, loss, win, tie -> (1 + 0.5 + 0 + 1 + 0.5) / 5 = 0.6
    assert win_rate([2.0, 1.0, 0.0, 3.0, -1.0], [1.0, 1.0, 0.5, 2.0, -1.0]) == pytest.approx(0.6)


def test_win_rate_against_itself_is_one_half():
    s = [0.3, -1.2, 4.0]
    assert win_rate(s, s) == 0.5


def test_win_rate_needs_paired_scores():
    with pytest.raises(ValueError):
        win_rate([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        win_rate([], [])


# ---------------------------------------------------------------- parsers and prompts


def test_parse_questions_both_formats_and_counts_malformed():
    rows = [
        {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Shorter."]},
        {
            "prompt_id": 7,
            "category": "math",
            "prompt": ["1+1?", "Times 3?"],
            "reference": ["2", "6"],
        },
        {"question_id": 3, "category": "stem", "turns": ["Only one turn"]},
        {"question_id": 4, "turns": ["", "empty first turn"]},
        {"prompt_id": 9, "category": "math", "prompt": ["3+3?", "Halve it."], "reference": []},
    ]
    qs, skipped = parse_questions(rows)
    assert skipped == 2
    assert [q.question_id for q in qs] == ["81", "7", "9"]
    assert qs[1].reference == ("2", "6") and qs[0].reference is None
    assert qs[2].reference is None  # the hub file's empty reference list means none


def test_transcript_is_the_hh_format():
    assert transcript(["Hi?", "And?"], []) == "\n\nHuman: Hi?\n\nAssistant:"
    assert transcript(["Hi?", "And?"], ["Hello."]) == (
        "\n\nHuman: Hi?\n\nAssistant: Hello.\n\nHuman: And?\n\nAssistant:"
    )


def test_judge_request_uses_fastchat_prompts():
    name, system, user = judge_request(1, ["Q1", "Q2"], ["A1", "A2"], "writing", None)
    assert name == SINGLE_V1.name and system == "You are a helpful assistant."
    assert "[Question]\nQ1\n\n[The Start of Assistant's Answer]\nA1\n" in user
    assert '"[[rating]]", for example: "Rating: [[5]]"' in user
    name, system, user = judge_request(2, ["Q1", "Q2"], ["A1", "A2"], "writing", None)
    assert name == SINGLE_V1_MULTI_TURN.name and "second user question" in system
    assert "### User:\nQ2\n\n### Assistant A:\nA2" in user
    # math with a reference answer: the reference prompt; without one: the general prompt
    name, _, user = judge_request(1, ["Q1", "Q2"], ["A1", "A2"], "math", ["R1", "R2"])
    assert name == SINGLE_MATH_V1.name and "[The Start of Reference Answer]\nR1" in user
    assert judge_request(1, ["Q1", "Q2"], ["A1", "A2"], "math", None)[0] == SINGLE_V1.name


def test_parse_prompts_challenging_subset_and_malformed():
    rows = [
        {"prompt": {"text": "So I said"}, "challenging": False},
        {"prompt": {"text": "You are a"}, "challenging": True},
        {"prompt": "not a dict"},
        {"prompt": {"text": ""}},
    ]
    assert parse_prompts(rows, False) == (["So I said", "You are a"], 2)
    assert parse_prompts(rows, True) == (["You are a"], 2)


def test_task_specs():
    assert parse_task_spec("arc_challenge:25") == ("arc_challenge", 25)
    assert parse_task_spec("piqa") == ("piqa", None)
    with pytest.raises(ConfigError, match="eval.general.tasks"):
        parse_task_spec("gsm8k:five")


def test_suite_settings_for_training_runs():
    s = suite_settings(["toxicity"], {"toxicity": {"k": 3}})
    assert isinstance(s, SuitesConfig) and s.suites == ["toxicity"] and s.toxicity.k == 3
    assert suite_settings(["all"], {}).suites == [
        "general",
        "conversation",
        "toxicity",
        "harmlessness",
    ]
    with pytest.raises(ConfigError, match="eval.suites"):
        suite_settings(["toxicty"], {})
    with pytest.raises(ConfigError, match="evaluation.suite"):
        suite_settings(["toxicity"], {"toxicity": {"kk": 3}})
    with pytest.raises(ConfigError, match="eval.toxicity.prompts=/nonexistent/rtp.jsonl"):
        suite_settings(["toxicity"], {"toxicity": {"prompts": "/nonexistent/rtp.jsonl"}})


@pytest.mark.parametrize("option", sorted(p.stem for p in (REPO / "conf" / "eval").glob("*.yaml")))
def test_every_eval_suite_option_composes(option):
    from hydra import compose, initialize_config_dir

    from mplus.eval.config import register_eval_configs, validate_eval

    register_eval_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = validate_eval(
            compose(
                "eval", overrides=[f"eval={option}", "models=[m]", "run_dir=.", "hardware=1xgpu"]
            )
        )
    assert cfg.eval.name == option and cfg.hardware.name == "1xgpu"
    assert cfg.eval.suites == (
        ["general", "conversation", "toxicity", "harmlessness"] if option == "all" else [option]
    )
