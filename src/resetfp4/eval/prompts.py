"""Chain-of-thought prompt templates (user turn; the engine applies the chat template)."""

from __future__ import annotations

from resetfp4.eval.datasets import Problem

# The instruction used by the DeepSeek-R1 / Qwen math evaluations and the ReSET paper.
MATH_COT = "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
MCQ_COT = (
    "{question}\n\n{choices}\n\nPlease reason step by step, and put the letter of the correct "
    "choice within \\boxed{{}}, e.g. \\boxed{{A}}."
)
TEMPLATES = {"math-cot": MATH_COT, "mcq-cot": MCQ_COT}


def build_prompt(problem: Problem) -> str:
    """The user message for ``problem``: verbatim for generic JSONL items, else a CoT template."""
    if problem.raw_prompt:
        return problem.question
    if problem.kind == "mcq":
        choices = "\n".join(f"({'ABCDEFGHIJ'[i]}) {c}" for i, c in enumerate(problem.choices))
        return MCQ_COT.format(question=problem.question, choices=choices)
    return MATH_COT.format(question=problem.question)


def template_name(problem: Problem) -> str:
    """Name of the template :func:`build_prompt` uses (recorded in the run config)."""
    if problem.raw_prompt:
        return "verbatim"
    return "mcq-cot" if problem.kind == "mcq" else "math-cot"
