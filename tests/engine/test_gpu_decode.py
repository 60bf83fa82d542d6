"""CUDA-graph decode equals eager decode, and a decode step never syncs the host."""

from __future__ import annotations

import pytest
import torch
from tiny_models import random_state, tiny_args

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
    # Both sides round every op to bf16 (2^-8 relative each) but fuse and order them
    # differently (compiled norms, fused projections, the kernels' fp32 sums), and a tiny
    # model's logits go through ~10 such roundings: a few 1e-3 expected, 2e-2 flags a wrong
    # op (O(1)) without tripping on rounding.
    assert rel < 2e-2, f"compiled decode logits differ from eager by {rel:.3g} (relative L2)"


@pytest.mark.parametrize("precision", ["nvfp4-w4a16", "nvfp4-w4a4"])
def test_swiglu_gemv_step_close_to_silu_mul_kernel(precision, monkeypatch):
    """The decode step with SiLU-mul (and, W4A4, its quantization) in the gate/up GEMV's
    epilogue against the step with the separate SiLU-mul kernel (RESETFP4_SWIGLU_GEMV=0):
    the same ops; SiLU's exp and fp32 summation orders differ, so logits agree closely,
    not bitwise."""
    from resetfp4.engine import model as model_mod
    from resetfp4.engine.decode import _compiled

    model = random_model(tiny_args("qwen3", vocab_size=4096), precision, torch.device("cuda"))
    model.setup_cache(2, 64)
    tok = torch.tensor([[3], [4]], device="cuda")
    pos = torch.tensor([[5], [9]], device="cuda")
    logits = []
    for swiglu in (True, False):
        model.unfuse_projections()
        monkeypatch.setattr(model_mod, "_SWIGLU_GEMV", swiglu)
        assert model.fuse_projections() == 2 * model.args.n_layers
        assert all(b.mlp.gate_up_fused.rows_interleaved == swiglu for b in model.model.layers)
        with torch.no_grad():
            logits.append(_compiled(model)(tok, pos, 64))
    rel = ((logits[0] - logits[1]).norm() / logits[1].norm()).item()
    # the same bf16 roundings in another order (see test above): 2e-2 flags a wrong op only
    assert rel < 2e-2, f"SwiGLU GEMV step differs from the SiLU-mul kernel step by {rel:.3g} (relative L2)"


class _WordTokenizer:
    """Stands in for a tokenizer (the device has no ``gguf`` for SmolLM2's): one id per word."""

    eos_token_id = None
    chat_template = None

    def __init__(self, vocab: int):
        self.vocab = vocab

    def get_vocab(self) -> dict[str, int]:
        return {}

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [sum(map(ord, w)) * 31 % self.vocab for w in text.split()]}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(f" w{i}" for i in ids)


def _tiny_engine(precision: str, max_batch: int, refill: bool, compile: bool | None):
    """A tiny CUDA engine (graphs on) over VOCAB ids, every 7th id an EOS (see test_continuous)."""
    from test_continuous import VOCAB

    from resetfp4.engine.engine import Engine
    from resetfp4.engine.model import Transformer

    args = tiny_args("qwen3", vocab_size=VOCAB)
    if precision == "fp32":  # peaked logits (random_model's are near-flat)
        with torch.device("meta"):
            model = Transformer(args, torch.float32)
        state = {k: v.float().cuda() for k, v in random_state(args).items()}
        model.load_state_dict(state, assign=True)
    else:
        model = random_model(args, precision, torch.device("cuda"))
    eng = Engine(model, None, model_name="tiny", precision=precision,
                 max_batch=max_batch, max_seq_len=64, refill=refill, compile=compile)
    eng.tokenizer = _WordTokenizer(VOCAB)  # after the sampler: no step-boundary tables
    eng.eos_ids = set(range(0, VOCAB, 7))
    return eng


