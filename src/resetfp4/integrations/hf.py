"""ReSET for HF ``transformers.generate``: a batched ``LogitsProcessor``.

Usage::

    proc = ReSETLogitsProcessor(tokenizer, t_low=0.1, tau0=0.5505)   # Qwen3-8B paper values
    model.generate(**inputs, do_sample=True, temperature=1.0, top_p=0.95, top_k=0,
                   logits_processor=LogitsProcessorList([proc]))

The processor divides each row's raw logits by its ReSET temperature; HF's own top-p warper
runs after it (leave ``temperature=1.0`` so no second temperature is applied). The prompt /
generation split is the input length at the first call (left padding keeps it equal across
rows); step boundaries come from the generated ids only. A call with a shorter input or a
different batch size starts a new generation. ``entropies``/``temperatures``/``starts`` hold
the trace, ``[B, generated]`` each.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers import LogitsProcessor

from resetfp4.sampling.boundary import BoundaryTables
from resetfp4.sampling.config import SamplerConfig
from resetfp4.sampling.pipeline import entropy, row_is_valid
from resetfp4.sampling.policy import ReSETState, check_reset_params, snap_entropy


class ReSETLogitsProcessor(LogitsProcessor):
    """Step-aware temperature per row (see :mod:`resetfp4.sampling.policy`)."""

    def __init__(
        self,
        tokenizer: Any = None,
        *,
        t_low: float,
        tau0: float,
        t_high: float = 1.0,
        window: int = 32,
        boundary: BoundaryTables | None = None,
    ) -> None:
        check_reset_params(t_low, t_high, tau0, window)
        if boundary is None:
            if tokenizer is None:
                raise ValueError("pass the model's tokenizer (or prebuilt BoundaryTables)")
            boundary = BoundaryTables.from_tokenizer(tokenizer)
        elif tokenizer is not None:
            boundary.check_tokenizer(tokenizer)
        self.boundary = boundary
        self.params = (t_low, t_high, tau0, window)
        self.reset()

    @classmethod
    def from_config(cls, cfg: SamplerConfig, tokenizer: Any) -> ReSETLogitsProcessor:
        """Build from a ``SamplerConfig`` in ``reset`` mode."""
        if cfg.mode != "reset":
            raise ValueError(f"ReSETLogitsProcessor needs mode='reset', got {cfg.mode!r}")
        return cls(tokenizer, t_low=cfg.t_low, t_high=cfg.t_high, tau0=cfg.tau0, window=cfg.window)

    def reset(self) -> None:
        """Forget the current generation (the next call starts a new one)."""
        self._prompt_len = self._last_len = -1
        self._last_ends: Tensor | None = None  # first and last column of the last call's ids
        self._state: ReSETState | None = None
        self._trace: list[tuple[Tensor, Tensor, Tensor]] = []

    def _start(self, input_ids: Tensor, scores: Tensor) -> None:
        B, V = scores.shape
        self.reset()
        self._prompt_len = input_ids.shape[1]
        self._tables = self.boundary.padded(V).to(scores.device)
        self._state = ReSETState(B, self.params[3], scores.device)
        self._row_params = [torch.full((B,), float(p), dtype=torch.float64, device=scores.device)
                            for p in self.params]

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        """``input_ids`` int64 ``[B, L]`` (prompt + generated so far); ``scores`` ``[B, V]`` raw logits."""
        B, L = input_ids.shape
        # a new generate() call: first call, a different batch, or ids that did not grow by
        # exactly one token since the last call (HF calls the processor once per new token),
        # or whose first and second-to-last columns are not the last call's first and last
        if (self._state is None or L != self._last_len + 1 or B != self._state.n.shape[0]
                or not torch.equal(input_ids[:, [0, -2]], self._last_ends)):
            self._start(input_ids, scores)
        self._last_len = L
        self._last_ends = input_ids[:, [0, -1]].clone()
        n_gen = torch.full((B,), L - self._prompt_len, device=scores.device)
        prev = input_ids[:, -1]
        prev2 = input_ids[:, -2] if L >= 2 else prev
        start = self._tables.starts(prev, prev2, n_gen)
        x = scores.float()
        valid = row_is_valid(x)
        h = snap_entropy(entropy(x))
        t_low, t_high, tau0, window = self._row_params
        temp = self._state.step(h, start, valid, t_low, t_high, tau0, window)
        self._trace.append((h.float(), temp.float(), start))
        return (x / temp.float()[:, None]).to(scores.dtype)

    def _column(self, i: int) -> Tensor:
        if not self._trace:
            return torch.empty(0, 0)
        return torch.stack([t[i] for t in self._trace], dim=1)

    @property
    def entropies(self) -> Tensor:
        """float32 ``[B, generated]``: ``H_t`` in nats (snapped to the policy's grid)."""
        return self._column(0)

    @property
    def temperatures(self) -> Tensor:
        """float32 ``[B, generated]``: the temperature applied to each generated token."""
        return self._column(1)

    @property
    def starts(self) -> Tensor:
        """bool ``[B, generated]``: a new reasoning step began before the token."""
        return self._column(2)
