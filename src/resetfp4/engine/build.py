"""Build a :class:`Transformer` for a precision and device from a :class:`ModelSource` or random weights."""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import Tensor, nn

from resetfp4.engine.config import ModelArgs
from resetfp4.engine.loader import ModelSource
from resetfp4.engine.model import Linear, Transformer
from resetfp4.format.nvfp4 import NVFP4Tensor

PRECISIONS = ("fp32", "bf16", "nvfp4-w4a16", "nvfp4-w4a4")
ACT = {"nvfp4-w4a16": "bf16", "nvfp4-w4a4": "fp4"}


def resolve_device(device: str | None) -> torch.device:
    """``None`` -> cuda when available, else cpu; a CUDA request without a GPU is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but no CUDA GPU is visible; use --device cpu")
    return dev


def check_precision(precision: str, device: torch.device) -> None:
    """Raise when ``precision`` is unknown or ``device`` cannot run it."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if device.type == "cuda" and precision != "fp32":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            raise RuntimeError(
                f"{precision} needs bf16 support (compute capability >= 8.0) but "
                f"{torch.cuda.get_device_name(device)} "
                f"is sm_{major}{minor}; use --precision fp32 or another GPU"
            )
    if device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"device type {device.type!r} is not supported; use cpu or cuda")


def check_lm_head(lm_head: str, precision: str) -> None:
    """Raise when ``lm_head`` is unknown, or ``"nvfp4"`` with a precision that has no NVFP4
    linears (it would otherwise be ignored without a word)."""
    if lm_head not in ("bf16", "nvfp4"):
        raise ValueError(f"lm_head must be 'bf16' or 'nvfp4', got {lm_head!r}")
    if lm_head == "nvfp4" and precision not in ACT:
        raise ValueError(f"lm_head 'nvfp4' needs an NVFP4 precision (nvfp4-w4a16 or nvfp4-w4a4), not "
                         f"{precision!r}; drop --lm-head nvfp4 or choose an NVFP4 precision")


def dtype_for(precision: str) -> torch.dtype:
    return torch.float32 if precision == "fp32" else torch.bfloat16


def _set_param(root: nn.Module, name: str, t: Tensor) -> None:
    mod_name, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(mod_name), leaf, nn.Parameter(t, requires_grad=False))


def _expected(model: Transformer, src: ModelSource) -> dict[str, tuple[int, ...]]:
    exp = {n: tuple(p.shape) for n, p in model.named_parameters(remove_duplicate=False)}
    for prefix in src.linears:
        exp.pop(f"{prefix}.weight", None)
    if src.args.tie_embeddings and "lm_head.weight" not in src.dense:
        exp.pop("lm_head.weight", None)
    return exp


# Checkpoint tensors a model may carry that this engine does not use: precomputed RoPE
# frequencies of older HF exports, and the FP8 KV-cache / attention output scales of
# ModelOpt folders (the KV cache here is in the activation dtype).
_UNUSED_OK = ("rotary_emb.inv_freq", ".k_scale", ".v_scale", ".kv_scale", ".q_scale", ".prob_scale")


def _load_dense(model: Transformer, src: ModelSource, dtype: torch.dtype, device: torch.device) -> None:
    expected = _expected(model, src)
    extra = sorted(n for n in src.dense if n not in expected and not n.endswith(_UNUSED_OK))
    if extra:
        raise ValueError(
            f"{src.path}: {len(extra)} tensor(s) the {src.args.arch} model of this config "
            f"({src.args.n_layers} layers) does not use, e.g. {extra[:3]}; config.json and the "
            "weights disagree (a wrong model_type or num_hidden_layers?), fix the config or use "
            "the matching checkpoint"
        )
    for name, shape in expected.items():
        if name not in src.dense:
            raise ValueError(
                f"{src.path}: tensor {name!r} is missing (expected shape {list(shape)}); "
                "the checkpoint is incomplete or for another architecture"
            )
        t = src.dense[name]
        if tuple(t.shape) != shape:
            raise ValueError(
                f"{src.path}: tensor {name!r} has shape {list(t.shape)} but the config "
                f"({src.args.arch}, hidden {src.args.dim}) expects {list(shape)}; "
                "config.json and the weights disagree"
            )
        _set_param(model, name, t.to(device=device, dtype=dtype))
    if src.args.tie_embeddings and "lm_head.weight" not in src.dense and "lm_head" not in src.linears:
        model.lm_head.weight = model.model.embed_tokens.weight


def _load_nvfp4(model: Transformer, src: ModelSource, act: str, device: torch.device) -> None:
    expected = {n: (m.out_features, m.in_features) for n, m in model.named_modules() if isinstance(m, Linear)}
    for prefix, w in src.linears.items():
        if prefix not in expected:
            raise ValueError(f"{src.path}: NVFP4 linear {prefix!r} does not exist in a {src.args.arch} model")
        if tuple(w.shape) != expected[prefix]:
            raise ValueError(
                f"{src.path}: NVFP4 linear {prefix!r} has shape {list(w.shape)}, the config "
                f"expects {list(expected[prefix])}"
            )
        scale = src.input_scales.get(prefix)
        model.get_submodule(prefix).set_nvfp4(
            w.to(device), act, scale.to(device) if (scale is not None and act == "fp4") else None
        )
    # Linears stored in bf16 were loaded dense by _load_dense (a missing weight is an error
    # there); they run unquantized, as vLLM runs a ModelOpt checkpoint's excluded layers, but
    # only where exclude_modules says so: otherwise the folder is inconsistent.
    dense = sorted(set(model.linear_names()) - set(src.linears))
    unlisted = [p for p in dense if not excluded(p, src.exclude_modules)]
    if unlisted:
        raise ValueError(
            f"{src.path}: linear(s) {unlisted[:3]} ({len(unlisted)} in all) are stored unquantized, but "
            f"hf_quant_config.json's exclude_modules {src.exclude_modules} does not list them, so the "
            "folder is inconsistent (its quantizer should have written NVFP4 tensors for them). "
            "Re-export it (e.g. `resetfp4 quantize` from the BF16 model), or add them to "
            "exclude_modules if they are meant to stay unquantized"
        )


