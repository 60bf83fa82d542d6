"""ModelOpt-compatible NVFP4 checkpoints (HF folders, safetensors only).

Layout written and read (the NVIDIA ModelOpt "NVFP4" / "W4A16_NVFP4" export):

* per quantized linear ``<prefix>`` (e.g. ``model.layers.0.self_attn.q_proj``):
  - ``<prefix>.weight``: uint8 ``[N, K/2]`` packed E2M1 codes (element 2i low nibble);
  - ``<prefix>.weight_scale``: float8_e4m3fn ``[N, K/16]``, row-major, not swizzled;
  - ``<prefix>.weight_scale_2``: fp32 scalar (the weight's global scale);
  - ``<prefix>.input_scale``: fp32 scalar, the activation global scale (W4A4 only);
  - ``<prefix>.bias``: kept in its dense dtype when present.
* everything else (embeddings, norms, ``lm_head``) dense, usually bf16;
* ``config.json`` (the HF model config, plus ``quantization_config``) and
  ``hf_quant_config.json``:
  ``{"producer": {...}, "quantization": {"quant_algo": "NVFP4", "group_size": 16,
  "kv_cache_quant_algo": null, "exclude_modules": ["lm_head", ...]}}``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from resetfp4 import __version__
from resetfp4.format.nvfp4 import NVFP4Tensor
from resetfp4.format.spec import BLOCK_SIZE

QUANT_ALGOS = ("NVFP4", "W4A16_NVFP4")
QUANT_CONFIG_FILE = "hf_quant_config.json"
_SHARD_BYTES = 4 << 30
# Dense (not NVFP4) tensors are floating-point values: the HF folders read and the tensors a
# ModelOpt folder keeps unquantized. Anything else (int8 GPTQ/AWQ-style tensors, FP8 exports)
# would be cast to the compute dtype as if it held values, giving garbage.
DENSE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``, for error messages."""
    return str(dtype).removeprefix("torch.")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, malformed or disagrees with its config."""


@dataclass
class NVFP4Checkpoint:
    """A loaded NVFP4 folder.

    ``linears`` maps module prefixes to weights ``[N, K]``; ``input_scales`` maps the
    same prefixes to fp32 0-dim activation scales (W4A4 only); ``dense`` holds every
    other tensor by its full name.
    """

    config: dict
    quant_config: dict
    quant_algo: str
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    linears: dict[str, NVFP4Tensor] = field(default_factory=dict)
    input_scales: dict[str, torch.Tensor] = field(default_factory=dict)


def save_nvfp4_checkpoint(
    out_dir: str | Path,
    *,
    config: dict,
    dense: dict[str, torch.Tensor],
    linears: dict[str, NVFP4Tensor],
    input_scales: dict[str, torch.Tensor] | None = None,
    quant_algo: str = "NVFP4",
    exclude_modules: list[str] | None = None,
    producer_extra: dict | None = None,
    tokenizer_files: list[Path] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an HF folder whose linears are NVFP4 (see the module docstring).

    Args:
        config: the HF ``config.json`` contents (``quantization_config`` is added).
        dense: non-quantized tensors by full name (embeddings, norms, lm_head, biases).
        linears: NVFP4 weights ``[N, K]`` by module prefix.
        input_scales: activation global scales by module prefix; required (one per
            linear) for ``"NVFP4"`` (W4A4), must be empty for ``"W4A16_NVFP4"``.
        exclude_modules: modules left unquantized (default ``["lm_head"]``).
        producer_extra: recorded under ``producer`` (how the checkpoint was made).
        tokenizer_files: files copied next to the weights.
        overwrite: replace a checkpoint already in ``out_dir``: every file it owns is
            deleted first (its ``*.safetensors``, and the names in :data:`CHECKPOINT_FILES`:
            index, configs, ``generation_config.json``, tokenizer and chat-template files), so
            nothing stale (a shard, a ``special_tokens_map.json``) is read with the new model;
            other files (a README, your notes) are left alone. Without it an existing
            checkpoint (``*.safetensors``, index or ``hf_quant_config.json``) is an error.
    """
    if quant_algo not in QUANT_ALGOS:
        raise CheckpointError(f"quant_algo must be one of {QUANT_ALGOS}, got {quant_algo!r}")
    input_scales = dict(input_scales or {})
    if quant_algo == "NVFP4":
        missing = sorted(set(linears) - set(input_scales))
        if missing:
            raise CheckpointError(
                f"W4A4 (NVFP4) needs an input_scale per linear; missing for {missing[:3]}... "
                "calibrate activations first, or save as W4A16_NVFP4")
    elif input_scales:
        raise CheckpointError("W4A16_NVFP4 checkpoints carry no input_scale; drop input_scales")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old = sorted(out.glob("*.safetensors")) + [
        out / n for n in ("model.safetensors.index.json", QUANT_CONFIG_FILE) if (out / n).exists()]
    if old and not overwrite:
        raise CheckpointError(
            f"{out} already holds a checkpoint ({old[0].name}, ...); write to a new folder, "
            "or pass overwrite=True (CLI: --overwrite) to replace it")
    tensors: dict[str, torch.Tensor] = {}
    for name, t in dense.items():
        tensors[name] = t.detach().contiguous().cpu()
    for prefix, w in linears.items():
        if len(w.shape) != 2:
            raise CheckpointError(f"linear {prefix} must be 2-D [N, K], got {tuple(w.shape)}")
        tensors[f"{prefix}.weight"] = w.packed.contiguous().cpu()
        tensors[f"{prefix}.weight_scale"] = w.block_scale.contiguous().cpu()
        tensors[f"{prefix}.weight_scale_2"] = w.global_scale.reshape(()).float().cpu()
        if prefix in input_scales:
            tensors[f"{prefix}.input_scale"] = input_scales[prefix].reshape(()).float().cpu()
    if overwrite:  # only now: a bad argument above leaves the old checkpoint intact
        _remove_checkpoint_files(out)
    _write_shards(out, tensors)
    excl = list(exclude_modules) if exclude_modules is not None else ["lm_head"]
    quant = {"quant_algo": quant_algo, "group_size": BLOCK_SIZE,
             "kv_cache_quant_algo": None, "exclude_modules": excl}
    producer = {"name": "resetfp4", "version": __version__, **(producer_extra or {})}
    (out / QUANT_CONFIG_FILE).write_text(json.dumps({"producer": producer, "quantization": quant},
                                                    indent=2) + "\n")
    cfg = dict(config)
    # config.json's copy: vLLM reads this one before hf_quant_config.json, and its ModelOpt
    # config takes the excluded modules from "ignore" there (ModelOpt's own exports write
    # "ignore"); "exclude_modules" stays for readers of the flat hf_quant_config layout.
    cfg["quantization_config"] = {"quant_method": "modelopt", **quant, "ignore": excl}
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for f in tokenizer_files or []:
        shutil.copy(f, out / Path(f).name)
    return out


