"""Quantize a model's linears to NVFP4, calibrate W4A4 activation scales, save ModelOpt folders.

Weights: every transformer-block linear (q/k/v/o, gate/up/down) is quantized from its
**bf16** weight (the "reference precision" model: GGUF dequantized to bf16) with
:func:`resetfp4.format.nvfp4.quantize`. Global scale (``weight_scale_2``) = ``amax/2688``
per tensor, except that the linears that read the same input and that the decode step runs
as one fused GEMV (q/k/v, gate/up: :data:`resetfp4.engine.model.FUSED`) share one global
scale, the amax over the group. NVIDIA ModelOpt's export does the same for these groups
(so that vLLM can fuse them); block scales stay per 16 elements, so the only effect on a
part is a finer or coarser place of its block scales in the E4M3 range.
Embeddings, norms, biases and (by default) ``lm_head`` stay bf16, as in ModelOpt exports.

W4A4 ``input_scale`` (static activation global scale) = ``amax(|x|) / 2688`` where the
amax is taken over every input row each linear sees while the bf16 model runs the
:data:`CALIBRATION_PROMPTS` below (chat template applied when the tokenizer has one). This is
ModelOpt's "max" calibration, on a tiny, fixed, offline set: deterministic, and the same for
``resetfp4 quantize`` and on-the-fly loading, so both give bit-identical models. It does not
cover every activation inference sees (each prompt is one user turn, without the generation
prompt or the model's own tokens): larger inputs are clipped to the calibrated range
(docs/engine.md has the measurement); ``--calib-data`` takes prompts of the served traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from resetfp4.engine.model import FUSED, Linear, Transformer
from resetfp4.fileutil import check_new_folder_path, make_folder
from resetfp4.format.nvfp4 import NVFP4Tensor, compute_global_scale, quantize
from resetfp4.format.spec import BLOCK_SIZE

# A small fixed calibration set: step-by-step math, code and prose, the kinds of text the
# engine generates. Documented here so the checkpoint can say exactly what it saw.
CALIBRATION_PROMPTS: tuple[str, ...] = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Let's think step by step.\n\n"
    "In April she sold 48 clips. In May she sold 48 / 2 = 24 clips.\n\nAltogether 48 + 24 = 72.",
    "Find all real x such that x^2 - 5x + 6 = 0. Put the final answer in \\boxed{}.\n\n"
    "Factor: (x - 2)(x - 3) = 0, so x = 2 or x = 3. The answer is \\boxed{2, 3}.",
    "Write a Python function that returns the n-th Fibonacci number iteratively.\n\n"
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "The mitochondrion is the powerhouse of the cell. Explain, in two short paragraphs, how ATP is made.",
    "A rectangle has a perimeter of 30 cm and its length is twice its width. What is its area?",
    "Translate to French: 'The weather is nice today, so we will walk to the market.'",
    "Prove that the sum of two even integers is even.\n\nLet a = 2m and b = 2n. Then a + b = 2(m + n).",
    "List three prime numbers greater than 100 and explain how you checked each one.",
)
CALIBRATION_MAX_TOKENS = 256  # each prompt is truncated to this many tokens


CALIBRATION_FILE_KEYS = ("text", "prompt", "question")  # a .jsonl record's prompt field


def read_calibration_file(path: str | Path, limit: int | None = None) -> tuple[list[str], dict[str, Any]]:
    """Prompts for W4A4 calibration from a user file, and what to record about them.

    ``.jsonl``: one JSON object per line with a ``text``, ``prompt`` or ``question`` string
    (the first present), or a bare JSON string; ``.txt``: one prompt per non-empty line.
    ``limit``: use only the first ``limit`` prompts. Returns ``(prompts, info)`` with
    ``info = {"set": file name, "sha256": of the file, "prompts": count}``.
    """
    import json

    from resetfp4.fileutil import sha256_file, what_is

    f = Path(path)
    if not f.exists() and not f.is_symlink():
        raise FileNotFoundError(f"--calib-data {f}: no such file; give a .jsonl (one {{\"text\": ...}} "
                                "per line) or a .txt (one prompt per line)")
    if not f.is_file():
        raise ValueError(f"--calib-data {f} is {what_is(f)}, not a file; give a .jsonl or .txt file")
    if f.suffix not in (".jsonl", ".txt"):
        raise ValueError(f"--calib-data {f}: unknown format {f.suffix or '(no suffix)'!r}; give a .jsonl "
                         "(one JSON object with a \"text\", \"prompt\" or \"question\" per line) or a .txt "
                         "(one prompt per line)")
    if limit is not None and limit < 1:
        raise ValueError(f"--calib-samples {limit}: need at least 1")
    try:
        lines = f.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"--calib-data {f} is not UTF-8 text ({e})") from None
    prompts: list[str] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if f.suffix == ".txt":
            prompts.append(line)
        else:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"--calib-data {f}:{i}: not JSON ({e.msg}); each line must be one "
                                 "JSON object") from None
            if isinstance(rec, dict):
                key = next((k for k in CALIBRATION_FILE_KEYS if k in rec), None)
                if key is None or not isinstance(rec[key], str):
                    raise ValueError(f"--calib-data {f}:{i}: needs a string field among "
                                     f"{list(CALIBRATION_FILE_KEYS)}; the record has {sorted(rec)[:6]}")
                rec = rec[key]
            if not isinstance(rec, str):
                raise ValueError(f"--calib-data {f}:{i}: a {type(rec).__name__}; each line must be an "
                                 "object with a text field, or a string")
            if rec.strip():
                prompts.append(rec)
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise ValueError(f"--calib-data {f} holds no prompt (empty lines and empty texts are skipped)")
    return prompts, {"set": f.name, "sha256": sha256_file(f), "prompts": len(prompts)}


def calibration_batches(tokenizer: Any, prompts: Iterable[str] = CALIBRATION_PROMPTS,
                        max_tokens: int = CALIBRATION_MAX_TOKENS) -> list[list[int]]:
    """Token ids of each calibration prompt (chat template when available, else raw),
    each cut to ``max_tokens``."""
    out = []
    for p in prompts:
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=True, add_generation_prompt=False
            )
            if hasattr(ids, "get") and not isinstance(ids, list):
                ids = ids["input_ids"]
        else:
            ids = tokenizer(p)["input_ids"]
        out.append(list(ids)[:max_tokens])
    return out


def linear_modules(model: Transformer, include_lm_head: bool) -> dict[str, Linear]:
    """The checkpoint linears by name; drops any decode-time fusion first (the parts are
    what is calibrated, quantized and exported)."""
    model.unfuse_projections()
    mods = {n: m for n, m in model.named_modules() if isinstance(m, Linear)}
    if not include_lm_head:
        mods.pop("lm_head", None)
    return mods


def check_nvfp4_shapes(mods: dict[str, Linear]) -> None:
    """Raise, naming the first such linear, when an input width K is not a multiple of 16."""
    for name, m in mods.items():
        if m.in_features % BLOCK_SIZE:
            raise ValueError(
                f"linear {name} has K = {m.in_features} input features; NVFP4 needs K % {BLOCK_SIZE} == 0 "
                f"(one FP8 scale per {BLOCK_SIZE} weights), so this model cannot be quantized to NVFP4: "
                "run it in bf16 or fp32 instead"
            )


@torch.no_grad()
def calibrate_input_scales(
    model: Transformer,
    token_batches: list[list[int]],
    include_lm_head: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Tensor]:
    """Per-linear fp32 0-dim ``input_scale = amax(|x|) / 2688`` over ``token_batches``.

    Runs the (dense) model one prompt at a time; needs :meth:`Transformer.setup_cache`
    with ``max_seq_len`` >= the longest prompt.
    """
    mods = linear_modules(model, include_lm_head)
    amax: dict[str, Tensor] = {}
    hooks = []
    for name, m in mods.items():

        def hook(_m: Linear, inp: tuple[Tensor, ...], name: str = name) -> None:
            a = inp[0].detach().abs().amax().float()
            amax[name] = torch.maximum(amax[name], a) if name in amax else a

        hooks.append(m.register_forward_pre_hook(hook))
    dev = model.model.embed_tokens.weight.device
    try:
        for i, ids in enumerate(token_batches):
            toks = torch.tensor([ids], dtype=torch.int64, device=dev)
            pos = torch.arange(len(ids), device=dev)[None]
            # Full-sequence logits so lm_head sees every row, like the other linears.
            model(toks, pos, attn_len=len(ids))
            if progress:
                progress(i + 1, len(token_batches))
    finally:
        for h in hooks:
            h.remove()
    # amax / 2688 with true division on every device (compute_global_scale divides by a
    # device tensor; a Python-float divisor becomes a reciprocal multiply on CUDA), and 1.0
    # for an all-zero input, exactly as the NVFP4 quantizer defines a global scale.
    return {n: compute_global_scale(a) for n, a in amax.items()}


def fusion_groups(names: Iterable[str]) -> list[list[str]]:
    """Groups of linear names that the decode step fuses (``....self_attn.q_proj/k_proj/v_proj``,
    ``....mlp.gate_proj/up_proj``); only complete groups among ``names`` are returned."""
    have = set(names)
    groups = []
    for name in sorted(have):
        parent, _, leaf = name.rpartition(".")
        for parts in FUSED.values():
            if leaf == parts[0]:
                group = [f"{parent}.{p}" for p in parts]
                if all(g in have for g in group):
                    groups.append(group)
    return groups


def shared_global_scales(mods: dict[str, Linear]) -> dict[str, Tensor]:
    """``{name: global scale}`` for the linears of every fusion group: ``amax/2688`` of the
    group's bf16 weights together (true division, as :func:`compute_global_scale`)."""
    out: dict[str, Tensor] = {}
    for group in fusion_groups(n for n, m in mods.items() if m.qweight is None):
        amax = torch.stack([mods[n].weight.detach().to(torch.bfloat16).abs().amax().float() for n in group])
        gs = compute_global_scale(amax.amax())
        out.update(dict.fromkeys(group, gs))
    return out