@pytest.mark.parametrize("precision", ["bf16", "nvfp4-w4a16"])
@pytest.mark.parametrize("mode", ["greedy", "reset"])
def test_continuous_graphs_equal_static_groups(precision, mode, monkeypatch):
    """Compiled + graphed decode, 22 prompts on 4 slots: refilled slots (per-row history
    index, clamped idle positions, host writes between replays) give every prompt the ids
    of the static groups. Decode steps run the same GEMMs per row (same batch bucket). A
    batched prefill would not: its GEMM M (and the kernel it picks) depends on which rows
    are refilled together, and near-flat random logits then flip a sampled token for some
    weights (session 12: a failure in about one run of four, once the weights differed per
    process). So every prompt is prefilled alone here, in both engines (batched refills are
    covered by the fp32 test below); entropies are still compared to 1e-4 (``_key``)."""
    from test_continuous import CONFIGS, PROMPTS, _key

    from resetfp4.engine import decode

    monkeypatch.setattr(decode, "PREFILL_TOKENS", 1)  # one row per refill prefill chunk
    cfg = CONFIGS[mode]
    cont = _tiny_engine(precision, 4, refill=True, compile=None)
    a = [_key(r) for r in cont.generate(PROMPTS * 2, cfg, 32, chat=False, trace=True)]
    static = _tiny_engine(precision, 4, refill=False, compile=None)
    b = [_key(r) for r in static.generate(PROMPTS * 2, cfg, 32, chat=False, trace=True)]
    assert cont.runner.use_graphs and cont.runner.compiled is not None
    assert [k[0] for k in a] == [k[0] for k in b] and a == b
    assert static.last_stats["prefills"] == 6
    if mode == "reset":  # sampled rows end at EOS at different steps: slots were refilled
        assert cont.last_stats["prefills"] > 6
    assert cont.last_stats["decode_steps"] <= static.last_stats["decode_steps"]


@pytest.mark.parametrize("mode", ["greedy", "fixed", "reset"])
def test_continuous_graphs_equal_one_at_a_time_fp32(mode):
    """fp32 on CUDA with graphs: 11 prompts on 4 slots equal each prompt run alone (batch 1)."""
    from test_continuous import CONFIGS, NEW, PROMPTS, _alone, _key

    eng = _tiny_engine("fp32", 4, refill=True, compile=False)
    got = [_key(r) for r in eng.generate(PROMPTS, CONFIGS[mode], NEW, chat=False, trace=True)]
    assert eng.runner.use_graphs
    assert got == _alone(eng, PROMPTS, CONFIGS[mode], trace=True)


@pytest.mark.parametrize("precision", ["nvfp4-w4a16", "nvfp4-w4a4"])
def test_nvfp4_head_epilogue_runs_on_the_producer(precision, monkeypatch):
    """With an NVFP4 lm_head the compiled decode step's final add + RMSNorm run on the
    act_quant producer (Transformer.epilogue_deferred), so that the head GEMV can preload:
    logits stay within bf16 rounding of the plain epilogue (the norm's fp32 summation order
    differs; W4A4 may move a block's code by one step, hence the 3e-2 relative L2 bound);
    larger batches keep the plain epilogue; the graphed batch-1 step equals the compiled
    eager one token for token."""
    from resetfp4.engine import act_quant
    from resetfp4.engine.model import EPILOGUE_PRODUCER_MAX_ROWS

    model = random_model(tiny_args("qwen3", vocab_size=4096), precision, torch.device("cuda"),
                         lm_head="nvfp4")
    assert model.lm_head.nvfp4
    model.setup_cache(2, 64)
    g = torch.Generator(device="cuda").manual_seed(11)
    dim = model.args.dim
    calls = []
    real = act_quant.add_rmsnorm_quant
    for rows in (1, 3):  # 3 > EPILOGUE_PRODUCER_MAX_ROWS: the plain epilogue
        h = torch.randn(rows, 1, dim, device="cuda", generator=g).to(torch.bfloat16)
        d = torch.randn(rows, 1, dim, device="cuda", generator=g).to(torch.bfloat16)
        with torch.no_grad(), monkeypatch.context() as m:
            want = model.epilogue(h + d)
            m.setattr(act_quant, "add_rmsnorm_quant", lambda *a: calls.append(1) or real(*a))
            got = model.epilogue_deferred(h, d)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert len(calls) == (1 if rows <= EPILOGUE_PRODUCER_MAX_ROWS else 0), rows
        calls.clear()
        rel = ((got - want).norm() / want.norm()).item()
        assert rel < 3e-2, f"producer epilogue differs from the plain one by {rel:.3g} (relative L2)"
    cfg = CONFIGS["reset"]
    prompts = PROMPTS[:1]
    runs = []
    for graphs in (False, True):
        sampler = make_sampler(1, model.args.vocab_size, torch.device("cuda"), None)
        runner = DecodeRunner(model, sampler, graphs, compile=True)
        runner.capture(1, sorted({attn_bucket(len(prompts[0]) + s, model.max_seq_len)
                                  for s in range(1, STEPS)}))
        configure_rows(runner.sampler, [cfg], 1)
        st = runner.prefill(prompts, 1)
        for s in range(1, STEPS):
            runner.decode(st, 1, attn_bucket(len(prompts[0]) + s, model.max_seq_len))
        torch.cuda.synchronize()
        assert runner.compiled is not None, "torch.compile fell back to eager (see stderr)"
        runs.append(st.hist_ids[:1, :STEPS].tolist())
    assert runs[0] == runs[1]
