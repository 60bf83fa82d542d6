"""Where the engine meets :mod:`resetfp4.sampling` (the only module that knows its API)."""

from __future__ import annotations

from typing import Any

import torch

from resetfp4.sampling import BatchSampler, BoundaryTables, ReSETParams, SamplerConfig
from resetfp4.sampling import triton_available as triton_available  # re-exported for the decode step
from resetfp4.sampling.config import PAPER_PARAMS


def make_sampler(
    max_batch: int, vocab_size: int, device: torch.device, tokenizer: Any | None
) -> BatchSampler:
    """A batched sampler over the model's (possibly padded) vocabulary with step-boundary
    tables from ``tokenizer`` (``None``: no boundaries, e.g. random-weight benchmarks)."""
    tables = BoundaryTables.from_tokenizer(tokenizer) if tokenizer is not None else None
    return BatchSampler(max_batch, vocab_size, device, boundary=tables)


def known_reset_params(model_name: str) -> ReSETParams | None:
    """The paper's calibrated ReSET parameters when ``model_name`` names one of its models."""
    key = model_name.lower().rstrip("/").rsplit("/", 1)[-1]
    for name, params in PAPER_PARAMS.items():
        if key.startswith(name):
            return params
    return None


def reset_config(params: ReSETParams | None, **overrides: Any) -> SamplerConfig:
    """The ``reset`` sampler with ``params`` (paper defaults of SamplerConfig when ``None``)."""
    base: dict[str, Any] = {"mode": "reset"}
    if params is not None:
        base.update(t_low=params.t_low, tau0=params.tau0, t_high=params.t_high, window=params.window)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return SamplerConfig(**base)


def configure_rows(sampler: BatchSampler, configs: list[SamplerConfig], batch: int) -> None:
    """Bind ``configs[i]`` to slot i; pad slots ``len(configs)..batch-1`` get greedy."""
    for i in range(batch):
        sampler.configure(i, configs[i] if i < len(configs) else SamplerConfig(mode="greedy"))


def trace_views(sampler: BatchSampler, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(entropy f32, temperature f32, step_start bool)`` ``[batch]`` of the last step."""
    return sampler.last_entropy[:batch], sampler.last_temperature[:batch], sampler.last_start[:batch]
