"""Read a model's weights, config and tokenizer from an alias, a GGUF file, an HF folder or
a ModelOpt NVFP4 folder, into HF-named tensors.

Sources:

* **GGUF** (``*.gguf``, or a folder with exactly one): metadata -> :class:`ModelArgs`;
  tensors dequantized by the ``gguf`` package to fp32 (``gguf.quants.dequantize``).
  llama.cpp stores Llama Q/K projection rows permuted for its interleaved RoPE; we undo
  that (as HF transformers does) so all models use rotate-half RoPE. Qwen2/Qwen3 GGUFs
  are not permuted.
* **HF folder** (``config.json`` + ``*.safetensors``, bf16/fp16/fp32; with
  ``model.safetensors.index.json`` only the shards it names are read).
* **ModelOpt NVFP4 folder** (``hf_quant_config.json``), read by
  :func:`resetfp4.format.checkpoint.load_nvfp4_checkpoint`. Fused ``qkv_proj`` /
  ``gate_up_proj`` linears are **split by rows** into q/k/v and gate/up; every shard keeps
  the fused tensor's global scale (``weight_scale_2``) and its own rows' block scales, so
  the split is exact: no requantization, no max-of-scales. The engine fuses them again at
  run time (CUDA, :meth:`Transformer.fuse_projections`) only where that is exact: always
  for dense weights, for NVFP4 only when the parts' global (and input) scales are equal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from resetfp4.engine.aliases import cache_dir, resolve_alias
from resetfp4.engine.config import ModelArgs
from resetfp4.format.checkpoint import DENSE_DTYPES, dtype_name
from resetfp4.format.nvfp4 import NVFP4Tensor

_GGUF_LAYER = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
_GGUF_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


@dataclass
class ModelSource:
    """Everything read from disk: ``dense`` HF-named tensors (fp32 for GGUF, as stored
    otherwise); for ModelOpt folders also NVFP4 ``linears`` and W4A4 ``input_scales``."""

    kind: str  # "gguf" | "hf" | "modelopt"
    path: Path
    args: ModelArgs
    dense: dict[str, Tensor]
    linears: dict[str, NVFP4Tensor] = field(default_factory=dict)
    input_scales: dict[str, Tensor] = field(default_factory=dict)
    quant_algo: str | None = None
    hf_config: dict[str, Any] = field(default_factory=dict)
    # ModelOpt: hf_quant_config.json's exclude_modules (names or fnmatch patterns of the
    # modules stored unquantized).
    exclude_modules: list[str] = field(default_factory=list)


def locate(model: str) -> tuple[str, Path]:
    """``(kind, path)`` for an alias or a path; raises with what to do when unusable."""
    alias = resolve_alias(model)
    if alias is not None:
        return "gguf", alias
    p = Path(model).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ValueError(f"{p} is a file but not a .gguf; pass a GGUF file, an HF folder or an alias")
        return "gguf", p
    if p.is_dir():
        if (p / "hf_quant_config.json").is_file():
            return "modelopt", p
        if (p / "config.json").is_file():
            return "hf", p
        ggufs = sorted(f for f in p.iterdir() if f.suffix.lower() == ".gguf" and f.is_file())
        if len(ggufs) == 1:
            return "gguf", ggufs[0]
        raise FileNotFoundError(
            f"{p} holds no config.json and {len(ggufs)} .gguf files; pass an HF folder, a ModelOpt NVFP4 "
            "folder or one .gguf file"
        )
    from resetfp4.engine.aliases import ALIASES

    raise FileNotFoundError(f"model {model!r} is neither a known alias {list(ALIASES)} nor an existing path")


def read_source(model: str) -> ModelSource:
    kind, path = locate(model)
    return {"gguf": read_gguf, "hf": read_hf_folder, "modelopt": read_modelopt}[kind](path)


# ---------------------------------------------------------------- GGUF
def open_gguf(path: Path) -> Any:
    """A ``gguf.GGUFReader`` for ``path``; a damaged or missing file is a clear ValueError."""
    from gguf import GGUFReader

    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is not a readable GGUF file: it does not exist; check the path")
    if Path(path).is_dir():
        raise ValueError(f"{path} is a folder, not a readable GGUF file; pass the .gguf file inside it")
    try:
        return GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError/struct.error/IndexError on damage
        raise ValueError(
            f"{path} is not a readable GGUF file ({type(e).__name__}: {e}); "
            "it may be truncated or corrupt: re-download or reinstall it"
        ) from e


def _gguf_fields(reader: Any) -> dict[str, Any]:
    out = {}
    for k, f in reader.fields.items():
        if k.startswith("tokenizer.ggml.") and k.endswith(("tokens", "token_type", "merges", "scores")):
            continue
        try:
            out[k] = f.contents()
        except Exception:  # noqa: BLE001 - unreadable optional metadata is skipped
            continue
    return out


def _unpermute(w: Tensor, n_heads: int) -> Tensor:
    """Undo llama.cpp's Q/K row permutation: rows ``[h, 2, hd/2]`` were stored as ``[h, hd/2, 2]``."""
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_name(name: str) -> str | None:
    base, _, suffix = name.rpartition(".")
    if base.startswith("blk."):
        _, idx, part = base.split(".", 2)
        return f"model.layers.{idx}.{_GGUF_LAYER[part]}.{suffix}" if part in _GGUF_LAYER else None
    return f"{_GGUF_TOP[base]}.{suffix}" if base in _GGUF_TOP else None


