"""Sampler configuration and the paper's calibrated ReSET parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass

SAMPLER_MODES = ("greedy", "fixed", "reset")

# The paper's settings, defined once: ReSET T_high and window, the baseline temperature,
# and the nucleus mass used by every configuration.
DEFAULT_T_HIGH = 1.0
DEFAULT_WINDOW = 32
DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_P = 0.95


@dataclass(frozen=True)
class SamplerConfig:
    """How one request's next tokens are chosen.

    ``mode``: ``"greedy"`` (argmax), ``"fixed"`` (one temperature) or ``"reset"``
    (step-aware: ``t_low`` below the threshold, ``t_high`` above). Then top-k / top-p /
    min-p filter the tempered distribution, and a seeded sample is drawn.
    Paper defaults: top-p 0.95; baseline T = 0.6; ReSET T_high = 1.0, window = 32.
    Checked here: the mode's temperatures finite and > 0, ``t_low <= t_high``, ``tau0`` finite
    and >= 0, ``window >= 1``, top-p / top-k / min-p in range, ``seed`` a signed 64-bit integer.
    """

    mode: str = "reset"
    temperature: float = DEFAULT_TEMPERATURE
    t_low: float = 0.1
    t_high: float = DEFAULT_T_HIGH
    tau0: float = 0.5505
    window: int = DEFAULT_WINDOW
    top_p: float = DEFAULT_TOP_P
    top_k: int = 0
    min_p: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in SAMPLER_MODES:
            raise ValueError(f"sampler mode must be one of {SAMPLER_MODES}, got {self.mode!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be >= 1 token (an integer), got {self.window!r}")
        if self.mode == "fixed" and not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(
                f"temperature must be a finite T > 0 for the fixed sampler, got {self.temperature}; "
                "use --sampler greedy for T -> 0"
            )
        if self.mode == "reset":
            from resetfp4.sampling.policy import check_reset_params

            check_reset_params(self.t_low, self.t_high, self.tau0, self.window)
        if not -(2**63) <= self.seed < 2**63:  # the sampler keeps seeds as int64
            raise ValueError(f"seed must fit a signed 64-bit integer [-2^63, 2^63 - 1], got {self.seed}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 <= self.min_p < 1.0:
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p}")


@dataclass(frozen=True)
class ReSETParams:
    """Calibrated per-model ReSET parameters (entropies in nats)."""

    t_low: float
    tau0: float
    t_high: float = DEFAULT_T_HIGH
    window: int = DEFAULT_WINDOW
    source: str = ""


# Table from the ReSET paper (arXiv 2606.13233): per-model (T_low, tau0).
PAPER_PARAMS: dict[str, ReSETParams] = {
    "qwen3-8b": ReSETParams(0.1, 0.5505, source="paper"),
    "qwen3-14b": ReSETParams(0.3, 0.4863, source="paper"),
    "qwen3-32b": ReSETParams(0.1, 0.5363, source="paper"),
    "deepseek-r1-distill-qwen-7b": ReSETParams(0.4, 0.6446, source="paper"),
    "deepseek-r1-distill-qwen-14b": ReSETParams(0.3, 0.6488, source="paper"),
}
