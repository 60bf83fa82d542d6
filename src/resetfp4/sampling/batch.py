"""``BatchSampler``: per-slot ReSET / fixed / greedy sampling in static device tensors.

One ``step(logits)`` is a fixed sequence of device kernels: no host sync, no allocation that
a CUDA graph cannot replay, so it can be captured together with a model's decode step.
``configure`` (host side, outside any graph) binds a request to a slot.

Three implementations of the same step (``impl``):

- ``"triton"`` (default on CUDA when Triton is installed): a few launches, see
  :mod:`resetfp4.sampling.kernels`; top-p over at most ``candidates`` largest logits
  (``select="hist"``: a top-n set, n <= K, from a logit histogram; ``"topk"``: ``torch.topk``;
  ``"auto"``: hist up to batch ``HIST_MAX_BATCH``, else topk).
- ``"torch"`` (default elsewhere): the same candidate algorithm in plain torch
  (:mod:`resetfp4.sampling.candidates`), the reference for the kernels.
- ``"sort"``: the full-vocabulary sort of :mod:`resetfp4.sampling.pipeline`; exact for every
  distribution, slow at large vocabularies. The candidate paths equal it whenever the nucleus
  lies inside the candidates, and count the tokens where it did not in ``truncated``.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from resetfp4.sampling import candidates as C
from resetfp4.sampling import pipeline as P
from resetfp4.sampling.boundary import BoundaryTables
from resetfp4.sampling.config import SamplerConfig
from resetfp4.sampling.policy import ReSETState, check_reset_params, snap_entropy

MODE_CODES = {"greedy": 0, "fixed": 1, "reset": 2}
# Temperatures below this count as T -> 0 and sample greedily (vLLM uses the same epsilon).
GREEDY_EPS = 1e-5
IMPLS = ("auto", "triton", "torch", "sort")
# Top-p candidates per row: a top-0.95 nucleus of a reasoning model's next-token distribution
# rarely holds more than a few hundred tokens; rows where it does are counted in `truncated`.
DEFAULT_CANDIDATES = 1024


SELECTS = ("auto", "hist", "topk")
# "auto" takes the histogram select up to this batch (the largest batch bucket): graph-replayed
# step at vocab 151,936 on an H100 (dev/engine/sampler_select_bench.py, 256 bins), hist vs
# torch.topk: batch 1 26.6 vs 78.6 µs, 8 39.9 vs 90.2, 64 176 vs 239, 256 556 vs 767.
HIST_MAX_BATCH = 256


def pick_select(select: str, batch: int) -> str:
    """The Triton path's candidate selection for a step of ``batch`` rows."""
    if select == "auto":
        return "hist" if batch <= HIST_MAX_BATCH else "topk"
    return select


def triton_available() -> bool:
    """True when the ``triton`` package is importable (the fast path also needs CUDA)."""
    return importlib.util.find_spec("triton") is not None


