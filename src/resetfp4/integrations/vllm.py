"""ReSET as a vLLM v1 batch-level logits processor.

vLLM's interface (``vllm.v1.sample.logits_processor``, v0.10+): the engine calls
``update_state(batch_update)`` once per step (``None`` when the persistent batch did not
change; otherwise process ``removed``, then ``added``, then ``moved``), then
``apply(logits [num_reqs, V])`` on raw fp32 logits. ``AddedRequest`` is
``(index, SamplingParams, prompt_tok_ids | None, output_tok_ids)`` where ``output_tok_ids`` is
the request's live list of generated ids.

vLLM (a 336 MB CUDA-only wheel pinned to its own torch) does not install on the CPU test
machine, so when ``import vllm`` fails this module defines a faithful minimal stand-in of
exactly those names; the tests run against the stand-in. Enable ReSET per request with
``SamplingParams(temperature=1.0, top_p=0.95, extra_args={"reset": {"t_low": 0.1,
"tau0": 0.5505}})``; rows without it pass through unchanged. The policy state lives in
device tensors and nothing calls ``.item()``; step starts are computed on the host from the
last two ids of each live output list (vLLM already holds them there) and shipped in one
non-blocking copy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

import torch
from torch import Tensor

from resetfp4.engine.log import warn_once
from resetfp4.sampling.boundary import BoundaryTables
from resetfp4.sampling.pipeline import entropy, row_is_valid
from resetfp4.sampling.policy import ReSETState, check_reset_params, snap_entropy

try:  # the real interface when vLLM is installed
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

    VLLM_AVAILABLE = True
except ImportError:  # minimal stand-in with the same names, fields and order semantics
    VLLM_AVAILABLE = False

    class MoveDirectionality(Enum):  # type: ignore[no-redef]
        UNIDIRECTIONAL = auto()  # i1 -> i2 (i1 becomes empty)
        SWAP = auto()  # i1 <-> i2

    @dataclass
    class SamplingParams:  # type: ignore[no-redef]
        """The fields of ``vllm.SamplingParams`` this processor reads."""

        temperature: float = 1.0
        top_p: float = 1.0
        extra_args: dict[str, Any] | None = field(default=None)

    @dataclass(frozen=True)
    class BatchUpdate:  # type: ignore[no-redef]
        batch_size: int
        removed: Sequence[int]
        added: Sequence[tuple[int, SamplingParams, list[int] | None, list[int]]]
        moved: Sequence[tuple[int, int, MoveDirectionality]]

    class LogitsProcessor(ABC):  # type: ignore[no-redef]
        @classmethod
        def validate_params(cls, sampling_params: SamplingParams) -> None:
            return None

        @abstractmethod
        def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None: ...

        @abstractmethod
        def apply(self, logits: Tensor) -> Tensor: ...

        @abstractmethod
        def is_argmax_invariant(self) -> bool: ...

        @abstractmethod
        def update_state(self, batch_update: BatchUpdate | None) -> None: ...


PARAM_KEYS = ("t_low", "t_high", "tau0", "window")


def reset_args(params: SamplingParams) -> tuple[float, float, float, int] | None:
    """``(t_low, t_high, tau0, window)`` from ``params.extra_args["reset"]``, or None."""
    cfg = (params.extra_args or {}).get("reset")
    if cfg is None:
        return None
    if not isinstance(cfg, dict):
        raise ValueError(f"extra_args['reset'] must be a dict with t_low and tau0, got {cfg!r}")
    unknown = set(cfg) - set(PARAM_KEYS)
    if unknown or "t_low" not in cfg or "tau0" not in cfg:
        raise ValueError(f"extra_args['reset'] needs t_low and tau0 (optional t_high, window); got {cfg}")
    window = cfg.get("window", 32)
    if isinstance(window, bool) or not isinstance(window, int):
        raise ValueError(f"extra_args['reset']['window'] must be an integer, got {window!r}")
    try:
        out = (float(cfg["t_low"]), float(cfg.get("t_high", 1.0)), float(cfg["tau0"]), window)
    except (TypeError, ValueError):
        raise ValueError(f"extra_args['reset'] t_low, t_high and tau0 must be numbers; got {cfg}") from None
    check_reset_params(*out)
    return out


class ReSETLogitsProcessor(LogitsProcessor):
    """Per-request ReSET temperatures for vLLM v1 (see the module docstring)."""

    boundary: BoundaryTables | None = None  # set by :func:`with_boundary`, else from the config
    max_window = 128

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        args = reset_args(sampling_params)
        if args is not None and args[3] > cls.max_window:
            # checked here, per request: update_state runs inside vLLM's engine core
            raise ValueError(f"extra_args['reset']['window'] = {args[3]} exceeds this processor's "
                             f"max_window {cls.max_window}; use with_boundary(..., max_window=...)")
        if args is not None and sampling_params.temperature != 1.0:
            raise ValueError(
                f"ReSET chooses each token's temperature itself, and vLLM divides the logits by "
                f"SamplingParams.temperature again after this processor: set temperature=1.0 (got "
                f"{sampling_params.temperature})")

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        tables = self.boundary
        if tables is None:
            from transformers import AutoTokenizer

            mc = vllm_config.model_config  # the tokenizer vLLM itself loads: same revision and code
            tok = AutoTokenizer.from_pretrained(
                mc.tokenizer, revision=getattr(mc, "tokenizer_revision", None),
                trust_remote_code=bool(getattr(mc, "trust_remote_code", False)))
            tables = BoundaryTables.from_tokenizer(tok)
        n = vllm_config.scheduler_config.max_num_seqs
        self.device, self.pin = torch.device(device), is_pin_memory
        self.tables_cpu = tables
        self.state = ReSETState(n, self.max_window, self.device)
        # the state each row had before its last step: a step whose sample vLLM threw away
        # (chunked prefill, a resumed request's recompute) is undone from it
        self.prev = ReSETState(n, self.max_window, self.device)
        self.params: list[tuple[float, float, float, int] | None] = [None] * n
        self.outputs: list[list[int] | None] = [None] * n
        # len(output) when row i's state last took a token (-1: none yet), and the states of
        # requests vLLM took out of the batch unfinished (preempted or not scheduled this step),
        # keyed by their live output list, restored when they come back (at most 4n kept)
        self.seen: list[int] = [-1] * n
        self.parked: OrderedDict[int, tuple[list[int], tuple, tuple, int]] = OrderedDict()
        self.max_parked = 4 * n
        self.batch_size = 0
        self._any_undo = False  # some row of the last _host_rows call must undo its last step
        self.last_temperature = torch.ones(0, device=self.device)
        self._nl, self._dnl = tables.is_newline.tolist(), tables.has_double_newline.tolist()

    def needs_output_token_ids(self) -> bool:
        # Step boundaries come from the last generated ids: newer vLLM (async scheduling)
        # fills in the real ids instead of -1 placeholders only for processors that say so.
        return True

    def is_argmax_invariant(self) -> bool:
        # Dividing by T > 0 keeps the argmax, but H_t must see the raw logits, which vLLM only
        # guarantees to processors that are *not* argmax-invariant (applied before temperature).
        return False

    def _park(self, i: int) -> None:
        """Take row i's request out: keep its state if it may come back (preemption, or a step
        it was not scheduled in) with the same output list (a finished request's entry just
        ages out), and clear the row."""
        out = self.outputs[i]
        if self.params[i] is not None and out and self.seen[i] >= 0:
            self.parked[id(out)] = (out, self.state.row_snapshot(i), self.prev.row_snapshot(i),
                                    self.seen[i])
            self.parked.move_to_end(id(out))
            while len(self.parked) > self.max_parked:
                self.parked.popitem(last=False)
        self.params[i], self.outputs[i], self.seen[i] = None, None, -1

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for i in batch_update.removed:
            self._park(i)
        for i, params, _prompt, out in batch_update.added:
            # vLLM may put a new request into a slot whose old occupant it never listed in
            # `removed` (it reuses freed indices): that occupant leaves here
            self._park(i)
            p = reset_args(params)
            if p is not None and p[3] > self.max_window:
                raise ValueError(f"window {p[3]} exceeds max_window {self.max_window}; "
                                 "use with_boundary(..., max_window=...)")
            self.params[i], self.outputs[i] = p, out
            back = self.parked.pop(id(out), None)
            if back is not None and back[0] is out:  # the same request, resumed
                self.state.restore_row(i, back[1])
                self.prev.restore_row(i, back[2])
                self.seen[i] = back[3]
            else:
                self.state.reset_row(i)
                self.prev.reset_row(i)
                self.seen[i] = -1
        for a, b, how in batch_update.moved:
            if how == MoveDirectionality.SWAP:
                self.params[a], self.params[b] = self.params[b], self.params[a]
                self.outputs[a], self.outputs[b] = self.outputs[b], self.outputs[a]
                self.seen[a], self.seen[b] = self.seen[b], self.seen[a]
                self.state.swap_rows(a, b)
                self.prev.swap_rows(a, b)
            else:
                self._park(b)  # a one-way move may also land on an occupant vLLM did not remove
                self.params[b], self.outputs[b], self.seen[b] = self.params[a], self.outputs[a], self.seen[a]
                self.params[a], self.outputs[a], self.seen[a] = None, None, -1
                self.state.copy_row(a, b)
                self.prev.copy_row(a, b)
        self.batch_size = batch_update.batch_size

    def _flag(self, table: list[bool], tok: int) -> bool:
        """``table[tok]``; ids past the tokenizer (the model's padded vocabulary) are no newline,
        and a -1 placeholder (async scheduling without the real ids) cannot be one either."""
        if tok < 0:
            warn_once("the ReSET vLLM processor saw placeholder output ids (-1): this vLLM's async "
                      "scheduling hides the sampled ids, so step boundaries cannot be seen; run vLLM "
                      "without async scheduling")
            return False
        return tok < len(table) and table[tok]

    def _sync_row(self, i: int, n_out: int) -> bool:
        """Before row i takes the token at output position ``n_out``; returns whether its last
        step must be undone: a row whose output did not grow since its state last took a token
        had that sample thrown away (vLLM samples, then discards, on rows still in chunked
        prefill, and on a resumed request's recompute chunks)."""
        undo = self.seen[i] == n_out
        if self.seen[i] >= 0 and n_out > self.seen[i] + 1:
            warn_once("the ReSET vLLM processor saw a request gain several tokens in one step "
                      "(speculative decoding?): only the sampled position's entropy is counted")
        self.seen[i] = n_out
        return undo

    def _host_rows(self, B: int) -> Tensor:
        """float64 ``[7, B]``: enabled, start, t_low, t_high, tau0, window, undo (one H2D copy)."""
        rows = []
        self._any_undo = False
        for i in range(B):
            p, out = self.params[i], self.outputs[i] or []
            if not p:
                rows.append((0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0))
                continue
            undo = self._sync_row(i, len(out))
            self._any_undo |= undo
            dnl = len(out) >= 1 and self._flag(self._dnl, out[-1])
            two = len(out) >= 2 and self._flag(self._nl, out[-1]) and self._flag(self._nl, out[-2])
            rows.append((1.0, float(dnl or two), *p, float(undo)))
        host = torch.tensor(rows, dtype=torch.float64).T.contiguous()
        return host.pin_memory() if self.pin else host

    def apply(self, logits: Tensor) -> Tensor:
        B = logits.shape[0]
        if not any(self.params[:B]):
            return logits
        rows = self._host_rows(B).to(self.device, non_blocking=True)
        enabled, start, undo = rows[0] > 0, rows[1] > 0, rows[6] > 0
        # undo the last step of rows whose sample was thrown away (the host knows whether any
        # was), then keep every row's state as it is before this step (device ops, no sync)
        for t, p in zip(self.state._tensors(), self.prev._tensors(), strict=True):
            if self._any_undo:
                t[:B] = torch.where(undo if t.dim() == 1 else undo[:, None], p[:B], t[:B])
            p[:B] = t[:B]
        x = logits.float()
        h = snap_entropy(entropy(x))
        update = enabled & row_is_valid(x)
        temp = self.state.step(h, start, update, rows[2], rows[3], rows[4], rows[5])
        temp = torch.where(enabled, temp, 1.0).to(x.dtype)
        self.last_temperature = temp  # float32 [B] read-back for tracing / tests
        return (x / temp[:, None]).to(logits.dtype)


def with_boundary(tables: BoundaryTables, max_window: int = 128) -> type[ReSETLogitsProcessor]:
    """A processor class bound to prebuilt tables (pass it in ``LLM(logits_processors=[...])``)."""
    return type("BoundReSETLogitsProcessor", (ReSETLogitsProcessor,),
                {"boundary": tables, "max_window": max_window})
