"""``load_engine`` and :class:`Engine`: batched generation with EOS / stop strings / streaming.

The host loop replays the captured decode step and reads the sampled ids back only every
:data:`SYNC_EVERY` steps (stop checks, streaming), so the GPU runs ahead in between.

Continuous batching: prompts wait in a queue for one of the batch's slots. A row that
finished (EOS / stop string / its token budget, seen at a read-back) frees its slot; once
at least ``max(1, batch / REFILL_FRACTION)`` slots are free (or every slot, or as many as
prompts still wait), the waiting prompts are prefilled into the freed cache rows together
and decode on from their own position, history column 0 and a freshly configured sampler
slot (their own seed, counter 0). So a row's sampling never depends on its neighbours or on
when it started; on CUDA its logits can still differ in the last bits with the batch
composition (a refill prefill of M rows may take another GEMM path than a static fill), which
flips a sampled token only at a near-tie (exact on CPU fp32, where the tests compare ids).
``Engine.refill = False`` restores static groups (a group decodes until its last row
finishes).
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from resetfp4.engine import linear_glue, sampling_glue
from resetfp4.engine.build import build_model, resolve_device
from resetfp4.engine.decode import DecodeRunner, attn_bucket, batch_bucket
from resetfp4.engine.loader import load_tokenizer, read_source
from resetfp4.engine.model import Transformer
from resetfp4.engine.types import GenerationResult
from resetfp4.sampling import ReSETParams, SamplerConfig

SYNC_EVERY = 8  # decode steps between host read-backs of the sampled ids
MAX_BATCH = 256
DEFAULT_MAX_SEQ_LEN = 2048  # KV cache positions per row (prompt + generation); the CLI's default too
# Refill freed slots once batch / 16 of them are free: each refill is one prefill forward (for
# a few rows about the cost of a decode step) plus host work; waiting that long costs at most
# ~6% of the slots for a few read-backs (measured on CPU tiny models: docs/engine.md).
REFILL_FRACTION = 16
_EOS_TEXTS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")


@dataclass
class _Row:
    """Host-side bookkeeping for one prompt of the running batch."""

    index: int
    prompt: str
    prompt_ids: list[int]
    limit: int  # max tokens this row may generate
    ids: list[int] = field(default_factory=list)
    finish: str | None = None
    streamed: int = 0  # characters of text already streamed
    slot: int = -1  # batch slot (cache row, sampler row) while decoding
    start: int = 0  # decode steps run before the one that sampled this row's first token
    read: int = 0  # generated tokens read back so far
    no_stop: int = 0  # the first no_stop ids are known to hold no stop string


@dataclass
class _Run:
    """One ``generate`` call: its inputs, results in prompt order, and counters."""

    rows: list[_Row]
    configs: list[SamplerConfig]
    stop: list[str]
    trace: bool
    stream: Callable[[int, str], None] | None
    bar: Any
    results: list[Any] = field(default_factory=list)
    batch: int = 0  # slots (a batch bucket)
    steps: int = 0  # decode steps run
    prefills: int = 0  # refill rounds (the first fill included)
    setup_s: float = 0.0  # CUDA-graph capture (and compilation) for this call's shapes

    def __post_init__(self) -> None:
        self.results = [None] * len(self.rows)


class Engine:
    """A loaded model ready to generate. Build it with :func:`load_engine`."""

    def __init__(
        self,
        model: Transformer,
        tokenizer: Any,
        *,
        model_name: str,
        precision: str,
        max_batch: int,
        max_seq_len: int,
        reset_params: ReSETParams | None = None,
        use_graphs: bool = True,
        compile: bool | None = None,
        refill: bool = True,
        large_m_cache: bool | None = None,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.model_name, self.precision = model_name, precision
        self.max_batch, self.max_seq_len = max_batch, max_seq_len
        self.reset_params = reset_params
        self.device = model.model.embed_tokens.weight.device
        model.setup_cache(max_batch, max_seq_len)
        sampler = sampling_glue.make_sampler(max_batch, model.args.vocab_size, self.device, tokenizer)
        if compile is None:  # default: compiled decode on CUDA (falls back to eager, logged once)
            compile = self.device.type == "cuda"
        self.runner = DecodeRunner(model, sampler, use_graphs, compile=compile)
        self.large_m_bytes = self._cache_large_m(large_m_cache)
        self.eos_ids = self._eos_ids()
        self.refill = refill  # continuous batching (False: static groups of max_batch)
        self.last_stats: dict[str, float] = {}
        self.model_path: str | None = None

    def _cache_large_m(self, want: bool | None) -> int:
        """Keep the NVFP4 weights also dequantized (activation dtype) for inputs of more than
        16 rows: prefill and decode at batch > 16 then run cuBLAS on the cached copy instead
        of dequantizing every weight on every call (same values, same results). ``None``
        (default): on for CUDA when ``max_batch > 16`` and the copies take at most half of the
        free GPU memory. Returns the bytes added."""
        linears = [m for m in self.model.decode_linears() if m.qweight is not None]
        if not linears or self.device.type != "cuda":
            return 0
        if want is None:
            need = sum(m.out_features * m.in_features for m in linears) * self.model.dtype.itemsize
            free = torch.cuda.mem_get_info(self.device)[0]
            want = self.max_batch > linear_glue.SMALL_M and need <= free // 2
        if not want:
            return 0
        return sum(linear_glue.cache_large_m(m.qweight, self.model.dtype) for m in linears)

    def _eos_ids(self) -> set[int]:
        ids = set(self.model.args.eos_token_ids)
        tok = self.tokenizer
        if getattr(tok, "eos_token_id", None) is not None:
            ids.add(int(tok.eos_token_id))
        vocab = tok.get_vocab() if tok is not None else {}
        ids.update(vocab[t] for t in _EOS_TEXTS if t in vocab)
        return ids

    def default_sampling(self, **overrides: Any) -> SamplerConfig:
        """The reset sampler with this model's calibrated parameters when known."""
        return sampling_glue.reset_config(self.reset_params, **overrides)

    @property
    def has_chat_template(self) -> bool:
        """Whether the tokenizer has a chat template; without one ``encode`` uses the raw text."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode(self, prompt: str, chat: bool) -> list[int]:
        """Token ids: the chat template (user turn + generation prompt) or, with
        ``chat=False`` or a tokenizer without a template, exactly the HF tokenizer's default
        encoding of the raw text."""
        tok = self.tokenizer
        if chat and self.has_chat_template:
            out = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=True, add_generation_prompt=True
            )
            return list(out["input_ids"] if hasattr(out, "keys") else out)
        return list(tok(prompt)["input_ids"])

    def generate(
        self,
        prompts: list[str],
        sampling: SamplerConfig | list[SamplerConfig],
        max_new_tokens: int,
        *,
        chat: bool = True,
        stop: list[str] | None = None,
        trace: bool = False,
        progress: bool = False,
        stream: Callable[[int, str], None] | None = None,
    ) -> list[GenerationResult]:
        """Generate for every prompt on ``max_batch`` slots (continuous batching, see the module doc).

        ``sampling``: one config for all (prompt ``i`` then uses ``seed + i``), or one per
        prompt (seeds used as given). ``stream(i, text)`` receives
        new text of prompt ``i`` as it is read back. ``trace`` fills the per-token
        entropies / temperatures / step starts. Token ids include a final EOS token when
        one ended the row; the text never includes it, nor a matched stop string.
        Every row may generate exactly ``max_new_tokens``: a prompt that leaves less room in
        the cache (``len(prompt) + max_new_tokens > max_seq_len``) is a ``ValueError``.
        Results come in prompt order and do not depend on ``max_batch`` or on the other prompts
        (up to the floating-point rounding of batched GEMMs on CUDA, see the module docstring).
        """
        if isinstance(sampling, SamplerConfig):
            # One shared config: prompt i draws with seed + i, so repeated prompts differ and
            # results never depend on max_batch or batch position.
            sampling = [dataclasses.replace(sampling, seed=sampling.seed + i) for i in range(len(prompts))]
        if len(sampling) != len(prompts):
            raise ValueError(f"got {len(sampling)} sampler configs for {len(prompts)} prompts")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if stop and any(not isinstance(s, str) or not s for s in stop):
            raise ValueError(f"stop strings must be non-empty strings, got {stop!r} (an empty one "
                             "would end every row at once); drop it")
        encoded = [self.encode(p, chat) for p in prompts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise ValueError(f"prompt {i} encodes to no tokens; give a non-empty prompt")
            if len(ids) + max_new_tokens > self.max_seq_len:
                raise ValueError(
                    f"prompt {i} is {len(ids)} tokens + max_new_tokens {max_new_tokens} = "
                    f"{len(ids) + max_new_tokens}, but the KV cache holds {self.max_seq_len} positions; "
                    f"raise max_seq_len (--max-seq-len >= {len(ids) + max_new_tokens}), lower "
                    "max_new_tokens or shorten the prompt"
                )
        # Checked above: every row fits prompt + max_new_tokens, whatever its neighbours.
        rows = [_Row(i, prompts[i], ids, max_new_tokens) for i, ids in enumerate(encoded)]
        bar = _progress_bar(len(prompts)) if progress and prompts else None
        t0 = time.perf_counter()
        run = _Run(rows, sampling, stop or [], trace, stream, bar)
        if rows:
            self._run(run)
        if bar is not None:
            bar.close()
        dt = time.perf_counter() - t0
        n_tokens = sum(len(r.token_ids) for r in run.results)
        steps = run.steps
        gen = dt - run.setup_s  # prefill + decode + read-back, without the one-time capture
        self.last_stats = {
            "seconds": dt,
            "setup_s": run.setup_s,
            "tokens": n_tokens,
            "tokens_per_s": n_tokens / gen if gen > 0 else 0.0,
            "decode_steps": steps,
            "slots": run.batch,
            "prefills": run.prefills,
            # generated tokens kept / (decode steps x slots): the share of row-steps doing work
            "occupancy": n_tokens / (steps * run.batch) if steps else 0.0,
        }
        return run.results

    def _run(self, run: _Run) -> None:
        """Decode ``run.rows`` on ``run.batch`` slots, refilling freed slots from the queue."""
        runner, seq = self.runner, self.max_seq_len
        rows = run.rows
        run.batch = batch = batch_bucket(min(len(rows), self.max_batch), self.max_batch)
        lens = [len(r.prompt_ids) for r in rows]
        # A step attends up to (prompt + tokens so far) positions of its furthest active row:
        # from the shortest prompt alone to the longest prompt + limit - 1. Captured up front,
        # since capturing writes the cache and the sampler state of every slot.
        reach = range(min(lens), max(lens) + rows[0].limit)
        t0 = time.perf_counter()
        runner.capture(batch, sorted({attn_bucket(n, seq) for n in reach}))
        run.setup_s = time.perf_counter() - t0
        st = runner.state(batch)
        sampling_glue.configure_rows(runner.sampler, [], batch)  # idle slots: greedy
        runner.refill(st, list(range(batch)), [[0]] * batch)  # idle slots: token 0 at position 0
        slots: list[_Row | None] = [None] * batch
        waiting = deque(rows)
        need = max(1, batch // REFILL_FRACTION)
        done = read_at = 0  # decode steps run; the step count at the last read-back
        while True:
            free = [s for s, r in enumerate(slots) if r is None]
            if waiting and (len(free) == batch or (self.refill and len(free) >= min(need, len(waiting)))):
                self._fill(run, st, slots, free, waiting, done)
            active = [r for r in slots if r is not None]
            if not active:
                break
            while True:  # until a read-back is due: SYNC_EVERY steps, or a row at its budget
                furthest = max(len(r.prompt_ids) + done - r.start for r in active)
                runner.decode(st, batch, attn_bucket(furthest, seq))
                done += 1
                if done - read_at >= SYNC_EVERY or any(done - r.start >= r.limit for r in active):
                    break
            read_at = done
            for r in self._read_back(st, active, done, run):
                slots[r.slot] = None
                if run.bar is not None:
                    run.bar.update(1)
        run.steps = done

    def _fill(
        self, run: _Run, st: Any, slots: list[_Row | None], free: list[int], waiting: deque, done: int
    ) -> None:
        """Bind the next waiting prompts to the ``free`` slots: sampler rows configured (own
        seed, counter 0, fresh ReSET state), one batched prefill; they start at step ``done``."""
        new = [waiting.popleft() for _ in free[: len(waiting)]]
        for s, r in zip(free, new, strict=False):
            self.runner.sampler.configure(s, run.configs[r.index])
            r.slot, r.start, slots[s] = s, done, r
        self.runner.refill(st, free[: len(new)], [r.prompt_ids for r in new])
        run.prefills += 1

    def _read_back(self, st: Any, active: list[_Row], done: int, run: _Run) -> list[_Row]:
        """Read every active row's unread ids (one gather), check them, and return the rows
        that finished, their results (and traces) stored in ``run.results``."""
        dev = st.hist_ids.device
        counts = [done - r.start - r.read for r in active]
        last = st.hist_ids.shape[1] - 1
        cols = [[min(r.read + j, last) for j in range(max(counts))] for r in active]
        slots = torch.tensor([r.slot for r in active], device=dev)
        got = st.hist_ids[slots[:, None], torch.tensor(cols, device=dev)].tolist()
        for r, c in zip(active, counts, strict=True):
            r.read += c
        self._check_rows(active, [g[:c] for g, c in zip(got, counts, strict=True)], run.stop, run.stream)
        finished = [r for r in active if r.finish is not None]
        traces: list[list[list[Any]]] = [[[], [], []] for _ in finished]
        if run.trace and finished:
            idx = torch.tensor([r.slot for r in finished], device=dev)
            n = max(len(r.ids) for r in finished)
            hist = [h[idx, :n].tolist() for h in (st.hist_ent, st.hist_temp, st.hist_start)]
            traces = [[h[j][: len(r.ids)] for h in hist] for j, r in enumerate(finished)]
        for r, tr in zip(finished, traces, strict=True):
            run.results[r.index] = self._result(r, run.stop, tr)
        return finished

    def _check_rows(
        self,
        rows: list[_Row],
        new: list[list[int]],
        stop: list[str],
        stream: Callable[[int, str], None] | None,
    ) -> bool:
        """Append newly read ids, detect EOS / stop / length; True when every row finished."""
        for r, ids in zip(rows, new, strict=True):
            if r.finish is not None:
                continue
            for t in ids:
                r.ids.append(t)
                if t in self.eos_ids:
                    r.finish = "eos"
                    break
                if len(r.ids) >= r.limit:
                    r.finish = "length"
                    break
            if stop:
                # Checked after EOS too: a stop string completed before the EOS token (same
                # read-back chunk) wins, and the ids are cut there like the text.
                cut = _stop_cut(self.tokenizer, r.ids, stop, r.no_stop)
                if cut is None:
                    r.no_stop = len(r.ids)
                elif r.finish != "eos" or cut < len(r.ids):
                    r.ids, r.finish = r.ids[:cut], "stop"
            if stream is not None:
                text = self._text(r.ids, stop)
                if r.finish is None:
                    # hold back a tail that may be the start of a stop string: it is not shown
                    # until the next tokens complete the match (then it is cut) or rule it out
                    text = text[: len(text) - _stop_prefix_len(text, stop)]
                if (not text.endswith("\ufffd") or r.finish is not None) and len(text) > r.streamed:
                    stream(r.index, text[r.streamed :])
                    r.streamed = len(text)
        return all(r.finish is not None for r in rows)

    def _text(self, ids: list[int], stop: list[str]) -> str:
        text = self.tokenizer.decode([t for t in ids if t not in self.eos_ids], skip_special_tokens=True)
        for s in stop:
            k = text.find(s)
            if k >= 0:
                text = text[:k]
        return text

    def _result(self, r: _Row, stop: list[str], trace: list[list[Any]]) -> GenerationResult:
        """``trace``: the row's ``[entropies, temperatures, step_starts]`` (empty lists if off)."""
        ent, temp, start = trace
        return GenerationResult(
            prompt=r.prompt,
            token_ids=list(r.ids),
            text=self._text(r.ids, stop),
            finish_reason=r.finish or "length",
            prompt_tokens=len(r.prompt_ids),
            entropies=list(ent),
            temperatures=list(temp),
            step_starts=[bool(b) for b in start],
        )


