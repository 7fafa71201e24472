"""MT-Bench's standard single-answer grading prompts (FastChat ``llm_judge``), and the messages
that grade one turn of one question (:func:`judge_request`); run by :mod:`mplus.eval.judge`."""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------- the prompts (FastChat llm_judge)

_RATE = (
    "After providing your explanation, you must rate the response on a scale of 1 to 10 by "
    'strictly following this format: "[[rating]]", for example: "Rating: [[5]]".'
)


@dataclass(frozen=True)
class JudgePrompt:
    """One of FastChat's ``judge_prompts.jsonl`` single-answer prompts."""

    name: str
    system_prompt: str
    prompt_template: str


SINGLE_V1 = JudgePrompt(
    name="single-v1",
    system_prompt="You are a helpful assistant.",
    prompt_template=(
        "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response "
        "provided by an AI assistant to the user question displayed below. Your evaluation should "
        "consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and "
        "level of detail of the response. Begin your evaluation by providing a short explanation. "
        f"Be as objective as possible. {_RATE}\n\n[Question]\n{{question}}\n\n"
        "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
    ),
)

SINGLE_MATH_V1 = JudgePrompt(
    name="single-math-v1",
    system_prompt="You are a helpful assistant.",
    prompt_template=(
        "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response "
        "provided by an AI assistant to the user question displayed below. Your evaluation should "
        "consider correctness and helpfulness. You will be given a reference answer and the "
        "assistant's answer. Begin your evaluation by comparing the assistant's answer with the "
        "reference answer. Identify and correct any mistakes. Be as objective as possible. "
        f"{_RATE}\n\n[Question]\n{{question}}\n\n[The Start of Reference Answer]\n{{ref_answer_1}}"
        "\n[The End of Reference Answer]\n\n[The Start of Assistant's Answer]\n{answer}\n"
        "[The End of Assistant's Answer]"
    ),
)

_CONVERSATION = (
    "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n"
    "### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answer_2}\n\n"
    "<|The End of Assistant A's Conversation with User|>"
)

SINGLE_V1_MULTI_TURN = JudgePrompt(
    name="single-v1-multi-turn",
    system_prompt=(
        "Please act as an impartial judge and evaluate the quality of the response provided by an "
        "AI assistant to the user question displayed below. Your evaluation should consider "
        "factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of "
        "detail of the response. You evaluation should focus on the assistant's answer to the "
        "second user question. Begin your evaluation by providing a short explanation. Be as "
        f"objective as possible. {_RATE}\n\n"
    ),
    prompt_template=_CONVERSATION,
)

SINGLE_MATH_V1_MULTI_TURN = JudgePrompt(
    name="single-math-v1-multi-turn",
    system_prompt=(
        "Please act as an impartial judge and evaluate the quality of the response provided by an "
        "AI assistant to the user question. Your evaluation should consider correctness and "
        "helpfulness. You will be given a reference answer and the assistant's answer. You "
        "evaluation should focus on the assistant's answer to the second question. Begin your "
        "evaluation by comparing the assistant's answer with the reference answer. Identify and "
        f"correct any mistakes. Be as objective as possible. {_RATE}\n\n"
    ),
    prompt_template=(
        "<|The Start of Reference Answer|>\n\n### User:\n{question_1}\n\n### Reference answer:\n"
        "{ref_answer_1}\n\n### User:\n{question_2}\n\n### Reference answer:\n{ref_answer_2}\n\n"
        "<|The End of Reference Answer|>\n\n\n" + _CONVERSATION
    ),
)

# FastChat grades these categories against a reference answer when one is given.
NEED_REF_CATEGORIES = ("math", "reasoning", "coding", "arena-hard-200")


def judge_request(
    turn: int, questions: list[str], answers: list[str], category: str, reference: list[str] | None
) -> tuple[str, str, str]:
    """The (prompt name, system, user) messages that grade ``turn`` (1 or 2) of one question."""
    use_ref = category in NEED_REF_CATEGORIES and reference is not None and len(reference) >= turn
    if turn == 1:
        p = SINGLE_MATH_V1 if use_ref else SINGLE_V1
        kw = {"question": questions[0], "answer": answers[0]}
        if use_ref:
            kw["ref_answer_1"] = reference[0]
    else:
        p = SINGLE_MATH_V1_MULTI_TURN if use_ref else SINGLE_V1_MULTI_TURN
        kw = {
            "question_1": questions[0],
            "question_2": questions[1],
            "answer_1": answers[0],
            "answer_2": answers[1],
        }
        if use_ref:
            kw.update(ref_answer_1=reference[0], ref_answer_2=reference[1])
    return p.name, p.system_prompt, p.prompt_template.format(**kw)
