"""ReSET's step-aware temperature policy: the offline oracle and the batched tensor state.

Policy for one request over its generated tokens t = 0, 1, ... (entropies in nats):

1. ``starts[t]``: a new reasoning step begins before token t -> empty the step buffer.
2. ``H_t``: entropy of ``softmax(raw logits)``.
3. ``H_step`` = mean of the step buffer if it holds >= ``w`` entries, else the mean of the
   sliding window of the request's last ``w`` entropies (spanning steps), else ``H_t``.
4. ``H_bar`` = mean of all previous entropies, or ``H_step`` if there are none.
5. ``tau_t`` = ``H_step`` if ``H_step > H_bar`` else ``tau0``.
6. ``T_t`` = ``T_high`` if ``H_t >= tau_t`` else ``T_low``.
7. Append ``H_t`` to the step buffer, the window and the running mean.

Numerics: every entropy is first snapped to a grid of ``ENTROPY_QUANTUM`` = 2**-24 nats
(below fp32 resolution at 1 nat). A request's entropies are then integers times 2**-24 below
2**4, so every sum of fewer than 2**25 of them is exact in float64: the means (one correctly
rounded division each) and so every decision do not depend on summation order. The oracle
below, the GPU ring buffer and the integrations therefore agree bit for bit, ties included.
"""

from __future__ import annotations

import math
from collections import deque

import torch
from torch import Tensor

ENTROPY_QUANTUM = 2.0**-24


def snap_entropy(h: Tensor) -> Tensor:
    """Entropies (any float dtype) -> float64 on the 2**-24-nat grid (round half to even)."""
    return torch.round(h.to(torch.float64) / ENTROPY_QUANTUM) * ENTROPY_QUANTUM