def _stop_prefix_len(text: str, stop: list[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def _stop_cut(tokenizer: Any, ids: list[int], stop: list[str], known: int = 0) -> int | None:
    """Smallest number of tokens whose text contains a stop string, or ``None``. ``known``:
    ``ids[:known]`` is already known to hold none (an earlier read-back), so the search starts
    after it: one decode per new token, not per token of the whole row."""
    if not any(s in tokenizer.decode(ids, skip_special_tokens=True) for s in stop):
        return None
    for k in range(max(1, known + 1), len(ids) + 1):
        if any(s in tokenizer.decode(ids[:k], skip_special_tokens=True) for s in stop):
            return k
    return None


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="prompt", desc="generate")


def model_name(model: str) -> str:
    """The engine's name for ``model`` (a path or an alias): its last path component, which is
    also the key of the known calibrated ReSET parameters."""
    return model.rstrip("/").rsplit("/", 1)[-1]


def load_engine(
    model: str,
    precision: str,
    device: str | None = None,
    max_batch: int = 1,
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
    lm_head: str = "bf16",
    compile: bool | None = None,
    large_m_cache: bool | None = None,
) -> Engine:
    """Load ``model`` (alias, GGUF file, HF folder or ModelOpt NVFP4 folder) at ``precision``.

    ``precision``: ``fp32`` | ``bf16`` | ``nvfp4-w4a16`` | ``nvfp4-w4a4`` (NVFP4 for the
    block linears; dense sources are quantized on the fly from bf16). ``device``: ``None``
    picks CUDA when present. ``lm_head="nvfp4"`` also quantizes the output head.
    ``compile`` (default ``None`` = on for CUDA, off for CPU) runs the decode forward
    through ``torch.compile`` (fused kernels per step; one compile per batch/KV bucket,
    a few seconds each; on failure the step runs eagerly, announced once on stderr).
    ``large_m_cache``: see :meth:`Engine._cache_large_m` (``None`` = automatic).
    """
    if not 1 <= max_batch <= MAX_BATCH:
        raise ValueError(
            f"max_batch (--batch-size) must be in [1, {MAX_BATCH}], got {max_batch}; "
            f"use a batch size between 1 and {MAX_BATCH}"
        )
    if max_seq_len < 2:
        raise ValueError(f"max_seq_len must be >= 2, got {max_seq_len}")
    dev = resolve_device(device)
    src = read_source(model)
    if max_seq_len > src.args.max_position:
        raise ValueError(
            f"max_seq_len {max_seq_len} is past the {src.args.max_position} positions this model was "
            f"built for (max_position_embeddings); RoPE beyond them is untrained and the output "
            f"degrades without an error: use --max-seq-len <= {src.args.max_position}"
        )
    tok = load_tokenizer(src)
    net = build_model(src, precision, dev, lm_head=lm_head, tokenizer=tok)
    path = str(src.path)
    del src
    name = model_name(model)
    eng = Engine(
        net,
        tok,
        model_name=name,
        precision=precision,
        max_batch=max_batch,
        max_seq_len=max_seq_len,
        reset_params=sampling_glue.known_reset_params(name),
        compile=compile,
        large_m_cache=large_m_cache,
    )
    eng.model_path = path  # the resolved file/folder (a GGUF for aliases)
    return eng
