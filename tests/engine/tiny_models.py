"""Tiny random models for engine tests (importable helpers; fixtures live in conftest)."""

from __future__ import annotations

import torch

from resetfp4.engine.config import ModelArgs

SMOL_VOCAB = 49152


def tiny_args(arch: str, **kw) -> ModelArgs:
    """A 2-layer model with the SmolLM2 vocabulary; every K a multiple of 16 (NVFP4 blocks)."""
    base = dict(
        arch=arch,
        vocab_size=SMOL_VOCAB,
        dim=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        intermediate_size=96,
        head_dim=16,
        rope_theta=10000.0,
        norm_eps=1e-6,
        tie_embeddings=arch != "qwen3",
        max_position=512,
        bos_token_id=1,
        eos_token_ids=(2,),
    )
    base.update(kw)
    return ModelArgs(**base)


def random_state(args: ModelArgs, seed: int = 0) -> dict[str, torch.Tensor]:
    """HF-named random bf16 weights (norm weights around 1, biases nonzero)."""
    from resetfp4.engine.model import Transformer

    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        m = Transformer(args, torch.float32)
    out = {}
    for name, p in m.named_parameters():
        if args.tie_embeddings and name == "lm_head.weight":
            continue
        if "norm" in name:
            t = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        else:
            t = torch.randn(p.shape, generator=g) * (0.5 if "embed" in name else 0.08)
        out[name] = t.to(torch.bfloat16)
    return out