# The files a checkpoint folder owns besides its ``*.safetensors``: what
# ``save_nvfp4_checkpoint`` writes, what HF ``save_pretrained`` writes for a causal LM and its
# tokenizer (any tokenizer type), and what ModelOpt exports add. ``overwrite`` deletes these
# (and ``additional_chat_templates/``, the folder transformers keeps extra chat templates in).
CHECKPOINT_FILES = (
    "model.safetensors.index.json", QUANT_CONFIG_FILE, "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
    "chat_template.jinja", "chat_template.json",
)
_CHECKPOINT_DIRS = ("additional_chat_templates",)


def _remove_checkpoint_files(out: Path) -> None:
    """Delete the checkpoint in ``out`` (see ``overwrite`` of :func:`save_nvfp4_checkpoint`)."""
    for f in sorted(out.glob("*.safetensors")) + [out / n for n in CHECKPOINT_FILES]:
        if f.is_file() or f.is_symlink():
            f.unlink()
    for d in _CHECKPOINT_DIRS:
        if (out / d).is_dir() and not (out / d).is_symlink():
            shutil.rmtree(out / d)


def _save_shard(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``save_file`` with its errors as ``OSError`` (safetensors raises its own exception type,
    which names no path), and the file mode a plain ``open`` would give (safetensors creates
    the file 0600, so other users could not read the checkpoint)."""
    try:
        save_file(tensors, str(path), metadata={"format": "pt"})
    except Exception as e:  # safetensors' SafetensorError derives from Exception only
        if isinstance(e, OSError):
            raise
        raise OSError(f"cannot write {path}: {e}; check the folder's permissions and the free "
                      "disk space") from e
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _write_shards(out: Path, tensors: dict[str, torch.Tensor]) -> None:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if size and size + nbytes > _SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    if len(shards) == 1:
        _save_shard(shards[0], out / "model.safetensors")
        return
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        _save_shard(shard, out / fname)
        weight_map.update({n: fname for n in shard})
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2) + "\n")


def read_quant_config(path: str | Path) -> dict:
    """Parse and validate ``hf_quant_config.json`` in folder ``path``."""
    f = Path(path) / QUANT_CONFIG_FILE
    if not f.is_file():
        raise CheckpointError(
            f"{f} not found: not a ModelOpt NVFP4 folder. Make one with `resetfp4 quantize`.")
    try:
        qc = json.loads(f.read_text())
        quant = qc["quantization"]
        algo = quant["quant_algo"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{f} is malformed ({e}); expected "
                              '{"producer": ..., "quantization": {"quant_algo": ...}}') from e
    if algo not in QUANT_ALGOS:
        raise CheckpointError(f"{f}: quant_algo {algo!r} is not supported (supported: {QUANT_ALGOS})")
    gs = quant.get("group_size", BLOCK_SIZE)  # absent: ModelOpt's NVFP4 default
    if isinstance(gs, bool) or not isinstance(gs, int) or gs != BLOCK_SIZE:
        raise CheckpointError(
            f"{f}: quantization.group_size must be the integer {BLOCK_SIZE} (NVFP4 scales blocks of "
            f"{BLOCK_SIZE} weights), got {gs!r}; the file is corrupt or not an NVFP4 export: restore it "
            "from where the folder came from, or re-create the folder with `resetfp4 quantize`")
    excl = quant.get("exclude_modules")
    if excl is not None and not (isinstance(excl, list) and all(isinstance(e, str) for e in excl)):
        raise CheckpointError(f"{f}: exclude_modules must be a list of module names / patterns, got {excl!r}")
    return qc


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of an HF folder: the shards named by ``model.safetensors.index.json``
    when it exists (stale extra ``*.safetensors`` files are never read), else every
    ``*.safetensors`` in ``folder``.

    Raises:
        CheckpointError: a corrupt index. FileNotFoundError: a listed shard is missing, or
        there are no safetensors files at all.
    """
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            data = json.loads(index.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{index} is not valid JSON ({e}); the index file is corrupt") from e
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index} has no 'weight_map' object; the index file is corrupt")
        for name, shard in weight_map.items():
            if not _is_shard_name(shard):
                raise CheckpointError(
                    f"{index}: weight_map[{name!r}] is {shard!r}; each weight_map value must name a "
                    f"*.safetensors shard inside {folder} (a relative path, no '..', not absolute): the "
                    "index file is corrupt; restore it from the original model or re-create the folder")
        files = [folder / n for n in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists {missing}, missing from {folder}; copy all shards")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} has no *.safetensors weights (pickled .bin files are not loaded)")
    return files


def _is_shard_name(shard: object) -> bool:
    """``shard`` (a weight_map value) names a ``*.safetensors`` file inside the folder: a
    relative path, no ``..`` (either separator), no drive."""
    if not isinstance(shard, str) or not shard.endswith(".safetensors"):
        return False
    win = PureWindowsPath(shard)  # splits on "/" and "\\" alike
    return not (PurePosixPath(shard).is_absolute() or win.drive or win.root or ".." in win.parts)


def read_safetensors(files: list[Path]) -> tuple[dict[str, torch.Tensor], dict[str, Path]]:
    """All tensors of ``files`` by name, and the file each came from.

    Raises:
        CheckpointError: a file that safetensors cannot read (truncated or corrupt), or a
        tensor name held by two of the files (which one is meant is unknown).
    """
    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                names = list(fh.keys())
                twice = next((n for n in names if n in origin), None)
                if twice is None:
                    for name in names:
                        tensors[name] = fh.get_tensor(name)
                        origin[name] = f
        except Exception as e:  # safetensors raises its own error types for bad files
            raise CheckpointError(
                f"{f} is not a readable safetensors file ({type(e).__name__}: {e}); it is "
                "truncated or corrupt: re-copy or re-create it") from e
        if twice is not None:
            raise CheckpointError(
                f"tensor {twice!r} is in two weight files, {origin[twice]} and {f}, so which one the model "
                "uses is unknown; a stale or extra *.safetensors file is in the folder (without "
                "model.safetensors.index.json every *.safetensors file there is read): remove the file "
                "that does not belong to this model, or re-create the folder")
    return tensors, origin


def _expect(cond: bool, file: Path, name: str, msg: str) -> None:
    if not cond:
        raise CheckpointError(f"{file}: tensor {name!r} {msg}")


def load_nvfp4_checkpoint(
    path: str | Path, expected_linear_shapes: dict[str, tuple[int, int]] | None = None
) -> NVFP4Checkpoint:
    """Load and validate a folder written by :func:`save_nvfp4_checkpoint` or ModelOpt.

    Args:
        path: the folder.
        expected_linear_shapes: logical ``(N, K)`` per linear prefix, from the model
            architecture; every listed linear must be present with that shape.
    Raises:
        CheckpointError: naming the file, the tensor and the expected shape/dtype.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder")
    qc = read_quant_config(folder)
    algo = qc["quantization"]["quant_algo"]
    cfg_file = folder / "config.json"
    try:
        config = json.loads(cfg_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_file} is missing or not valid JSON ({e})") from e
    tensors, origin = read_safetensors(safetensors_files(folder))
    ckpt = NVFP4Checkpoint(config=config, quant_config=qc, quant_algo=algo)
    prefixes = {n[: -len(".weight_scale")] for n in tensors if n.endswith(".weight_scale")}
    for n, t in tensors.items():
        if n.endswith(".weight") and t.dtype == torch.uint8 and n[:-7] not in prefixes:
            raise CheckpointError(f"{origin[n]}: tensor {n!r} is packed uint8 but "
                                  f"{n[:-7]}.weight_scale is missing")
    for p in sorted(prefixes):
        ckpt.linears[p], scale = _load_linear(p, tensors, origin, algo)
        if scale is not None:
            ckpt.input_scales[p] = scale
    used = {f"{p}.{s}" for p in prefixes for s in ("weight", "weight_scale", "weight_scale_2",
                                                   "input_scale")}
    ckpt.dense = {n: t for n, t in tensors.items() if n not in used}
    for n, t in ckpt.dense.items():
        _expect(t.dtype in DENSE_DTYPES, origin[n], n,
                f"is {dtype_name(t.dtype)}, expected bfloat16, float16 or float32: the tensors a ModelOpt "
                "NVFP4 folder keeps unquantized (embeddings, norms, lm_head, biases) are read as values, "
                "and only those three float types are. Re-create the folder with `resetfp4 quantize` from "
                "the BF16/FP16 original model")
    for p, (n_exp, k_exp) in (expected_linear_shapes or {}).items():
        if p not in ckpt.linears:
            raise CheckpointError(
                f"{folder}: linear {p!r} is missing; expected {p}.weight uint8 "
                f"[{n_exp}, {k_exp // 2}] with its scales")
        got = tuple(ckpt.linears[p].shape)
        if got != (n_exp, k_exp):
            raise CheckpointError(
                f"{origin[p + '.weight']}: tensor {p + '.weight'!r} holds a [{got[0]}, {got[1]}] "
                f"weight (packed [{got[0]}, {got[1] // 2}]) but the config expects "
                f"[{n_exp}, {k_exp}] (packed [{n_exp}, {k_exp // 2}])")
    return ckpt


def _load_linear(p: str, tensors: dict[str, torch.Tensor], origin: dict[str, Path],
                 algo: str) -> tuple[NVFP4Tensor, torch.Tensor | None]:
    ws = f"{p}.weight_scale"
    f = origin[ws]
    for suffix in ("weight", "weight_scale_2") + (("input_scale",) if algo == "NVFP4" else ()):
        _expect(f"{p}.{suffix}" in tensors, f, f"{p}.{suffix}",
                f"is missing (every NVFP4 linear needs it; quant_algo={algo})")
    w, s, g = tensors[f"{p}.weight"], tensors[ws], tensors[f"{p}.weight_scale_2"]
    _expect(w.dtype == torch.uint8 and w.dim() == 2, origin[f"{p}.weight"], f"{p}.weight",
            f"must be uint8 [N, K/2] (packed E2M1 codes), got {dtype_name(w.dtype)} {tuple(w.shape)}")
    n, k = w.shape[0], w.shape[1] * 2
    _expect(s.dtype == torch.float8_e4m3fn, f, ws, f"must be float8_e4m3fn, got {dtype_name(s.dtype)}")
    _expect(k % BLOCK_SIZE == 0 and tuple(s.shape) == (n, k // BLOCK_SIZE), f, ws,
            f"has shape {tuple(s.shape)}; expected [{n}, {k // BLOCK_SIZE}] for weight [{n}, {k}]")
    bits = s.view(torch.uint8)
    n_nan = int(((bits & 0x7F) == 0x7F).sum())  # e4m3fn NaN: exponent and mantissa all ones
    n_neg = int(((bits & 0x80) != 0).sum())  # a block scale is an amax ratio: never negative
    _expect(n_nan == 0 and n_neg == 0, f, ws,
            f"holds {n_nan} NaN and {n_neg} negative block scale(s); the file is corrupt or was "
            "not written by an NVFP4 quantizer: re-create it with `resetfp4 quantize`")
    _expect(g.numel() == 1 and g.dtype == torch.float32, origin[f"{p}.weight_scale_2"],
            f"{p}.weight_scale_2", f"must be a float32 scalar, got {dtype_name(g.dtype)} {tuple(g.shape)}")
    _expect(bool(torch.isfinite(g).all()) and float(g.reshape(())) > 0,
            origin[f"{p}.weight_scale_2"], f"{p}.weight_scale_2",
            f"must be finite and > 0, got {g.reshape(()).item()}")
    scale = None
    if f"{p}.input_scale" in tensors:
        i, fi = tensors[f"{p}.input_scale"], origin[f"{p}.input_scale"]
        _expect(i.numel() == 1 and i.dtype == torch.float32, fi, f"{p}.input_scale",
                f"must be a float32 scalar, got {dtype_name(i.dtype)} {tuple(i.shape)}")
        _expect(bool(torch.isfinite(i).all()) and float(i.reshape(())) > 0, fi, f"{p}.input_scale",
                f"must be finite and > 0, got {i.reshape(()).item()}")
        scale = i.reshape(()).clone()
    return NVFP4Tensor(w, s, g.reshape(()).clone()), scale
