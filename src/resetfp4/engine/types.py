"""Result types shared by the engine, the CLI and the evaluation harness."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationResult:
    """One finished generation.

    ``token_ids``: generated ids only (no prompt). ``entropies`` / ``temperatures`` /
    ``step_starts``: per generated token (empty unless tracing was asked for).
    ``finish_reason``: ``"eos"``, ``"stop"`` (a stop string) or ``"length"``.
    """

    prompt: str
    token_ids: list[int]
    text: str
    finish_reason: str
    prompt_tokens: int
    entropies: list[float] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    step_starts: list[bool] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"