def check_reset_params(t_low: float, t_high: float, tau0: float, window: int) -> None:
    """Raise ``ValueError`` for parameters the policy cannot use."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an integer >= 1 token, got {window!r}")
    for name, t in (("t_low", t_low), ("t_high", t_high)):
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
            raise ValueError(f"{name} must be a finite temperature > 0, got {t}; use greedy mode for T -> 0")
    # T_low == T_high is allowed: ReSET then samples every token at that one temperature.
    if t_low > t_high:
        raise ValueError(f"t_low must be <= t_high (T_low for confident tokens, T_high for uncertain "
                         f"ones), got t_low {t_low} > t_high {t_high}; lower t_low or raise t_high")
    # tau0 is compared with entropies, which are >= 0: a negative tau0 acts as 0 (T_high wherever
    # the step is no more uncertain than the request so far), most likely a typo.
    if not (isinstance(tau0, (int, float)) and math.isfinite(tau0) and tau0 >= 0):
        raise ValueError(f"tau0 must be a finite entropy >= 0 nats, got {tau0}")


def reset_temperatures(
    entropies: Tensor,
    starts: Tensor,
    *,
    t_low: float,
    t_high: float = 1.0,
    tau0: float,
    window: int = 32,
) -> Tensor:
    """Replay the policy for one request (the oracle for every other implementation).

    ``entropies``: float ``[T]`` in nats (``H_t`` of the raw logits); ``starts``: bool ``[T]``,
    True where a new step begins before token t. Returns float32 ``[T]`` temperatures, each
    exactly ``float32(t_low)`` or ``float32(t_high)``. Runs on the host (one sync), by design.
    """
    check_reset_params(t_low, t_high, tau0, window)
    entropies, starts = torch.as_tensor(entropies), torch.as_tensor(starts)
    if entropies.dim() != 1 or starts.shape != entropies.shape:
        raise ValueError(
            f"entropies and starts must be 1-D of the same length, got {tuple(entropies.shape)} "
            f"and {tuple(starts.shape)}"
        )
    if not bool(torch.isfinite(entropies).all()):
        raise ValueError("entropies contain NaN/inf; drop the tokens whose logits were invalid")
    hs = snap_entropy(entropies.cpu()).tolist()
    out = []
    step_sum, step_n, total, n = 0.0, 0, 0.0, 0
    win: deque[float] = deque(maxlen=window)
    for h, start in zip(hs, starts.cpu().tolist(), strict=True):
        if start:
            step_sum, step_n = 0.0, 0
        if step_n >= window:
            h_step = step_sum / step_n
        elif win:
            h_step = math.fsum(win) / len(win)  # exact sum; == any-order sum on the grid
        else:
            h_step = h
        h_bar = total / n if n else h_step
        tau = h_step if h_step > h_bar else tau0
        out.append(t_high if h >= tau else t_low)
        step_sum, step_n, total, n = step_sum + h, step_n + 1, total + h, n + 1
        win.append(h)
    return torch.tensor(out, dtype=torch.float32)


class ReSETState:
    """Per-slot policy state for up to ``max_batch`` requests, all in device tensors.

    Row i of every tensor belongs to slot i. float64 throughout (counts included: exact below
    2**53) so the step needs no dtype conversions. ``ring`` ``[max_batch, max_window + 1]``
    holds the last ``w`` entropies of each row at ``n mod w`` (entries at >= w stay 0; the
    final column is a write sink for rows that must not change).
    """

    def __init__(self, max_batch: int, max_window: int, device: torch.device | str) -> None:
        if max_batch < 1 or max_window < 1:
            raise ValueError(f"max_batch and max_window must be >= 1, got {max_batch}, {max_window}")
        f64 = dict(dtype=torch.float64, device=device)
        self.max_window = max_window
        self.ring = torch.zeros(max_batch, max_window + 1, **f64)
        self.step_sum = torch.zeros(max_batch, **f64)
        self.step_n = torch.zeros(max_batch, **f64)
        self.total = torch.zeros(max_batch, **f64)
        self.n = torch.zeros(max_batch, **f64)

    def _tensors(self) -> tuple[Tensor, ...]:
        return (self.ring, self.step_sum, self.step_n, self.total, self.n)

    def reset_row(self, row: int) -> None:
        """Forget row ``row`` (a request joins the slot). Device fills only, no sync."""
        for t in self._tensors():
            t[row] = 0

    def copy_row(self, src: int, dst: int) -> None:
        """Row ``dst`` takes row ``src``'s state (``src`` is left unchanged)."""
        for t in self._tensors():
            t[dst] = t[src]

    def row_snapshot(self, row: int) -> tuple[Tensor, ...]:
        """Copies of row ``row``'s state (device tensors, no sync), for :meth:`restore_row`."""
        return tuple(t[row].clone() for t in self._tensors())

    def restore_row(self, row: int, snapshot: tuple[Tensor, ...]) -> None:
        """Row ``row`` takes a state saved by :meth:`row_snapshot`."""
        for t, v in zip(self._tensors(), snapshot, strict=True):
            t[row] = v

    def swap_rows(self, a: int, b: int) -> None:
        """Exchange the states of rows ``a`` and ``b``."""
        for t in self._tensors():
            keep = t[a].clone()
            t[a] = t[b]
            t[b] = keep

    def step(
        self, h: Tensor, start: Tensor, update: Tensor, t_low: Tensor, t_high: Tensor, tau0: Tensor,
        window: Tensor,
    ) -> Tensor:
        """One token for rows ``0..B-1``: temperatures from the state, then append ``h``.

        ``h`` float64 ``[B]`` (snapped, see :func:`snap_entropy`); ``start`` bool ``[B]``;
        ``update`` bool ``[B]`` (False rows keep their state, e.g. invalid logits);
        ``t_low``/``t_high``/``tau0``/``window`` float64 ``[B]``. Returns float64 ``[B]``.
        """
        B = h.shape[0]
        n, total = self.n[:B], self.total[:B]
        step_sum = torch.where(start, 0.0, self.step_sum[:B])
        step_n = torch.where(start, 0.0, self.step_n[:B])
        win_n = torch.minimum(n, window)
        win_mean = self.ring[:B, : self.max_window].sum(dim=-1) / win_n.clamp(min=1.0)
        h_step = torch.where(step_n >= window, step_sum / step_n.clamp(min=1.0),
                             torch.where(win_n > 0, win_mean, h))
        h_bar = torch.where(n > 0, total / n.clamp(min=1.0), h_step)
        tau = torch.where(h_step > h_bar, h_step, tau0)
        temp = torch.where(h >= tau, t_high, t_low)
        # 7. append H_t (rows with update=False keep everything, start flag included)
        pos = torch.where(update, torch.remainder(n, window), float(self.max_window)).long()
        self.ring[:B].scatter_(1, pos[:, None], h[:, None])
        self.step_sum[:B] = torch.where(update, step_sum + h, self.step_sum[:B])
        self.step_n[:B] = torch.where(update, step_n + 1.0, self.step_n[:B])
        self.total[:B] = torch.where(update, total + h, total)
        self.n[:B] = torch.where(update, n + 1.0, n)
        return temp