def read_gguf(path: Path) -> ModelSource:
    from gguf.quants import dequantize

    reader = open_gguf(path)
    fields = _gguf_fields(reader)
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ValueError(f"{path}: no token_embd.weight tensor; not a causal-LM GGUF or corrupt")
    if "rope_freqs.weight" in tensors:  # llama.cpp's form of Llama-3.1 'llama3' RoPE scaling
        raise ValueError(
            f"{path}: has a rope_freqs.weight tensor (RoPE frequency scaling, e.g. Llama-3.1 'llama3'), "
            "which is not supported (only plain RoPE); the model would load with wrong positions"
        )
    emb = tensors["token_embd.weight"]
    args = ModelArgs.from_gguf_fields(
        fields, vocab_size=int(emb.shape[-1]), tied="output.weight" not in tensors, where=str(path)
    )
    dense: dict[str, Tensor] = {}
    for name, t in tensors.items():
        hf = _gguf_name(name)
        if hf is None:
            continue
        try:
            arr = dequantize(t.data, t.tensor_type)
        except Exception as e:
            raise ValueError(f"{path}: cannot dequantize {name} ({t.tensor_type.name}): {e}") from e
        w = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))
        if args.arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            w = _unpermute(w, args.n_heads if "attn_q" in name else args.n_kv_heads)
        dense[hf] = w
    return ModelSource("gguf", path, args, dense, hf_config=args.to_hf_config())


# ---------------------------------------------------------------- HF folders
def _read_json(p: Path) -> dict[str, Any]:
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{p} is missing; an HF model folder needs config.json") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p} is not valid JSON ({e}); the file is corrupt") from e
    if not isinstance(data, dict):
        raise ValueError(
            f"{p} holds a JSON {type(data).__name__}, not an object; it must be the model's HF config "
            '({"model_type": ..., "hidden_size": ...}): restore it from the original model'
        )
    return data


def _read_safetensors(folder: Path) -> dict[str, Tensor]:
    """Every tensor of the HF folder's weight files (its index honoured; see
    :func:`resetfp4.format.checkpoint.safetensors_files`)."""
    from resetfp4.format.checkpoint import read_safetensors, safetensors_files

    return read_safetensors(safetensors_files(folder))[0]


# Dense HF folders hold floating-point weights only: the rule ModelOpt folders' unquantized
# tensors follow too (resetfp4.format.checkpoint.DENSE_DTYPES).
HF_DTYPES = DENSE_DTYPES


def check_hf_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    """Refuse tensors a dense HF folder cannot hold: NVFP4 ones (a ModelOpt folder that lost
    its ``hf_quant_config.json``: ``weight_scale_2``, or uint8 codes with a ``weight_scale``)
    and any dtype but bf16/fp16/fp32."""
    nvfp4 = sorted(
        n for n, t in tensors.items()
        if n.endswith(".weight_scale_2")
        or (n.endswith(".weight") and t.dtype == torch.uint8 and f"{n}_scale" in tensors)
    )
    if nvfp4:
        raise FileNotFoundError(
            f"{path} holds NVFP4 tensors (e.g. {nvfp4[0]!r}) but no hf_quant_config.json, which a "
            "ModelOpt NVFP4 folder needs: copy hf_quant_config.json from where the folder came from, "
            "or re-create the folder with `resetfp4 quantize`"
        )
    for name, t in tensors.items():
        if t.dtype not in HF_DTYPES:
            raise ValueError(
                f"{path}: tensor {name!r} is {dtype_name(t.dtype)}; HF folders are "
                "read in bf16, fp16 or fp32 only (int8 / fp8 exports are not supported). Use the "
                "BF16/FP16 original model (for NVFP4: `resetfp4 quantize` it, or pass a ModelOpt "
                "NVFP4 folder)"
            )


def read_hf_folder(path: Path) -> ModelSource:
    cfg_file = path / "config.json"
    cfg = _read_json(cfg_file)
    args = ModelArgs.from_hf_config(cfg, where=str(cfg_file))
    tensors = _read_safetensors(path)
    check_hf_tensors(path, tensors)
    return ModelSource("hf", path, args, tensors, hf_config=cfg)


