"""FakeEngine: a test double that follows the engine API of ``resetfp4.engine.engine``.

It does not run a model. Each answer is right or wrong by a deterministic function of the
sample's seed, and the share of right answers depends on the sampler, so tests can check
batching, seeding, resuming and T_low selection without a model.
"""

from __future__ import annotations

import hashlib
import re

from resetfp4.engine.types import GenerationResult
from resetfp4.sampling.config import SamplerConfig


def _u01(*parts: object) -> float:
    h = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


_PROMPT_TOKENS = 12  # every fake prompt counts as this many tokens


class FakeEngine:
    """Answers ``gold`` (looked up by the question inside the prompt) with probability
    ``accuracy(sampler)``, otherwise ``gold + 1``. ``interrupt_after``: raise
    KeyboardInterrupt on that call (simulates Ctrl-C mid-run). ``max_seq_len``: the KV-cache
    length; like the real engine, a prompt (12 tokens) + ``max_new_tokens`` that does not fit
    is refused with a ValueError, so every row's budget is exactly ``max_new_tokens``."""

    def __init__(
        self,
        golds: dict[str, str],
        accuracy=None,
        interrupt_after: int | None = None,
        precision: str = "nvfp4-w4a4",
        max_seq_len: int = 2048,
    ) -> None:
        self.golds = golds
        self.accuracy = accuracy or (lambda s: 0.5)
        self.interrupt_after = interrupt_after
        self.calls: list[int] = []
        self.model_name = "fake-model"
        self.precision = precision
        self.device = "cpu"
        self.reset_params = None
        self.model_sha256 = "0" * 64
        self.max_seq_len = max_seq_len

    def decode(self, ids: list[int]) -> str:
        return "".join(f"w{i} " for i in ids)

    def _gold(self, prompt: str) -> str:
        for q, a in self.golds.items():
            if q in prompt:
                return a
        raise AssertionError(f"unknown prompt {prompt[:60]!r}")

    def generate(
        self, prompts, sampling, max_new_tokens, *, chat=True, stop=None, trace=False, progress=False
    ):
        if self.interrupt_after is not None and len(self.calls) == self.interrupt_after:
            raise KeyboardInterrupt
        samplers = sampling if isinstance(sampling, list) else [sampling] * len(prompts)
        assert len(samplers) == len(prompts)
        self.calls.append(len(prompts))
        return [self._one(p, s, max_new_tokens, trace) for p, s in zip(prompts, samplers, strict=True)]

    def _one(self, prompt: str, s: SamplerConfig, max_new_tokens: int, trace: bool) -> GenerationResult:
        gold = self._gold(prompt)
        right = _u01("ok", s.seed) < self.accuracy(s)
        ans = gold if right else str(int(gold) + 1) if re.fullmatch(r"-?\d+", gold) else "wrong"
        text = f"First step.\n\nSecond step.\n\nSo the answer is \\boxed{{{ans}}}."
        if _PROMPT_TOKENS + max_new_tokens > self.max_seq_len:
            raise ValueError(
                f"prompt of {_PROMPT_TOKENS} tokens + max_new_tokens {max_new_tokens} > max_seq_len "
                f"{self.max_seq_len}; use --max-seq-len >= {_PROMPT_TOKENS + max_new_tokens}"
            )
        n = min(max_new_tokens, 5 + s.seed % 7)
        ent = [round(_u01("e", s.seed, i) * 2, 6) for i in range(n)] if trace else []
        temps = (
            [s.t_low if e < s.tau0 else s.t_high for e in ent]
            if (trace and s.mode == "reset")
            else ([s.temperature] * n if trace else [])
        )
        starts = [i % 3 == 0 for i in range(n)] if trace else []
        return GenerationResult(
            prompt=prompt,
            token_ids=list(range(100, 100 + n)),
            text=text,
            finish_reason="length" if n == max_new_tokens else "eos",
            prompt_tokens=_PROMPT_TOKENS,
            entropies=ent,
            temperatures=temps,
            step_starts=starts,
        )
