"""CUDA-graph decode equals eager decode, and a decode step never syncs the host."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_args

from resetfp4.engine.build import random_model
from resetfp4.engine.decode import DecodeRunner, attn_bucket, graph_safe
from resetfp4.engine.sampling_glue import configure_rows, make_sampler, reset_config
from resetfp4.sampling import PAPER_PARAMS, SamplerConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CONFIGS = {"greedy": SamplerConfig(mode="greedy"), "reset": reset_config(PAPER_PARAMS["qwen3-8b"], seed=7)}
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]
STEPS = 12


def _run(model, cfg: SamplerConfig, graphs: bool, compile: bool = False) -> list[list[int]]:
    sampler = make_sampler(2, model.args.vocab_size, torch.device("cuda"), None)
    runner = DecodeRunner(model, sampler, graphs, compile=compile)
    longest = max(map(len, PROMPTS))
    runner.capture(2, sorted({attn_bucket(longest + s, model.max_seq_len) for s in range(1, STEPS)}))
    configure_rows(runner.sampler, [cfg, cfg], 2)
    st = runner.prefill(PROMPTS, 2)
    for s in range(1, STEPS):
        runner.decode(st, 2, attn_bucket(longest + s, model.max_seq_len))
    torch.cuda.synchronize()
    assert runner.use_graphs == graphs
    assert (runner.compiled is not None) == compile, "torch.compile fell back to eager (see stderr)"
    return st.hist_ids[:, :STEPS].tolist()


@pytest.mark.parametrize("precision", ["bf16", "nvfp4-w4a16", "nvfp4-w4a4"])
@pytest.mark.parametrize("mode", ["greedy", "reset"])
def test_graph_decode_equals_eager(precision, mode):
    model = random_model(tiny_args("qwen3", vocab_size=4096), precision, torch.device("cuda"))
    if precision.startswith("nvfp4"):
        assert graph_safe(model), "NVFP4 linears must use the CUDA kernels on GPU"
    model.setup_cache(2, 64)
    assert _run(model, CONFIGS[mode], graphs=False) == _run(model, CONFIGS[mode], graphs=True)


@pytest.mark.parametrize("precision", ["bf16", "nvfp4-w4a4"])
def test_decode_step_has_no_host_sync(precision):
    model = random_model(tiny_args("qwen2", vocab_size=4096), precision, torch.device("cuda"))
    model.setup_cache(2, 64)
    runner = DecodeRunner(model, make_sampler(2, 4096, torch.device("cuda"), None), use_graphs=False)
    configure_rows(runner.sampler, [CONFIGS["reset"]] * 2, 2)
    st = runner.prefill(PROMPTS, 2)
    runner.decode(st, 2, 64)  # warm-up: lazy workspaces (attn_len = the whole 64-position cache)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            runner.decode(st, 2, 64)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert int(st.step) == 5


@pytest.mark.parametrize("precision", ["bf16", "nvfp4-w4a16", "nvfp4-w4a4"])
def test_compiled_graph_decode_equals_compiled_eager(precision):
    """The default CUDA path: fused q/k/v + gate/up, regional torch.compile, CUDA graph."""
    model = random_model(tiny_args("qwen3", vocab_size=4096), precision, torch.device("cuda"))
    model.setup_cache(2, 64)
    cfg = CONFIGS["reset"]
    assert _run(model, cfg, graphs=False, compile=True) == _run(model, cfg, graphs=True, compile=True)
    # Random NVFP4 weights share one global scale, so they fuse too (exactly).
    assert model.fuse_projections() == 2 * model.args.n_layers


@pytest.mark.parametrize("precision", ["bf16", "nvfp4-w4a16"])
def test_compiled_logits_close_to_eager(precision):
    """Inductor's fusion only changes bf16 rounding (fp32 inside fused elementwise chains)."""
    from resetfp4.engine.decode import _compiled

    model = random_model(tiny_args("qwen3", vocab_size=4096), precision, torch.device("cuda"))
    model.setup_cache(2, 64)
    model.fuse_projections()
    tok = torch.tensor([[3], [4]], device="cuda")
    pos = torch.tensor([[5], [9]], device="cuda")
    with torch.no_grad():
        want = model(tok, pos, 64)
        got = _compiled(model)(tok, pos, 64)
    rel = ((got - want).norm() / want.norm()).item()
    assert rel < 2e-2, f"compiled decode logits differ from eager by {rel:.3g} (relative L2)"