# ---------------------------------------------------------------- ModelOpt NVFP4
def split_fused(linears: dict[str, NVFP4Tensor], scales: dict[str, Tensor], args: ModelArgs) -> None:
    """Split fused ``qkv_proj`` / ``gate_up_proj`` in place (exact, see the module docstring)."""
    hd = args.head_dim
    splits = {
        "self_attn.qkv_proj": [
            ("self_attn.q_proj", args.n_heads * hd),
            ("self_attn.k_proj", args.n_kv_heads * hd),
            ("self_attn.v_proj", args.n_kv_heads * hd),
        ],
        "mlp.gate_up_proj": [
            ("mlp.gate_proj", args.intermediate_size),
            ("mlp.up_proj", args.intermediate_size),
        ],
    }
    for name in [n for n in linears if n.endswith(tuple(splits))]:
        suffix = next(s for s in splits if name.endswith(s))
        prefix = name[: -len(suffix)]
        w = linears.pop(name)
        parts = splits[suffix]
        if w.shape[0] != sum(n for _, n in parts):
            raise ValueError(
                f"fused {name} has {w.shape[0]} rows; the config implies {sum(n for _, n in parts)}"
            )
        row = 0
        for shard, n in parts:
            linears[prefix + shard] = NVFP4Tensor(
                w.packed[row : row + n].clone(), w.block_scale[row : row + n].clone(), w.global_scale.clone()
            )
            if name in scales:
                scales[prefix + shard] = scales[name].clone()
            row += n
        scales.pop(name, None)


def read_modelopt(path: Path) -> ModelSource:
    from resetfp4.format.checkpoint import load_nvfp4_checkpoint

    ck = load_nvfp4_checkpoint(path)
    kv = ck.quant_config["quantization"].get("kv_cache_quant_algo")
    if kv:
        from resetfp4.engine.log import warn_once

        warn_once(f"{path} asks for its KV cache in {kv} (kv_cache_quant_algo); this engine keeps the KV "
                  "cache in the activation dtype and ignores the checkpoint's k/v scales, so attention "
                  "is more precise than in vLLM or TensorRT-LLM with that setting, not identical")
    args = ModelArgs.from_hf_config(ck.config, where=str(path / "config.json"))
    split_fused(ck.linears, ck.input_scales, args)
    return ModelSource(
        "modelopt", path, args, ck.dense, ck.linears, ck.input_scales, ck.quant_algo, hf_config=ck.config,
        exclude_modules=list(ck.quant_config["quantization"].get("exclude_modules") or []),
    )


# ---------------------------------------------------------------- tokenizer
def load_tokenizer(src: ModelSource) -> Any:
    """The HF tokenizer. GGUF tokenizers are converted once and cached as HF files."""
    from transformers import AutoTokenizer

    if src.kind != "gguf":
        try:
            return AutoTokenizer.from_pretrained(str(src.path))
        except _hf_config_errors() as e:  # transformers validates config.json on the way
            raise ValueError(
                f"{src.path / 'config.json'}: transformers refuses it while loading the tokenizer "
                f"({type(e).__name__}: {' '.join(str(e).split())}); fix that field of the model's config"
            ) from e
        except (OSError, ValueError) as e:
            raise FileNotFoundError(
                f"{src.path} holds no usable tokenizer files ({e}); copy tokenizer.json "
                "and tokenizer_config.json from the original model"
            ) from e
    return gguf_tokenizer(src.path)


def _hf_config_errors() -> tuple[type[Exception], ...]:
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # older huggingface_hub: configs are not validated strictly
        return ()
    return (StrictDataclassError,)


def gguf_tokenizer_cache(path: Path) -> Path:
    """The cache folder of ``path``'s converted tokenizer:
    ``<cache>/tokenizers/<stem>-<hash>``, the hash over the file's resolved path, size and
    modification time (ns). Another file (same name and size elsewhere, or this one edited or
    replaced in place) gets another folder; reading the metadata itself to hash it would cost
    seconds for a large GGUF on every start."""
    st = path.stat()
    ident = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    return cache_dir() / "tokenizers" / f"{path.stem}-{hashlib.sha256(ident).hexdigest()[:16]}"


def gguf_tokenizer(path: Path) -> Any:
    """HF tokenizer of a GGUF file, converted by transformers once and cached as HF files
    (:func:`gguf_tokenizer_cache`; written to a temporary folder first, so an interrupted
    write leaves no half cache)."""
    from transformers import AutoTokenizer

    cached = gguf_tokenizer_cache(path)
    if (cached / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(cached))
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cached.name}-", dir=cached.parent))
    try:
        tok.save_pretrained(str(tmp))
        try:
            tmp.rename(cached)
        except OSError:  # another process cached it first, or a half folder is in the way
            if not (cached / "tokenizer_config.json").is_file():
                shutil.rmtree(cached, ignore_errors=True)
                with contextlib.suppress(OSError):  # the cache only saves time: never fail on it
                    tmp.rename(cached)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tok