@torch.no_grad()
def quantize_model(
    model: Transformer,
    act: str,
    input_scales: dict[str, Tensor] | None = None,
    include_lm_head: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Replace the dense linears of ``model`` by NVFP4 in place (weights quantized from bf16).

    ``act``: ``"bf16"`` (W4A16) or ``"fp4"`` (W4A4; ``input_scales`` required per linear).
    """
    mods = linear_modules(model, include_lm_head)
    check_nvfp4_shapes({n: m for n, m in mods.items() if m.qweight is None})
    shared = shared_global_scales(mods)
    for i, (name, m) in enumerate(mods.items()):
        if m.qweight is not None:
            continue
        w = quantize(m.weight.detach().to(torch.bfloat16), global_scale=shared.get(name))
        scale = input_scales[name] if act == "fp4" else None
        m.set_nvfp4(w, act, scale)
        if progress:
            progress(i + 1, len(mods))


def export_tensors(model: Transformer) -> tuple[dict[str, Tensor], dict[str, NVFP4Tensor], dict[str, Tensor]]:
    """``(dense, linears, input_scales)`` of a quantized model, HF/ModelOpt names, on CPU."""
    dense: dict[str, Tensor] = {}
    linears: dict[str, NVFP4Tensor] = {}
    scales: dict[str, Tensor] = {}
    model.unfuse_projections()
    for name, m in model.named_modules():
        if isinstance(m, Linear):
            if m.qweight is not None:
                linears[name] = m.qweight.nvfp4().to("cpu")
                if m.act == "fp4":
                    scales[name] = m.input_scale.detach().cpu()
            elif not (name == "lm_head" and model.args.tie_embeddings):
                dense[f"{name}.weight"] = m.weight.detach().cpu()
            if m.bias is not None:
                dense[f"{name}.bias"] = m.bias.detach().cpu()
        else:
            for pname, p in m.named_parameters(recurse=False):
                dense[f"{name}.{pname}"] = p.detach().cpu()
    return dense, linears, scales


def save_quantized(
    model: Transformer,
    out_dir: str | Path,
    *,
    hf_config: dict[str, Any],
    source: str,
    tokenizer_files: list[Path] | None = None,
    overwrite: bool = False,
    calibration: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (already quantized) as a ModelOpt-compatible NVFP4 folder
    (``overwrite``: replace a checkpoint already in ``out_dir``). ``calibration``: what the
    W4A4 input scales were calibrated on (recorded in ``hf_quant_config.json``; default: the
    built-in set)."""
    from resetfp4.format.checkpoint import save_nvfp4_checkpoint

    dense, linears, scales = export_tensors(model)
    w4a4 = bool(scales)
    excluded = [] if "lm_head" in linears else ["lm_head"]
    calib = None
    if w4a4:
        calib = {"prompts": len(CALIBRATION_PROMPTS), "max_tokens": CALIBRATION_MAX_TOKENS,
                 "set": "resetfp4.engine.quantize.CALIBRATION_PROMPTS"}
        calib.update(calibration or {})
        calib["method"] = "max"
    # config.json names the dtype its unquantized tensors are stored in, as ModelOpt's exports
    # do (the source's config may say float16 / float32 where these are now bf16)
    config = dict(hf_config)
    if "lm_head" in linears and config.get("tie_word_embeddings"):
        # the head is now its own NVFP4 tensor: a loader that honours the tie (HF, vLLM) would
        # otherwise drop it and run the bf16 embedding matrix as the head
        config["tie_word_embeddings"] = False
    dense_dtypes = {t.dtype for t in dense.values() if t.is_floating_point()}
    if len(dense_dtypes) == 1:
        config["torch_dtype"] = str(dense_dtypes.pop()).removeprefix("torch.")
        if "dtype" in config:  # the newer transformers key
            config["dtype"] = config["torch_dtype"]
    return save_nvfp4_checkpoint(
        out_dir,
        config=config,
        dense=dense,
        linears=linears,
        input_scales=scales or None,
        quant_algo="NVFP4" if w4a4 else "W4A16_NVFP4",
        exclude_modules=excluded,
        producer_extra={"source": source, "weights_from": "bf16", "calibration": calib},
        tokenizer_files=tokenizer_files,
        overwrite=overwrite,
    )


def _bar(desc: str) -> Callable[[int, int], None]:
    from tqdm import tqdm

    state: dict[str, Any] = {}

    def update(i: int, n: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=n, desc=desc, unit="layer" if "quant" in desc else "prompt")
        state["bar"].update(i - state["bar"].n)
        if i == n:
            state["bar"].close()

    return update


@torch.no_grad()
def probe_logits(model: Transformer, tokenizer: Any) -> Tensor:
    """fp32 logits ``[L, V]`` of the first calibration prompt (the round-trip probe)."""
    ids = calibration_batches(tokenizer)[0][:64]
    dev = model.model.embed_tokens.weight.device
    model.setup_cache(1, len(ids))
    toks = torch.tensor([ids], device=dev)
    return model(toks, torch.arange(len(ids), device=dev)[None], attn_len=len(ids))[0]


def check_out_dir(out_dir: str | Path, overwrite: bool = False) -> None:
    """Raise unless ``out_dir`` can take a new checkpoint: a new or empty folder, or (with
    ``overwrite``) a folder holding a checkpoint. Nothing is written."""
    from resetfp4.format.checkpoint import QUANT_CONFIG_FILE, CheckpointError

    out = check_new_folder_path(out_dir, "--out", "the folder to write the checkpoint to (a new or empty "
                                "one)", "a new or empty folder")
    if not out.is_dir():
        return
    files = sorted(f.name for f in out.iterdir())
    ckpt = [f for f in files if f.endswith(".safetensors") or f == QUANT_CONFIG_FILE]
    if ckpt and not overwrite:
        raise CheckpointError(
            f"{out} already holds a checkpoint ({ckpt[0]}, ...); choose a new --out "
            "folder or pass --overwrite to replace it")
    if files and not ckpt:
        raise ValueError(
            f"--out {out} is not empty (it holds {files[:3]}{', ...' if len(files) > 3 else ''}) and holds "
            "no checkpoint; writing there would overwrite its files: choose a new or empty folder")


def quantize_to_folder(
    model_ref: str,
    out_dir: str | Path,
    *,
    w4a16: bool = False,
    device: str | None = None,
    lm_head: str = "bf16",
    verify: bool = True,
    progress: bool = True,
    overwrite: bool = False,
    calib_data: str | Path | None = None,
    calib_samples: int | None = None,
    calib_max_tokens: int = CALIBRATION_MAX_TOKENS,
) -> dict[str, Any]:
    """Convert a BF16/GGUF model into a ModelOpt NVFP4 folder; optionally prove the round trip.

    W4A4: ``calib_data`` (a ``.jsonl`` / ``.txt`` file, :func:`read_calibration_file`) replaces
    the built-in calibration prompts, ``calib_samples`` keeps only the first N, and each
    prompt is cut to ``calib_max_tokens`` tokens. (On-the-fly W4A4 loading always uses the
    built-in set, so only a folder written with the defaults equals it bit for bit.)

    Returns a report: ``{"out", "quant_algo", "linears", "verified", "max_abs_logit_diff"}``.
    The round trip reloads the folder and requires its logits to equal, bit for bit, those
    of the model quantized in memory (the same path ``load_engine`` takes on the fly).
    """
    import tempfile

    from resetfp4.engine.build import build_model, resolve_device
    from resetfp4.engine.loader import load_tokenizer, read_source

    check_out_dir(out_dir, overwrite)  # fail before the (slow) quantization, not after it
    custom_calib = calib_data is not None or calib_samples is not None \
        or calib_max_tokens != CALIBRATION_MAX_TOKENS
    if w4a16 and custom_calib:
        raise ValueError("--calib-data / --calib-samples / --calib-max-tokens set the W4A4 activation "
                         "scales; --w4a16 has none: drop them or drop --w4a16")
    if calib_max_tokens < 1:
        raise ValueError(f"--calib-max-tokens {calib_max_tokens}: need at least 1")
    prompts: list[str] = list(CALIBRATION_PROMPTS)
    calib_info: dict[str, Any] = {}
    if calib_data is not None:
        prompts, calib_info = read_calibration_file(calib_data, calib_samples)
    elif calib_samples is not None:
        if not 1 <= calib_samples <= len(CALIBRATION_PROMPTS):
            raise ValueError(f"--calib-samples {calib_samples}: the built-in set has "
                             f"{len(CALIBRATION_PROMPTS)} prompts; give 1..{len(CALIBRATION_PROMPTS)} "
                             "or a --calib-data file")
        prompts = prompts[:calib_samples]
        calib_info = {"prompts": calib_samples}
    calib_info["max_tokens"] = calib_max_tokens
    dev = resolve_device(device)
    src = read_source(model_ref)
    if src.kind == "modelopt":
        raise ValueError(
            f"{src.path} is already an NVFP4 checkpoint; quantize a BF16/FP16 folder or a GGUF file"
        )
    if Path(out_dir).resolve() == src.path.resolve():
        raise ValueError(f"--out {out_dir} is the model's own folder; choose a new or empty folder")
    tok = load_tokenizer(src)
    model = build_model(src, "bf16", dev)
    with_head = lm_head == "nvfp4"
    check_nvfp4_shapes(linear_modules(model, with_head))
    out_dir = make_folder(out_dir, "--out folder")
    scales = None
    if not w4a16:
        batches = calibration_batches(tok, prompts, calib_max_tokens)
        if not all(batches):
            raise ValueError("a calibration prompt tokenized to no tokens; remove empty prompts")
        model.setup_cache(1, max(len(b) for b in batches))
        scales = calibrate_input_scales(model, batches, with_head, _bar("calibrate") if progress else None)
    quantize_model(
        model, "bf16" if w4a16 else "fp4", scales, with_head, _bar("quantize") if progress else None
    )
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        files = [p for p in Path(tmp).iterdir() if p.is_file()]
        out = save_quantized(
            model,
            out_dir,
            hf_config=src.hf_config or src.args.to_hf_config(),
            source=str(src.path),
            tokenizer_files=files,
            overwrite=overwrite,
            calibration=None if w4a16 else calib_info,
        )
    report: dict[str, Any] = {
        "out": str(out),
        "quant_algo": "W4A16_NVFP4" if w4a16 else "NVFP4",
        "linears": len(export_tensors(model)[1]),
        "verified": False,
    }
    if verify:
        precision = "nvfp4-w4a16" if w4a16 else "nvfp4-w4a4"
        again = build_model(read_source(str(out)), precision, dev, lm_head=lm_head)
        a, b = probe_logits(model, tok), probe_logits(again, tok)
        report["max_abs_logit_diff"] = float((a - b).abs().max())
        if not torch.equal(a, b):
            raise RuntimeError(
                f"round trip failed: logits of {out} differ from the in-memory quantized model "
                f"by up to {report['max_abs_logit_diff']:.3g}; please report this as a bug"
            )
        report["verified"] = True
    return report
