"""Model hyper-parameters: :class:`ModelArgs` from HF ``config.json``, GGUF metadata or a preset."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

# HF ``model_type`` / GGUF ``general.architecture`` -> our architecture name.
ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
# RoPE variants the engine implements: plain rotate-half RoPE with one base frequency.
_PLAIN_ROPE = (None, "default", "none")


def _unsupported_rope(rope_type: Any, where: str) -> ValueError:
    return ValueError(
        f"{where}: RoPE scaling type {rope_type!r} is not supported (only plain RoPE, rope_type "
        "'default'); this model (e.g. Llama-3.1 'llama3', YaRN, linear/dynamic scaling) would "
        "load with wrong positions. Use a model without RoPE scaling"
    )


def check_hf_rope(cfg: dict[str, Any]) -> None:
    """Refuse ``rope_scaling`` / ``rope_parameters`` with a rope type other than default."""
    for key in ("rope_scaling", "rope_parameters"):
        rs = cfg.get(key)
        if not isinstance(rs, dict):
            continue
        rope_type = rs.get("rope_type", rs.get("type"))
        if rope_type not in _PLAIN_ROPE:
            raise _unsupported_rope(rope_type, f"config.json {key}")


# HF activation names the engine's MLP computes (transformers' ACT2FN maps both to SiLU).
_SILU = ("silu", "swish")
# transformers' Qwen2/Qwen3 config defaults, for the sliding-window check.
_HF_SLIDING_WINDOW = 4096
_HF_MAX_WINDOW_LAYERS = 28
_CANNOT_SERVE = "this model cannot be served by resetfp4"


def check_hf_activation(cfg: dict[str, Any], where: str) -> None:
    """Refuse an MLP activation other than SiLU (``hidden_act``, or Gemma-style
    ``hidden_activation``); absent means SiLU, transformers' default for these models."""
    for key in ("hidden_act", "hidden_activation"):
        if key in cfg and cfg[key] not in _SILU:
            raise ValueError(
                f"{where}: {key} {cfg[key]!r} is not supported: the engine's MLP runs SiLU "
                f"({key} 'silu' or 'swish') only, so it would compute a different model; {_CANNOT_SERVE}"
            )


def check_hf_sliding_window(cfg: dict[str, Any], n_layers: int, max_position: int, where: str) -> None:
    """Refuse Qwen2/Qwen3 sliding-window attention where transformers applies it: with
    ``use_sliding_window`` true, a ``sliding_window`` below ``max_position_embeddings`` and at
    least one layer of type ``sliding_attention`` (``layer_types``, else the layers from
    ``max_window_layers`` on). ``use_sliding_window: false`` (as Qwen2.5 ships) is full attention."""
    use = cfg.get("use_sliding_window") or False
    if not isinstance(use, bool):
        raise ValueError(f"{where}: use_sliding_window must be true or false, got {use!r}; {_HF_FIX}")
    window = cfg.get("sliding_window", _HF_SLIDING_WINDOW)
    if not use or window is None:
        return
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"{where}: sliding_window must be a positive integer or null, got {window!r}; "
                         f"{_HF_FIX}")
    if window >= max_position:
        return  # no sequence is longer than the window: the same as full attention
    types = cfg.get("layer_types")
    if isinstance(types, list):
        sliding = [i for i, t in enumerate(types) if t == "sliding_attention"]
    else:
        first = cfg.get("max_window_layers", _HF_MAX_WINDOW_LAYERS)
        if isinstance(first, bool) or not isinstance(first, int):
            raise ValueError(f"{where}: max_window_layers must be an integer, got {first!r}; {_HF_FIX}")
        sliding = list(range(max(first, 0), n_layers))
    if sliding:
        raise ValueError(
            f"{where}: use_sliding_window is true with sliding_window {window} < max_position_embeddings "
            f"{max_position}, so transformers runs sliding-window attention on {len(sliding)} of the "
            f"{n_layers} layers (from layer {sliding[0]}); sliding-window attention is not supported: "
            f"the engine runs full causal attention on every layer and would compute a different model "
            f"for prompts longer than {window} tokens; {_CANNOT_SERVE}"
        )


