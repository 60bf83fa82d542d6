"""``load_engine`` and :class:`Engine`: batched generation with EOS / stop strings / streaming.

The host loop replays the captured decode step and reads the sampled ids back only every
:data:`SYNC_EVERY` steps (stop checks, streaming), so the GPU runs ahead in between.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from resetfp4.engine import sampling_glue
from resetfp4.engine.build import build_model, resolve_device
from resetfp4.engine.decode import DecodeRunner, attn_bucket, batch_bucket
from resetfp4.engine.loader import load_tokenizer, read_source
from resetfp4.engine.model import Transformer
from resetfp4.engine.types import GenerationResult
from resetfp4.sampling import ReSETParams, SamplerConfig

SYNC_EVERY = 8  # decode steps between host read-backs of the sampled ids
MAX_BATCH = 256
DEFAULT_MAX_SEQ_LEN = 2048  # KV cache positions per row (prompt + generation); the CLI's default too
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
        self.eos_ids = self._eos_ids()
        self.last_stats: dict[str, float] = {}
        self.model_path: str | None = None

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

    def encode(self, prompt: str, chat: bool) -> list[int]:
        """Token ids: the chat template (user turn + generation prompt) or, with
        ``chat=False``, exactly the HF tokenizer's default encoding of the raw text."""
        tok = self.tokenizer
        if chat and getattr(tok, "chat_template", None):
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
        """Generate for every prompt, in groups of ``max_batch``.

        ``sampling``: one config for all (prompt ``i`` then uses ``seed + i``), or one per
        prompt (seeds used as given). ``stream(i, text)`` receives
        new text of prompt ``i`` as it is read back. ``trace`` fills the per-token
        entropies / temperatures / step starts. Token ids include a final EOS token when
        one ended the row; the text never includes it, nor a matched stop string.
        Every row may generate exactly ``max_new_tokens``: a prompt that leaves less room in
        the cache (``len(prompt) + max_new_tokens > max_seq_len``) is a ``ValueError``.
        """
        if isinstance(sampling, SamplerConfig):
            # One shared config: prompt i draws with seed + i, so repeated prompts differ and
            # results never depend on max_batch or batch position.
            sampling = [dataclasses.replace(sampling, seed=sampling.seed + i) for i in range(len(prompts))]
        if len(sampling) != len(prompts):
            raise ValueError(f"got {len(sampling)} sampler configs for {len(prompts)} prompts")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        encoded = [self.encode(p, chat) for p in prompts]
        for i, ids in enumerate(encoded):
            if len(ids) + max_new_tokens > self.max_seq_len:
                raise ValueError(
                    f"prompt {i} is {len(ids)} tokens + max_new_tokens {max_new_tokens} = "
                    f"{len(ids) + max_new_tokens}, but the KV cache holds {self.max_seq_len} positions; "
                    f"raise max_seq_len (--max-seq-len >= {len(ids) + max_new_tokens}), lower "
                    "max_new_tokens or shorten the prompt"
                )
        results: list[GenerationResult] = []
        bar = _progress_bar(len(prompts)) if progress else None
        t0, n_tokens = time.perf_counter(), 0
        for g in range(0, len(prompts), self.max_batch):
            group = encoded[g : g + self.max_batch]
            # Checked above: every row fits prompt + max_new_tokens, whatever its neighbours.
            rows = [_Row(g + j, prompts[g + j], ids, max_new_tokens) for j, ids in enumerate(group)]
            results += self._run_group(rows, sampling[g : g + len(rows)], stop or [], trace, stream)
            n_tokens += sum(len(r.token_ids) for r in results[g:])
            if bar is not None:
                bar.update(len(rows))
        if bar is not None:
            bar.close()
        dt = time.perf_counter() - t0
        self.last_stats = {
            "seconds": dt,
            "tokens": n_tokens,
            "tokens_per_s": n_tokens / dt if dt > 0 else 0.0,
        }
        return results

    def _run_group(
        self,
        rows: list[_Row],
        configs: list[SamplerConfig],
        stop: list[str],
        trace: bool,
        stream: Callable[[int, str], None] | None,
    ) -> list[GenerationResult]:
        runner = self.runner
        batch = batch_bucket(len(rows), self.max_batch)
        longest = max(len(r.prompt_ids) for r in rows)
        steps = rows[0].limit
        buckets = sorted({attn_bucket(longest + s, self.max_seq_len) for s in range(1, steps)})
        runner.capture(batch, buckets)
        sampling_glue.configure_rows(runner.sampler, configs, batch)
        st = runner.prefill([r.prompt_ids for r in rows], batch)
        done, read = 1, 0
        while True:
            if done - read >= SYNC_EVERY or done >= steps:
                new = st.hist_ids[: len(rows), read:done].tolist()
                read = done
                if self._check_rows(rows, new, stop, stream) or done >= steps:
                    break
            runner.decode(st, batch, attn_bucket(longest + done, self.max_seq_len))
            done += 1
        return [self._result(r, st, stop, trace) for r in rows]

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
                cut = _stop_cut(self.tokenizer, r.ids, stop)
                if cut is not None and (r.finish != "eos" or cut < len(r.ids)):
                    r.ids, r.finish = r.ids[:cut], "stop"
            if stream is not None:
                text = self._text(r.ids, stop)
                if not text.endswith("\ufffd") or r.finish is not None:
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

    def _result(self, r: _Row, st: Any, stop: list[str], trace: bool) -> GenerationResult:
        n = len(r.ids)
        res = GenerationResult(
            prompt=r.prompt,
            token_ids=list(r.ids),
            text=self._text(r.ids, stop),
            finish_reason=r.finish or "length",
            prompt_tokens=len(r.prompt_ids),
        )
        if trace:
            i = r.index % self.max_batch
            res.entropies = st.hist_ent[i, :n].tolist()
            res.temperatures = st.hist_temp[i, :n].tolist()
            res.step_starts = [bool(b) for b in st.hist_start[i, :n].tolist()]
        return res