def excluded(name: str, patterns: list[str]) -> bool:
    """Whether module ``name`` is covered by ModelOpt ``exclude_modules``, by vLLM's rules: an
    fnmatch pattern (``model.layers.*.mlp.down_proj``, ``*lm_head*``), or a plain name found
    in ``name`` (a parent module, or a suffix such as ``mlp.down_proj`` in older exports)."""
    return any(fnmatch.fnmatchcase(name, p) if any(c in p for c in "*?[") else p in name for p in patterns)


def build_model(
    src: ModelSource, precision: str, device: torch.device, lm_head: str = "bf16", tokenizer: Any = None
) -> Transformer:
    """Instantiate and load. Dense sources are quantized on the fly for nvfp4 precisions
    (W4A4 scales calibrated as :mod:`resetfp4.engine.quantize` documents; needs ``tokenizer``)."""
    from resetfp4.engine import quantize as q

    check_precision(precision, device)
    check_lm_head(lm_head, precision)
    dtype = dtype_for(precision)
    with torch.device("meta"):
        model = Transformer(src.args, dtype)
    if src.kind == "modelopt":
        if precision not in ACT:
            raise ValueError(f"{src.path} is an NVFP4 checkpoint; use --precision nvfp4-w4a16 or nvfp4-w4a4")
        if precision == "nvfp4-w4a4" and src.quant_algo != "NVFP4":
            raise ValueError(f"{src.path} is {src.quant_algo} (no input_scale); use --precision nvfp4-w4a16")
        if lm_head == "nvfp4" and "lm_head" not in src.linears:
            raise ValueError(f"{src.path} keeps lm_head in bf16, so lm_head='nvfp4' cannot apply; drop "
                             "--lm-head nvfp4, or re-quantize with `resetfp4 quantize --lm-head nvfp4`")
        _load_dense(model, src, dtype, device)
        _load_nvfp4(model, src, ACT[precision], device)
        return model.eval()
    _load_dense(model, src, dtype, device)
    if precision in ACT:
        with_head = lm_head == "nvfp4"
        q.check_nvfp4_shapes(q.linear_modules(model, with_head))  # before the calibration runs
        scales = None
        if ACT[precision] == "fp4":
            if tokenizer is None:
                raise ValueError("on-the-fly W4A4 needs the tokenizer for calibration")
            batches = q.calibration_batches(tokenizer)
            model.setup_cache(1, max(len(b) for b in batches))
            scales = q.calibrate_input_scales(model, batches, include_lm_head=with_head)
        q.quantize_model(model, ACT[precision], scales, include_lm_head=with_head)
    return model.eval()


def random_model(
    args: ModelArgs, precision: str, device: torch.device, lm_head: str = "bf16", seed: int = 0
) -> Transformer:
    """Random weights of the right shapes and formats (for speed benchmarks only).

    Dense weights ~ N(0, 0.02^2); NVFP4 weights get uniform random codes, block scales 1.0
    and global scale 0.005 (|w| <= 0.03), W4A4 input scales 1/2688 (activation amax ~1).
    """
    check_precision(precision, device)
    check_lm_head(lm_head, precision)
    gen = torch.Generator(device=device).manual_seed(seed)
    dtype = dtype_for(precision)
    with torch.device("meta"):
        model = Transformer(args, dtype)
    # a list, not a set: the generator's draws follow this order, so it must not depend on
    # string hashing (PYTHONHASHSEED), or every process would get other NVFP4 weights
    order = list(model.linear_names()) if precision in ACT else []
    if precision in ACT and lm_head == "nvfp4":
        order.append("lm_head")
    quantized = set(order)
    for name, p in list(model.named_parameters()):
        mod = name.rpartition(".")[0]
        if mod in quantized and name.endswith(".weight"):
            continue
        if "norm" in name:
            t = torch.ones(p.shape, dtype=dtype, device=device)
        else:
            t = (torch.randn(p.shape, generator=gen, device=device, dtype=torch.float32) * 0.02).to(dtype)
        _set_param(model, name, t)
    for name in order:
        m = model.get_submodule(name)
        n, k = m.out_features, m.in_features
        packed = torch.randint(0, 256, (n, k // 2), generator=gen, device=device, dtype=torch.int32).to(
            torch.uint8
        )
        bs = torch.ones((n, k // 16), device=device).to(torch.float8_e4m3fn)
        w = NVFP4Tensor(packed, bs, torch.tensor(0.005, device=device))
        act = ACT[precision]
        m.set_nvfp4(w, act, torch.tensor(1.0 / 2688, device=device) if act == "fp4" else None)
    return model.eval()