@dataclass(frozen=True)
class _Source:
    """Raw model-config values (``config.json`` or GGUF metadata) read with range checks. Errors
    name ``where`` (the file), the key (after ``label``) and ``fix``, what to do."""

    values: dict[str, Any]
    where: str
    fix: str  # for one bad value
    fix_fields: str  # for values that disagree
    label: str = ""  # "metadata key " for GGUF: "<file>: metadata key llama.block_count must be ..."

    def error(self, key: str, want: str, value: Any) -> ValueError:
        return ValueError(f"{self.where}: {self.label}{key} must be {want}, got {value!r}; {self.fix}")

    def pos_int(self, key: str, default: Any = None) -> int:
        """``values[key]`` as an int >= 1 (``default`` when absent or null and not None, as HF
        reads ``num_key_value_heads: null``); KeyError when absent without a default. An
        integral float (``2.0``) is accepted; bools are not."""
        v = self.values[key] if default is None else self.values.get(key)
        if v is None and default is not None:
            v = default
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise self.error(key, "a positive integer", v)
        return v

    def pos_float(self, key: str, v: Any) -> float:
        """``v`` (the value of ``key``) as a finite float > 0; strings and booleans are refused."""
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise self.error(key, "a finite number > 0", v)
        return float(v)

    def token_id(self, key: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self.error(key, "a token id (an integer >= 0)", v)
        return v


# ModelArgs field -> config.json key, for the checks both sources share (_checked_sizes).
_HF_KEYS = {
    "dim": "hidden_size", "n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim", "n_layers": "num_hidden_layers", "intermediate_size": "intermediate_size",
    "max_position": "max_position_embeddings", "norm_eps": "rms_norm_eps",
}


def _gguf_keys(arch: str, fields: dict[str, Any]) -> dict[str, str]:
    """ModelArgs field -> GGUF metadata key. The head size is ``attention.key_length``, else
    ``rope.dimension_count`` (llama.cpp writes one or the other), else hidden / heads."""
    p = f"{arch}."
    head_dim = next((k for k in (p + "attention.key_length", p + "rope.dimension_count") if fields.get(k)),
                    p + "attention.key_length")
    return {
        "dim": p + "embedding_length", "n_heads": p + "attention.head_count",
        "n_kv_heads": p + "attention.head_count_kv", "head_dim": head_dim, "n_layers": p + "block_count",
        "intermediate_size": p + "feed_forward_length", "max_position": p + "context_length",
        "norm_eps": p + "attention.layer_norm_rms_epsilon",
        # (messages only) the keys a head size may come from
        "head_dim_keys": f"{p}attention.key_length or {p}rope.dimension_count",
    }


def _checked_sizes(src: _Source, keys: dict[str, str]) -> dict[str, Any]:
    """The ModelArgs sizes both config sources give (``keys``: field -> key in ``src``), checked
    alike: sizes are positive integers, the heads divide the hidden size unless a head size is
    given, the KV heads divide the heads, ``norm_eps`` is a finite number > 0. KeyError: a
    required key is absent."""
    k = {f: src.label + key for f, key in keys.items()}  # as named in messages
    dim = src.pos_int(keys["dim"])
    n_heads = src.pos_int(keys["n_heads"])
    n_kv = src.pos_int(keys["n_kv_heads"], default=n_heads)
    head_dim = src.values.get(keys["head_dim"]) or 0
    if head_dim:
        head_dim = src.pos_int(keys["head_dim"])
    elif dim % n_heads:
        absent = keys.get("head_dim_keys", keys["head_dim"])
        raise ValueError(f"{src.where}: {k['dim']} {dim} is not a multiple of {k['n_heads']} {n_heads} "
                         f"(and there is no {absent}); {src.fix_fields}")
    if n_heads % n_kv:
        raise ValueError(f"{src.where}: {k['n_heads']} {n_heads} is not a multiple of {k['n_kv_heads']} "
                         f"{n_kv}; {src.fix_fields}")
    return {
        "dim": dim, "n_heads": n_heads, "n_kv_heads": n_kv, "head_dim": head_dim,
        "n_layers": src.pos_int(keys["n_layers"]),
        "intermediate_size": src.pos_int(keys["intermediate_size"]),
        "max_position": src.pos_int(keys["max_position"], default=32768),
        "norm_eps": src.pos_float(keys["norm_eps"], src.values.get(keys["norm_eps"], 1e-6)),
    }


_HF_FIX = "fix that field of the model's config"
_GGUF_FIX = ("the file's metadata is wrong: re-download the file, or convert the original model again "
             "(llama.cpp's convert_hf_to_gguf.py)")


@dataclass(frozen=True)
class ModelArgs:
    """Decoder-only transformer shape (Llama / Qwen2 / Qwen3 families).

    ``arch`` picks the variant: ``qwen2`` has a bias on q/k/v, ``qwen3`` has an RMSNorm
    over each head of q and k (applied before RoPE). All use rotate-half RoPE on HF
    weight layouts (GGUF llama Q/K rows are un-permuted on load).
    """

    arch: str
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    intermediate_size: int
    head_dim: int = 0
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    max_position: int = 32768
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES.values():
            raise ValueError(
                f"unknown architecture {self.arch!r}; supported: {sorted(ARCHITECTURES)} "
                "(Llama, Qwen2, Qwen3 decoder-only models)"
            )
        sizes = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "intermediate_size")
        bad = {n: getattr(self, n) for n in sizes if getattr(self, n) < 1}
        if bad or self.head_dim < 0:
            raise ValueError(f"model sizes must be >= 1 (head_dim >= 0: 0 = dim // n_heads), got "
                             f"{bad or {'head_dim': self.head_dim}}")
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")

    @property
    def qkv_bias(self) -> bool:
        return self.arch == "qwen2"

    @property
    def qk_norm(self) -> bool:
        return self.arch == "qwen3"

    def to_hf_config(self) -> dict[str, Any]:
        """A minimal HF ``config.json`` dict that :meth:`from_hf_config` reads back."""
        model_type = self.arch
        cls = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
        cfg: dict[str, Any] = {
            "architectures": [cls[self.arch]],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "intermediate_size": self.intermediate_size,
            "head_dim": self.head_dim,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.norm_eps,
            "tie_word_embeddings": self.tie_embeddings,
            "max_position_embeddings": self.max_position,
            "hidden_act": "silu",
            "torch_dtype": "bfloat16",
        }
        if self.bos_token_id is not None:
            cfg["bos_token_id"] = self.bos_token_id
        if self.eos_token_ids:
            eos = list(self.eos_token_ids)
            cfg["eos_token_id"] = eos[0] if len(eos) == 1 else eos
        return cfg

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], where: str = "config.json") -> ModelArgs:
        """Read an HF ``config.json`` dict (Llama/Qwen2/Qwen3 causal LMs); ``where`` names the
        file in error messages. Sizes must be positive integers, the attention heads must
        divide the hidden size (unless ``head_dim`` is given) and the KV heads must divide the
        heads; ``rope_theta`` and ``rms_norm_eps`` must be finite numbers > 0. Variants the
        engine does not compute are refused: RoPE scaling, an activation other than SiLU, and
        (Qwen2/Qwen3) sliding-window attention in effect."""
        if not isinstance(cfg, dict):
            raise ValueError(
                f"{where} holds a JSON {type(cfg).__name__}, not an object; it must be the model's "
                "HF config ({\"model_type\": ..., \"hidden_size\": ...}): restore it from the original model"
            )
        mt = cfg.get("model_type")
        if mt not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture: {where} has model_type={mt!r} "
                f"(architectures={cfg.get('architectures')}); supported model types: {sorted(ARCHITECTURES)}"
            )
        check_hf_rope(cfg)
        check_hf_activation(cfg, where)
        src = _Source(cfg, where, _HF_FIX, _HF_FIX.replace("that field", "those fields"))
        try:
            sizes = _checked_sizes(src, _HF_KEYS)
            if mt in ("qwen2", "qwen3"):  # HF Llama has no sliding window: its keys are ignored
                check_hf_sliding_window(cfg, sizes["n_layers"], sizes["max_position"], where)
            eos = cfg.get("eos_token_id")
            eos_list = eos if isinstance(eos, list) else ([] if eos is None else [eos])
            bos = cfg.get("bos_token_id")
            rp = cfg.get("rope_parameters")
            rope = cfg.get("rope_theta", (rp if isinstance(rp, dict) else {}).get("rope_theta", 10000.0))
            tie = cfg.get("tie_word_embeddings", False)
            if not isinstance(tie, bool):
                raise src.error("tie_word_embeddings", "true or false", tie)
            return cls(
                arch=ARCHITECTURES[mt],
                vocab_size=src.pos_int("vocab_size"),
                rope_theta=src.pos_float("rope_theta", rope),
                tie_embeddings=tie,
                bos_token_id=None if bos is None else src.token_id("bos_token_id", bos),
                eos_token_ids=tuple(src.token_id("eos_token_id", e) for e in eos_list),
                **sizes,
            )
        except KeyError as e:
            raise ValueError(
                f"{where} lacks the required key {e.args[0]!r}; is it a causal-LM config?"
            ) from e

    @classmethod
    def from_gguf_fields(cls, fields: dict[str, Any], vocab_size: int, tied: bool,
                         where: str = "the GGUF file") -> ModelArgs:
        """Read GGUF metadata (already converted to Python values by the loader); ``where``
        names the file in error messages. The values are checked as :meth:`from_hf_config`
        checks config.json's (errors name the metadata key); ``vocab_size`` and ``tied`` come
        from the file's tensors."""
        arch = fields.get("general.architecture")
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture: {where} has GGUF general.architecture={arch!r}; "
                f"supported: {sorted(ARCHITECTURES)}"
            )
        p = f"{arch}."
        rope_type = fields.get(p + "rope.scaling.type")
        if rope_type not in _PLAIN_ROPE:
            raise _unsupported_rope(rope_type, f"{where}: GGUF {p}rope.scaling.type")
        src = _Source(fields, where, _GGUF_FIX, _GGUF_FIX, label="metadata key ")
        try:
            sizes = _checked_sizes(src, _gguf_keys(arch, fields))
            bos = fields.get("tokenizer.ggml.bos_token_id")
            eos = fields.get("tokenizer.ggml.eos_token_id")
            return cls(
                arch=ARCHITECTURES[arch],
                vocab_size=vocab_size,
                rope_theta=src.pos_float(p + "rope.freq_base", fields.get(p + "rope.freq_base", 10000.0)),
                tie_embeddings=tied,
                bos_token_id=None if bos is None else src.token_id("tokenizer.ggml.bos_token_id", bos),
                eos_token_ids=() if eos is None else (src.token_id("tokenizer.ggml.eos_token_id", eos),),
                **sizes,
            )
        except KeyError as e:
            raise ValueError(
                f"{where}: GGUF metadata lacks {e.args[0]!r}; the file may be corrupt or not a causal LM"
            ) from e

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Published shapes (HF config.json of each model).
PRESETS: dict[str, ModelArgs] = {
    "qwen3-8b": ModelArgs("qwen3", 151936, 4096, 36, 32, 8, 12288, 128, 1e6, 1e-6, False, 40960),
    "qwen3-14b": ModelArgs("qwen3", 151936, 5120, 40, 40, 8, 17408, 128, 1e6, 1e-6, False, 40960),
    "qwen3-32b": ModelArgs("qwen3", 151936, 5120, 64, 64, 8, 25600, 128, 1e6, 1e-6, False, 40960),
    "qwen2.5-coder-0.5b": ModelArgs("qwen2", 151936, 896, 24, 14, 2, 4864, 64, 1e6, 1e-6, True, 32768),
    "qwen2.5-coder-1.5b": ModelArgs("qwen2", 151936, 1536, 28, 12, 2, 8960, 128, 1e6, 1e-6, True, 32768),
    "smollm2-135m": ModelArgs("llama", 49152, 576, 30, 9, 3, 1536, 64, 1e5, 1e-5, True, 8192),
}


def preset(name: str, **overrides: Any) -> ModelArgs:
    """A named preset, optionally with fields replaced (e.g. ``n_layers=2`` for tests)."""
    if name not in PRESETS:
        raise ValueError(f"unknown architecture preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)