def _stop_cut(tokenizer: Any, ids: list[int], stop: list[str]) -> int | None:
    """Smallest number of tokens whose text contains a stop string, or ``None``."""
    if not any(s in tokenizer.decode(ids, skip_special_tokens=True) for s in stop):
        return None
    for k in range(1, len(ids) + 1):
        if any(s in tokenizer.decode(ids[:k], skip_special_tokens=True) for s in stop):
            return k
    return None


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="prompt", desc="generate")


def load_engine(
    model: str,
    precision: str,
    device: str | None = None,
    max_batch: int = 1,
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
    lm_head: str = "bf16",
    compile: bool | None = None,
) -> Engine:
    """Load ``model`` (alias, GGUF file, HF folder or ModelOpt NVFP4 folder) at ``precision``.

    ``precision``: ``fp32`` | ``bf16`` | ``nvfp4-w4a16`` | ``nvfp4-w4a4`` (NVFP4 for the
    block linears; dense sources are quantized on the fly from bf16). ``device``: ``None``
    picks CUDA when present. ``lm_head="nvfp4"`` also quantizes the output head.
    ``compile`` (default ``None`` = on for CUDA, off for CPU) runs the decode forward
    through ``torch.compile`` (fused kernels per step; one compile per batch/KV bucket,
    a few seconds each; on failure the step runs eagerly, announced once on stderr).
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
    tok = load_tokenizer(src)
    net = build_model(src, precision, dev, lm_head=lm_head, tokenizer=tok)
    path = str(src.path)
    del src
    name = model.rstrip("/").rsplit("/", 1)[-1]
    eng = Engine(
        net,
        tok,
        model_name=name,
        precision=precision,
        max_batch=max_batch,
        max_seq_len=max_seq_len,
        reset_params=sampling_glue.known_reset_params(name),
        compile=compile,
    )
    eng.model_path = path  # the resolved file/folder (a GGUF for aliases)
    return eng
