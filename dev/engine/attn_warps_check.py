"""Check decode_attention_fused (Triton path) against the float64 reference for each
SPLIT:COMBINE num_warps pair given (SPLIT sets both the one-tile and the loop split kernel),
at batch 1 (one-tile splits) and 2 (two-tile loop), the Qwen3-8B head layout, with and
without the W4A4 output quantization (session 13's num_warps A/B; GPU only).

    PYTHONPATH=src python3 dev/engine/attn_warps_check.py 4:4 4:1 4:2 8:4
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "engine"))
from test_gpu_attention import REL, _fused_case  # noqa: E402

from resetfp4.engine import attention as A  # noqa: E402
from resetfp4.engine import attention_kernels as ak  # noqa: E402
from resetfp4.engine.act_quant import fake_quant_ref  # noqa: E402
from resetfp4.testing.tolerances import assert_rel_close  # noqa: E402


def main() -> None:
    A.CUDA_ATTENTION = False  # the Triton kernels at every batch
    for spec in sys.argv[1:]:
        split, combine = (int(v) for v in spec.split(":"))
        A.SPLIT_WARPS_ONE_TILE = A.SPLIT_WARPS = split
        ak.COMBINE_WARPS = combine
        for b, seq, max_seq in ((1, 1024, 1024), (1, 640, 700), (2, 2048, 2048)):
            q, k, v, qw, kw, cos, sin, kc, vc, pos = _fused_case(b, 8, 4, 128, seq, max_seq, True,
                                                                  torch.bfloat16, seq + b)
            kc2, vc2 = kc.clone(), vc.clone()
            want = A.decode_attention_fused_ref(q, k, v, qw, kw, 1e-6, cos, sin, kc.clone(), vc.clone(),
                                                pos, seq)
            got = A.decode_attention_fused(q, k, v, qw, kw, 1e-6, cos, sin, kc, vc, pos, seq)
            gs = (want.float().abs().amax() / 2688).reshape(1)
            gq = A.decode_attention_fused(q, k, v, qw, kw, 1e-6, cos, sin, kc2, vc2, pos, seq, out_scale=gs)
            torch.cuda.synchronize()
            assert_rel_close(got.float(), want.float(), REL, f"{spec} b{b} S{seq}")
            quant = fake_quant_ref(got.reshape(-1, 128), gs)
            assert torch.equal(gq.reshape(-1, 128), quant), f"{spec} quantized"
        print(f"warps {spec}: ok", flush=True)


if __name__ == "__main__":
    main()
