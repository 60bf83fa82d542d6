"""``BatchSampler``: per-slot ReSET / fixed / greedy sampling in static device tensors.

One ``step(logits)`` is a fixed sequence of device kernels: no host sync, no allocation that
a CUDA graph cannot replay, so it can be captured together with a model's decode step.
``configure`` (host side, outside any graph) binds a request to a slot.
"""

from __future__ import annotations

import torch
from torch import Tensor

from resetfp4.sampling import pipeline as P
from resetfp4.sampling.boundary import BoundaryTables
from resetfp4.sampling.config import SamplerConfig
from resetfp4.sampling.policy import ReSETState, check_reset_params, snap_entropy

MODE_CODES = {"greedy": 0, "fixed": 1, "reset": 2}
# Temperatures below this count as T -> 0 and sample greedily (vLLM uses the same epsilon).
GREEDY_EPS = 1e-5


class BatchSampler:
    """Samples one token per row for up to ``max_batch`` slots over a ``vocab_size`` vocabulary.

    Row b of ``step``'s logits belongs to slot b. Read-back views (device tensors, rows
    ``0..B-1`` of the last step): ``last_entropy`` (float32, nats; NaN for invalid rows),
    ``last_temperature`` (float32; 0 for greedy rows), ``last_start`` (bool: a new step began
    before the token just sampled), ``last_error`` (bool: that row's logits had NaN/+inf or
    were all -inf; it got token 0 and its policy state was left unchanged) and ``error``
    (bool, sticky until the slot is reconfigured).
    """

    def __init__(
        self,
        max_batch: int,
        vocab_size: int,
        device: torch.device | str,
        boundary: BoundaryTables | None = None,
        max_window: int = 128,
        track_entropy: bool = True,
    ) -> None:
        if max_batch < 1 or vocab_size < 2:
            raise ValueError(f"need max_batch >= 1 and vocab_size >= 2, got {max_batch}, {vocab_size}")
        self.max_batch, self.vocab_size, self.device = max_batch, vocab_size, torch.device(device)
        # False: a fixed/greedy-only sampler that skips H_t and the policy (the benchmark's
        # baseline); configuring a ReSET slot on it is an error, last_entropy stays NaN.
        self.track_entropy = track_entropy
        if boundary is None:
            boundary = BoundaryTables.from_token_texts([""] * vocab_size, fingerprint="none")
        self.boundary = boundary.padded(vocab_size).to(self.device)
        self.state = ReSETState(max_batch, max_window, self.device)

        def buf(dtype: torch.dtype, fill: float = 0) -> Tensor:
            return torch.full((max_batch,), fill, dtype=dtype, device=self.device)

        f64 = torch.float64
        # per-row parameters (set by configure)
        self.mode = buf(torch.long, MODE_CODES["greedy"])
        self.fixed_t, self.t_low, self.t_high = buf(f64, 1.0), buf(f64, 1.0), buf(f64, 1.0)
        self.tau0, self.window = buf(f64), buf(f64, 1.0)
        self.top_p, self.min_p, self.top_k = buf(torch.float32, 1.0), buf(torch.float32), buf(torch.long)
        self.seed, self.counter = buf(torch.long), buf(torch.long)
        # boundary state from this slot's own sampled ids
        self.pending_start, self.last_nl = buf(torch.bool), buf(torch.bool)
        # outputs / read-back views
        self.ids = buf(torch.long)
        self.last_entropy, self.last_temperature = buf(torch.float32), buf(torch.float32)
        self.last_start, self.last_error, self.error = buf(torch.bool), buf(torch.bool), buf(torch.bool)

    def configure(self, slot: int, cfg: SamplerConfig, seed: int | None = None) -> None:
        """Bind a new request to ``slot``: set its parameters and reset all its state.

        Host-side; call outside graph capture. ``seed`` overrides ``cfg.seed``.
        """
        if not 0 <= slot < self.max_batch:
            raise ValueError(f"slot must be in [0, {self.max_batch}), got {slot}")
        if cfg.mode == "reset":
            if not self.track_entropy:
                raise ValueError("this BatchSampler was built with track_entropy=False; ReSET needs it")
            check_reset_params(cfg.t_low, cfg.t_high, cfg.tau0, cfg.window)
            if cfg.window > self.state.max_window:
                raise ValueError(
                    f"window {cfg.window} exceeds this sampler's max_window {self.state.max_window}; "
                    "construct BatchSampler(..., max_window=...) larger"
                )
        seed = cfg.seed if seed is None else seed
        values = {
            self.mode: MODE_CODES[cfg.mode], self.fixed_t: cfg.temperature, self.t_low: cfg.t_low,
            self.t_high: cfg.t_high, self.tau0: cfg.tau0, self.window: cfg.window,
            self.top_p: cfg.top_p, self.min_p: cfg.min_p, self.top_k: cfg.top_k,
            self.seed: seed, self.counter: 0, self.pending_start: False, self.last_nl: False,
            self.error: False, self.last_error: False,
        }
        for t, v in values.items():
            t[slot] = v
        self.state.reset_row(slot)

    def _temperatures(self, h: Tensor, start: Tensor, valid: Tensor, B: int) -> Tensor:
        """float64 ``[B]``: per-row temperature (0 = greedy); advances the ReSET state."""
        t_reset = self.state.step(
            h, start, valid, self.t_low[:B], self.t_high[:B], self.tau0[:B], self.window[:B]
        )
        mode = self.mode[:B]
        t = torch.where(mode == MODE_CODES["reset"], t_reset, self.fixed_t[:B])
        return torch.where(mode == MODE_CODES["greedy"], 0.0, t)

    def step_with_entropy(self, logits: Tensor, h: Tensor) -> Tensor:
        """Like :meth:`step` but with ``H_t`` given (float ``[B]``); tests drive the policy here."""
        x = logits.float()
        B = self._check(x)
        valid = P.row_is_valid(x) & torch.isfinite(h)
        return self._finish(x, snap_entropy(h), valid, B)

    def step(self, logits: Tensor) -> Tensor:
        """Sample one token per row. ``logits`` float32/bf16 ``[B, vocab_size]``, B <= max_batch.

        Returns int64 ``[B]`` (a view of a static buffer, overwritten by the next step).
        """
        x = logits.float()
        B = self._check(x)
        valid = P.row_is_valid(x)
        if not self.track_entropy:
            return self._finish_fixed(x, valid, B)
        return self._finish(x, snap_entropy(P.entropy(x)), valid, B)

    def _check(self, x: Tensor) -> int:
        if x.dim() != 2 or x.shape[1] != self.vocab_size or not 1 <= x.shape[0] <= self.max_batch:
            raise ValueError(
                f"logits must be [B <= {self.max_batch}, {self.vocab_size}], got {tuple(x.shape)}"
            )
        if x.device != self.device and not (x.device.type == self.device.type == "cuda"):
            raise ValueError(f"logits are on {x.device}, the sampler on {self.device}")
        return x.shape[0]

    def _finish_fixed(self, x: Tensor, valid: Tensor, B: int) -> Tensor:
        mode = self.mode[:B]
        temp = torch.where(mode == MODE_CODES["greedy"], 0.0, self.fixed_t[:B])
        nan = torch.full_like(temp, float("nan"))
        return self._finish(x, nan, valid, B, temp)

    def _finish(self, x: Tensor, h: Tensor, valid: Tensor, B: int, temp: Tensor | None = None) -> Tensor:
        start = self.pending_start[:B].clone()  # _observe overwrites pending_start
        if temp is None:
            temp = self._temperatures(h, start, valid, B)
        is_greedy = temp < GREEDY_EPS
        t32 = torch.where(is_greedy, 1.0, temp).float()
        sorted_x, order = P.apply_temperature(x, t32).sort(dim=-1, descending=True)
        keep = P.keep_sorted(sorted_x, self.top_k[:B], self.top_p[:B], self.min_p[:B])
        keys = P.row_keys(self.seed[:B], self.counter[:B])
        scores = P.race_scores(sorted_x, keys, order).masked_fill(~keep, float("-inf"))
        drawn = order.gather(1, scores.argmax(dim=-1, keepdim=True)).squeeze(1)
        ids = torch.where(is_greedy, P.greedy(x), drawn)
        ids = torch.where(valid, ids, 0)
        self._observe(ids, valid, B)
        self.ids[:B] = ids
        self.last_entropy[:B] = torch.where(valid, h, float("nan")).float()
        self.last_temperature[:B] = temp.float()
        self.last_start[:B] = start & valid
        self.last_error[:B] = ~valid
        self.error[:B] |= ~valid
        self.counter[:B] += 1
        return self.ids[:B]

    def _observe(self, ids: Tensor, valid: Tensor, B: int) -> None:
        """Boundary flags for the NEXT token from the ids just sampled (invalid rows frozen)."""
        nl = self.boundary.is_newline[ids]
        start_next = self.boundary.has_double_newline[ids] | (nl & self.last_nl[:B])
        # an invalid row keeps its pending start for its next (valid) token
        self.pending_start[:B] = torch.where(valid, start_next, self.pending_start[:B])
        self.last_nl[:B] = torch.where(valid, nl, self.last_nl[:B])
