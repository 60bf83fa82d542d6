"""Static-shape prefill and decode steps, with one CUDA graph per (batch bucket, KV length bucket).

A decode step is ``logits = model(tok, pos)`` -> ``ids = sampler.step(logits)`` -> write
``ids`` (and the sampler's entropy / temperature / step-start) into per-row history
buffers at each row's device-side history index ``hidx``, then ``pos += 1``, ``hidx += 1``
(both clamped to the last cache position, so an idle slot of a continuous batch can keep
stepping forever without leaving its cache row). Every tensor it touches is preallocated
per batch bucket, so the step has no host sync and no allocation outside the graph's
private pool; the host reads the history only every few steps.

Continuous batching (:meth:`DecodeRunner.refill`): a freed slot gets a new prompt by
prefilling all but its last token into the slot's cache row and setting ``tok`` = the last
prompt token, ``pos`` = its position, ``hidx`` = 0 (host-side writes between replays, same
buffers). The next decode step then samples the row's first token with the slot's fresh
sampler state, exactly as a one-prompt run does.

KV length buckets: attention reads cache positions ``[0, attn_len)`` only, where
``attn_len`` is the smallest of 256, 512, 1024, ... (capped at ``max_seq_len``) that covers
the furthest position; without it every step would read the whole cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from resetfp4.engine.log import warn_once
from resetfp4.engine.model import Linear, Transformer
from resetfp4.engine.sampling_glue import trace_views, triton_available

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MIN_ATTN_BUCKET = 256
PREFILL_TOKENS = 16384  # rows per prefill chunk are chosen so a chunk holds at most this many tokens


def batch_bucket(n: int, max_batch: int) -> int:
    """Smallest bucket >= ``n`` (capped at ``max_batch``)."""
    return min(next((b for b in BATCH_BUCKETS if b >= n), n), max_batch) if n <= max_batch else n


def attn_bucket(n_positions: int, max_seq_len: int) -> int:
    b = MIN_ATTN_BUCKET
    while b < n_positions:
        b *= 2
    return min(b, max_seq_len)


@dataclass
class DecodeState:
    """Static per-bucket buffers. ``hist_*`` are ``[B, max_seq_len]``; row b's k-th generated
    token (counted from the row's own start) is at column k."""

    tok: Tensor  # int64 [B]: the last sampled token (input of the next step)
    pos: Tensor  # int64 [B]: its position
    step: Tensor  # int64 [1]: steps (prefill's sample included) since the last prefill / capture
    hist_ids: Tensor
    hist_ent: Tensor
    hist_temp: Tensor
    hist_start: Tensor
    hidx: Tensor  # int64 [B]: history column of each row's next token

    @classmethod
    def allocate(cls, batch: int, max_seq_len: int, device: torch.device) -> DecodeState:
        def z(dtype: torch.dtype) -> Tensor:
            return torch.zeros((batch, max_seq_len), dtype=dtype, device=device)

        return cls(
            torch.zeros(batch, dtype=torch.long, device=device),
            torch.zeros(batch, dtype=torch.long, device=device),
            torch.zeros(1, dtype=torch.long, device=device),
            z(torch.long),
            z(torch.float32),
            z(torch.float32),
            z(torch.bool),
            torch.zeros(batch, dtype=torch.long, device=device),
        )


def graph_safe(model: Transformer) -> bool:
    """False when some NVFP4 linear would run the reference W4A4 path (it syncs the host)."""
    return not any(
        isinstance(m, Linear) and m.qweight is not None and m.qweight.kernel is None and m.act == "fp4"
        for m in model.modules()
    )


def _compile_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that mean "compiling failed" (not a runtime error of the step).

    Dynamo's base class covers BackendCompilerFailed / InductorError / Unsupported /
    TorchRuntimeError (fake-tensor tracing); Inductor's C++ compile and lowering errors
    do not derive from it. Looked up by name: the set differs between torch versions.
    """
    import torch._dynamo.exc as dynamo_exc
    import torch._inductor.exc as inductor_exc

    names = ("OperatorIssue", "CppCompileError", "InvalidCxxCompiler", "CppWrapperCodegenError")
    extra = tuple(c for n in names if isinstance(c := getattr(inductor_exc, n, None), type))
    return (dynamo_exc.TorchDynamoException, *extra)


def _block_call(
    blk: torch.nn.Module, h: Tensor, d: Tensor, pos: Tensor, cos: Tensor, sin: Tensor, mask: Tensor,
    attn_len: int,
) -> tuple[Tensor, Tensor]:
    return blk.forward_deferred(h, d, pos, cos, sin, mask, attn_len)


def _prologue_call(model: Transformer, tokens: Tensor, pos: Tensor, attn_len: int):
    x, cos, sin, mask = model.prologue(tokens, pos, attn_len)
    return x, torch.zeros_like(x), cos, sin, mask  # x + 0 == x: the first block's deferred add


def _epilogue_call(model: Transformer, h: Tensor, d: Tensor) -> Tensor:
    return model.epilogue_deferred(h, d)


class CompiledForward:
    """The decode forward with ``torch.compile`` applied per region ("regional compilation").

    The prologue (embedding, RoPE gather, mask), one transformer block and the epilogue
    (final norm, lm_head) are compiled separately with static shapes. Every layer runs the
    same compiled block (its weights and KV cache are graph inputs, not constants), so
    compile time does not grow with depth; one specialisation per (batch, KV bucket).
    Inside a block Inductor fuses the norms, SiLU-mul and residuals into a few kernels
    around the GEMMs / attention (on CUDA the attention kernel also prepares the heads and
    writes the KV cache: ``attention.decode_attention_fused``; with NVFP4 linears the
    Triton producers of ``act_quant`` replace Inductor's norm and SiLU-mul kernels).
    Blocks chain through ``Block.forward_deferred``: a block's last residual add runs in
    the next block (fused into its first RMSNorm kernel), the last one in the epilogue.
    """

    def __init__(self, model: Transformer):
        import torch._dynamo as dynamo

        # One cache entry per (model, batch bucket, KV bucket): raise dynamo's limits.
        for name, value in (
            ("recompile_limit", 256),
            ("cache_size_limit", 256),
            ("accumulated_recompile_limit", 4096),
            ("accumulated_cache_size_limit", 4096),
        ):
            if hasattr(dynamo.config, name):
                setattr(dynamo.config, name, max(value, getattr(dynamo.config, name)))
        self.model = model
        self.prologue = torch.compile(_prologue_call, dynamic=False)
        self.block = torch.compile(_block_call, dynamic=False)
        self.epilogue = torch.compile(_epilogue_call, dynamic=False)

    def __call__(self, tokens: Tensor, pos: Tensor, attn_len: int) -> Tensor:
        h, d, cos, sin, mask = self.prologue(self.model, tokens, pos, attn_len)
        for blk in self.model.model.layers:
            h, d = self.block(blk, h, d, pos, cos, sin, mask, attn_len)
        return self.epilogue(self.model, h, d)


def _compiled(model: Transformer) -> CompiledForward:
    """The :class:`CompiledForward` of ``model`` (runners of several batch buckets share it).

    Stored on the model itself (a plain attribute, not a submodule), so it lives and dies
    with the model: a global cache keyed by the model would keep it alive through the
    compiled functions' references to it.
    """
    cf = model.__dict__.get("_resetfp4_compiled")
    if cf is None:
        cf = CompiledForward(model)
        model.__dict__["_resetfp4_compiled"] = cf
    return cf


class DecodeRunner:
    """Runs prefill and decode steps for one model + sampler; owns the graphs.

    On CUDA the model's q/k/v and gate/up linears are fused first (one GEMM / NVFP4 kernel
    each, see :meth:`Transformer.fuse_projections`). ``compile=True`` runs the decode
    forward through :class:`CompiledForward`; if compiling fails (a dynamo / Inductor
    compile error) the step runs eagerly (announced once on stderr); any other error of the
    step (out of memory, a shape bug) propagates.
    """

    def __init__(self, model: Transformer, sampler, use_graphs: bool, compile: bool = False):
        self.model, self.sampler = model, sampler
        self.device = model.model.embed_tokens.weight.device
        if self.device.type == "cuda":
            model.fuse_projections()
        self.compiled = _compiled(model) if compile else None
        self.use_graphs = use_graphs and self.device.type == "cuda" and graph_safe(model)
        self.states: dict[int, DecodeState] = {}
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.pool = None
        # RESETFP4_FAST_RECORD=0 keeps the torch bookkeeping on CUDA (an A/B switch)
        self.fast_record = (self.device.type == "cuda" and triton_available()
                            and os.environ.get("RESETFP4_FAST_RECORD", "1") != "0")

    def forward(self, tokens: Tensor, pos: Tensor, attn_len: int) -> Tensor:
        """Decode logits fp32 ``[B, 1, V]`` (compiled when enabled and working)."""
        if self.compiled is not None:
            try:
                return self.compiled(tokens, pos, attn_len)
            except _compile_errors() as e:  # they surface at the first call of a shape; others propagate
                warn_once(
                    f"torch.compile of the decode step failed ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200] if str(e) else ''}); running it eagerly"
                )
                self.compiled = None
        return self.model(tokens, pos, attn_len)

    def state(self, batch: int) -> DecodeState:
        if batch not in self.states:
            self.states[batch] = DecodeState.allocate(batch, self.model.max_seq_len, self.device)
        return self.states[batch]

    def _record(self, st: DecodeState, ids: Tensor, batch: int, advance_pos: bool = False) -> None:
        """Store the step's token and trace at each row's ``hidx``, set ``tok``, count the
        step and advance ``hidx`` (and ``pos`` with ``advance_pos``), both clamped: one
        Triton launch on CUDA (:mod:`resetfp4.engine.record_kernels`), else
        :meth:`_record_torch`. Clamped: an idle slot keeps stepping; its history past
        ``max_seq_len`` is never read and it writes its (ignored) keys at the last position."""
        ent, temp, start = trace_views(self.sampler, batch)
        if self.fast_record:
            from resetfp4.engine import record_kernels

            record_kernels.launch_record(
                ids, ent, temp, start, st.tok, st.pos, st.hidx, st.step, st.hist_ids, st.hist_ent,
                st.hist_temp, st.hist_start, self.model.max_seq_len - 1, advance_pos)
            return
        self._record_torch(st, ids, ent, temp, start, advance_pos)

    def _record_torch(self, st: DecodeState, ids: Tensor, ent: Tensor, temp: Tensor, start: Tensor,
                      advance_pos: bool) -> None:
        """The reference of :meth:`_record` (ten small torch kernels on CUDA)."""
        if advance_pos:
            st.pos.add_(1).clamp_(max=self.model.max_seq_len - 1)
        idx = st.hidx.unsqueeze(1)
        st.hist_ids.scatter_(1, idx, ids.unsqueeze(1))
        st.hist_ent.scatter_(1, idx, ent.unsqueeze(1))
        st.hist_temp.scatter_(1, idx, temp.unsqueeze(1))
        st.hist_start.scatter_(1, idx, start.unsqueeze(1))
        st.tok.copy_(ids)
        st.step.add_(1)
        st.hidx.add_(1).clamp_(max=st.hist_ids.shape[1] - 1)

    def step_eager(self, st: DecodeState, batch: int, attn_len: int) -> None:
        """One decode step without graph replay (what a graph captures; for profiling)."""
        self._step(st, batch, attn_len)

    def _step(self, st: DecodeState, batch: int, attn_len: int) -> None:
        logits = self.forward(st.tok.unsqueeze(1), st.pos.unsqueeze(1), attn_len)[:, 0]
        ids = self.sampler.step(logits)
        self._record(st, ids, batch, advance_pos=True)

    @torch.no_grad()
    def prefill(self, prompts: list[list[int]], batch: int) -> DecodeState:
        """Right-padded batched prefill of ``prompts`` (<= ``batch``; missing rows get one
        pad token) and the first sampled token. Returns the bucket's state, step = 1."""
        st = self.state(batch)
        rows = prompts + [[0]] * (batch - len(prompts))
        lens = torch.tensor([len(r) for r in rows], dtype=torch.long)
        width = int(lens.max())
        toks = torch.zeros((batch, width), dtype=torch.long)
        for i, r in enumerate(rows):
            toks[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        toks, lens_d = toks.to(self.device), lens.to(self.device)
        pos = torch.arange(width, device=self.device).expand(batch, width)
        chunk = max(1, PREFILL_TOKENS // width)
        logits = torch.cat(
            [
                self.model(
                    toks[r0 : r0 + chunk], pos[r0 : r0 + chunk], width, lens_d[r0 : r0 + chunk] - 1, row0=r0
                )
                for r0 in range(0, batch, chunk)
            ]
        )
        ids = self.sampler.step(logits)
        st.step.zero_()
        st.hidx.zero_()
        st.pos.copy_(lens_d)
        self._record(st, ids, batch)
        return st

    @torch.no_grad()
    def refill(self, st: DecodeState, slots: list[int], prompts: list[list[int]]) -> None:
        """Bind ``prompts[i]`` (token ids, >= 1 each) to slot ``slots[i]`` of ``st``.

        Prefills ``prompt[:-1]`` into the slots' cache rows (batched, right-padded, rows
        sorted by length, chunks of <= PREFILL_TOKENS tokens), then sets the slots' ``tok``
        to the last prompt token, ``pos`` to its position and ``hidx`` to 0: the next decode
        step samples each refilled row's first token into history column 0. Other slots are
        untouched. Configure the slots' sampler rows before that step. Host-side only (never
        during graph capture); the decode graphs stay valid (same buffers).
        """
        if len(slots) != len(prompts) or len(set(slots)) != len(slots):
            raise ValueError(f"need one prompt per distinct slot, got slots {slots} for {len(prompts)}")
        if any(not p for p in prompts):
            raise ValueError("every prompt needs at least one token")
        heads = sorted(((len(p) - 1, s, p[:-1]) for s, p in zip(slots, prompts, strict=True) if len(p) > 1))
        i = 0
        while i < len(heads):
            j = i + 1  # grow the chunk while its padded size stays <= PREFILL_TOKENS
            while j < len(heads) and (j - i + 1) * heads[j][0] <= PREFILL_TOKENS:
                j += 1
            part, width = heads[i:j], heads[j - 1][0]  # sorted: the last row is the widest
            toks = torch.zeros((len(part), width), dtype=torch.long)
            for k, (_, _, h) in enumerate(part):
                toks[k, : len(h)] = torch.tensor(h, dtype=torch.long)
            pos = torch.arange(width, device=self.device).expand(len(part), width)
            rows = torch.tensor([s for _, s, _ in part], dtype=torch.long, device=self.device)
            self.model.fill_cache(toks.to(self.device), pos, width, rows=rows)
            i = j
        idx = torch.tensor(slots, dtype=torch.long, device=self.device)
        st.tok[idx] = torch.tensor([p[-1] for p in prompts], dtype=torch.long, device=self.device)
        st.pos[idx] = torch.tensor([len(p) - 1 for p in prompts], dtype=torch.long, device=self.device)
        st.hidx[idx] = 0

    @torch.no_grad()
    def decode(self, st: DecodeState, batch: int, attn_len: int) -> None:
        """One decode step (graph replay on CUDA)."""
        if not self.use_graphs:
            self._step(st, batch, attn_len)
            return
        key = (batch, attn_len)
        if key not in self.graphs:
            raise RuntimeError(f"no CUDA graph captured for batch {batch}, attention length {attn_len}")
        self.graphs[key].replay()

    @torch.no_grad()
    def capture(self, batch: int, attn_lens: list[int]) -> None:
        """Capture graphs for ``batch`` at each ``attn_len`` not yet captured.

        Must run before the sampler is configured and before prefill: warm-up steps write
        KV entries and advance sampler state, which ``configure`` and prefill then reset.
        """
        if not self.use_graphs:
            return
        st = self.state(batch)
        todo = [a for a in attn_lens if (batch, a) not in self.graphs]
        if not todo:
            return
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        for a in todo:
            st.pos.zero_()
            st.step.zero_()
            st.hidx.zero_()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):  # warm-up: lazy inits, cuBLAS workspaces
                    self._step(st, batch, a)
            torch.cuda.current_stream().wait_stream(s)
            st.pos.zero_()
            st.step.zero_()
            st.hidx.zero_()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=self.pool):
                self._step(st, batch, a)
            self.graphs[(batch, a)] = g
        torch.cuda.synchronize()