def resolve_impl(impl: str, device: torch.device) -> str:
    """``"auto"`` -> ``"triton"`` on CUDA with Triton installed, else ``"torch"``."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if impl == "triton" and not triton_available():
        raise ValueError("impl='triton' needs the triton package (CUDA); use impl='torch'")
    return impl


class BatchSampler:
    """Samples one token per row for up to ``max_batch`` slots over a ``vocab_size`` vocabulary.

    Row b of ``step``'s logits belongs to slot b. Read-back views (device tensors, rows
    ``0..B-1`` of the last step): ``last_entropy`` (float32, nats; NaN for invalid rows),
    ``last_temperature`` (float32; 0 for greedy rows), ``last_start`` (bool: a new step began
    before the token just sampled), ``last_error`` (bool: that row's logits had NaN/+inf or
    were all -inf; it got token 0 and its policy state was left unchanged) and ``error``
    (bool, sticky until the slot is reconfigured). ``truncated`` (int64 per slot, reset by
    ``configure``): tokens of this request drawn from a nucleus cut at the ``candidates``
    largest logits (0 for ``impl="sort"``; see :mod:`resetfp4.sampling.candidates`).
    """

    def __init__(
        self,
        max_batch: int,
        vocab_size: int,
        device: torch.device | str,
        boundary: BoundaryTables | None = None,
        max_window: int = 128,
        track_entropy: bool = True,
        impl: str = "auto",
        candidates: int = DEFAULT_CANDIDATES,
        select: str = "auto",
    ) -> None:
        if max_batch < 1 or vocab_size < 2:
            raise ValueError(f"need max_batch >= 1 and vocab_size >= 2, got {max_batch}, {vocab_size}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1 top-p candidates per row, got {candidates}")
        self.max_batch, self.vocab_size, self.device = max_batch, vocab_size, torch.device(device)
        self.impl = resolve_impl(impl, self.device)
        self.candidates = min(candidates, vocab_size)
        if select not in SELECTS:
            raise ValueError(f"select must be one of {SELECTS}, got {select!r}")
        # Triton path only: candidates by a logit histogram (no sort) or by torch.topk
        self.select = select
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
        # the two temperatures a row may get (ReSET: t_low/t_high; fixed: T twice; greedy: 1)
        self.temp_a, self.temp_b = buf(torch.float32, 1.0), buf(torch.float32, 1.0)
        self.truncated = buf(torch.long)
        # boundary state from this slot's own sampled ids
        self.pending_start, self.last_nl = buf(torch.bool), buf(torch.bool)
        # outputs / read-back views
        self.ids = buf(torch.long)
        self.last_entropy, self.last_temperature = buf(torch.float32), buf(torch.float32)
        self.last_start, self.last_error, self.error = buf(torch.bool), buf(torch.bool), buf(torch.bool)
        self.fast = self._fast_buffers() if self.impl == "triton" else {}

    def _fast_buffers(self) -> dict[str, object]:
        """Scratch of the Triton path: per-slice partials and merged per-row statistics."""
        from resetfp4.sampling import kernels

        shape, dev = (self.max_batch, kernels.MAX_SLICES), self.device
        f32 = dict(dtype=torch.float32, device=dev)
        out: dict[str, object] = {k: torch.zeros(shape, **f32) for k in ("pm", "pza", "pzb", "pz1", "ps1")}
        out["pam"] = torch.zeros(shape, dtype=torch.int32, device=dev)
        out["pbad"] = torch.zeros(shape, dtype=torch.int32, device=dev)
        for k in ("m", "z", "teff"):
            out[k] = torch.zeros(self.max_batch, **f32)
        out["am"] = torch.zeros(self.max_batch, dtype=torch.long, device=dev)
        out["valid"] = torch.zeros(self.max_batch, dtype=torch.bool, device=dev)
        # bin counts + candidate count per row; unordered candidates of the histogram select
        out["hist"] = torch.zeros(self.max_batch, kernels.HIST_BINS_N + 1, dtype=torch.int32, device=dev)
        out["cval"] = torch.zeros(self.max_batch, self.candidates, **f32)
        out["cidx"] = torch.zeros(self.max_batch, self.candidates, dtype=torch.long, device=dev)
        cuda = dev.type == "cuda"
        # SM count sizes the stats grid (4 stands in under the CPU interpreter)
        out["n_sm"] = torch.cuda.get_device_properties(dev).multi_processor_count if cuda else 4
        return out

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
                    f"use --window <= {self.state.max_window}, or (Python) build "
                    "BatchSampler(..., max_window=...) larger"
                )
        seed = cfg.seed if seed is None else seed
        pair = {"reset": (cfg.t_low, cfg.t_high), "fixed": (cfg.temperature,) * 2}
        t_a, t_b = pair.get(cfg.mode, (1.0, 1.0))
        values = {
            self.temp_a: t_a, self.temp_b: t_b, self.truncated: 0,
            self.mode: MODE_CODES[cfg.mode], self.fixed_t: cfg.temperature, self.t_low: cfg.t_low,
            # a fixed / greedy row never uses the policy's window; 1 keeps its ring-buffer index
            # in range whatever that config holds (the state still advances every row)
            self.t_high: cfg.t_high, self.tau0: cfg.tau0,
            self.window: cfg.window if cfg.mode == "reset" else 1,
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
        """Like :meth:`step` but with ``H_t`` given (float ``[B]``); tests drive the policy here.

        Always runs the torch code (``impl="sort"`` keeps its full sort)."""
        x = logits.float()
        B = self._check(x)
        valid = P.row_is_valid(x) & torch.isfinite(h)
        return self._finish(x, snap_entropy(h), valid, B)

    def step(self, logits: Tensor) -> Tensor:
        """Sample one token per row. ``logits`` float32/bf16 ``[B, vocab_size]``, B <= max_batch.

        Returns int64 ``[B]`` (a view of a static buffer, overwritten by the next step).
        """
        B = self._check(logits)
        if self.impl == "triton":
            return self._step_triton(logits, B)
        x = logits.float()
        valid = P.row_is_valid(x)
        if not self.track_entropy:
            return self._finish_fixed(x, valid, B)
        return self._finish(x, snap_entropy(P.entropy(x)), valid, B)

    def _step_triton(self, logits: Tensor, B: int) -> Tensor:
        from resetfp4.sampling import kernels

        x = logits if logits.dtype in (torch.float32, torch.bfloat16, torch.float16) else logits.float()
        x = x if x.stride(-1) == 1 else x.contiguous()
        if pick_select(self.select, B) == "topk":
            vals, idx = P.topk_by_id(x, self.candidates)  # sorted: value descending, then id
            kernels.launch_step(self, x, B, vals, idx)
        else:
            kernels.launch_step(self, x, B)
        return self.ids[:B]

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
        keys = P.row_keys(self.seed[:B], self.counter[:B])
        draw = self._draw_sorted if self.impl == "sort" else self._draw_candidates
        drawn, exact = draw(x, t32, keys, B)
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
        self.truncated[:B] += (valid & ~is_greedy & ~exact).long()
        return self.ids[:B]

    def _draw_sorted(self, x: Tensor, t32: Tensor, keys: Tensor, B: int) -> tuple[Tensor, Tensor]:
        """Full-sort nucleus (exact): ``(drawn int64 [B], exact bool [B] all True)``."""
        sorted_x, order = P.apply_temperature(x, t32).sort(dim=-1, descending=True, stable=True)
        keep = P.keep_sorted(sorted_x, self.top_k[:B], self.top_p[:B], self.min_p[:B])
        scores = P.race_scores(sorted_x, keys, order).masked_fill(~keep, float("-inf"))
        drawn = order.gather(1, scores.argmax(dim=-1, keepdim=True)).squeeze(1)
        return drawn, torch.ones_like(drawn, dtype=torch.bool)

    def _draw_candidates(self, x: Tensor, t32: Tensor, keys: Tensor, B: int) -> tuple[Tensor, Tensor]:
        """Top-K candidate nucleus (see :mod:`resetfp4.sampling.candidates`)."""
        m = x.amax(dim=-1)
        z = C.partition(x, m, t32)
        vals, idx = P.topk_by_id(x, self.candidates)
        keep, tempered, exact = C.candidate_keep(
            vals, m, z, t32, self.vocab_size, self.top_k[:B], self.top_p[:B], self.min_p[:B]
        )
        return C.draw(vals, idx, keys, keep, tempered), exact

    def _observe(self, ids: Tensor, valid: Tensor, B: int) -> None:
        """Boundary flags for the NEXT token from the ids just sampled (invalid rows frozen)."""
        nl = self.boundary.is_newline[ids]
        start_next = self.boundary.has_double_newline[ids] | (nl & self.last_nl[:B])
        # an invalid row keeps its pending start for its next (valid) token
        self.pending_start[:B] = torch.where(valid, start_next, self.pending_start[:B])
        self.last_nl[:B] = torch.where(valid, nl, self.last_nl[:B])
