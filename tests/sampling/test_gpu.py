"""GPU-only: zero host syncs, CUDA-graph capture, Triton == torch paths == oracle on the device."""

from __future__ import annotations

import pytest
import torch

from resetfp4.sampling import (
    BatchSampler,
    BoundaryTables,
    SamplerConfig,
    reset_temperatures,
    triton_available,
)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
needs_triton = pytest.mark.skipif(not triton_available(), reason="needs the triton package")
# "triton" selects candidates with the logit histogram, "triton:topk" with torch.topk
IMPLS = [pytest.param("triton", marks=needs_triton), pytest.param("triton:topk", marks=needs_triton),
         "torch", "sort"]

V = 151_936  # Qwen3 vocabulary
B = 8
TEXTS = ["a", "\n", "\n\n", "x\n\n"] + ["w"] * (V - 4)
MODES = ["reset", "reset", "fixed", "greedy", "reset", "reset", "fixed", "reset"]


def make(device="cuda", impl="auto", track=True) -> BatchSampler:
    impl, _, select = impl.partition(":")
    s = BatchSampler(B, V, device, BoundaryTables.from_token_texts(TEXTS, "toy"), impl=impl,
                     track_entropy=track, select=select or "hist")
    for b, m in enumerate(MODES):
        m = m if track or m != "reset" else "fixed"
        s.configure(b, SamplerConfig(mode=m, tau0=0.5 + 0.2 * b, window=1 + 3 * b, top_k=50 * (b % 3),
                                     min_p=0.02 * (b % 2)), seed=1000 + b)
    return s


def logits_stream(n: int, device="cuda") -> list[torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.randn(B, V, device=device, generator=g) * 2 - 4
        x[:, :64] += 6 + 8 * torch.rand(B, 64, device=device, generator=g)  # LM-like head
        x[:, :4] += 2  # boundary tokens compete with the head
        out.append(x)
    return out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("track", [True, False])
def test_zero_host_syncs(impl, track):
    s = make(impl=impl, track=track)
    xs = logits_stream(3)
    s.step(xs[0])  # warm-up: lazy CUDA init / kernel compilation happen outside the check
    s.step(xs[0].bfloat16())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x in xs[1:]:
            s.step(x)
            s.step(x.bfloat16())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.parametrize("impl", IMPLS[:3])
def test_cuda_graph_capture_with_a_model_step_equals_eager(impl):
    xs = logits_stream(12)
    eager = make(impl=impl)
    want = [(eager.step(x).clone(), eager.last_temperature.clone()) for x in xs]

    s = make(impl=impl)
    w = torch.randn(V, 64, device="cuda")  # a stand-in "lm_head" (hidden is zero: logits = bias)
    hidden = torch.zeros(B, 64, device="cuda")
    bias = torch.zeros(B, V, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
        (hidden @ w.T + bias).sum()
        s.step(xs[0])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        logits = hidden @ w.T + bias  # the model step
        out = s.step(logits)
    _copy_state(make(impl=impl), s)  # warm-up and capture ran steps on s: restore a fresh state
    got = []
    for x in xs:
        hidden.zero_()
        bias.copy_(x)
        graph.replay()
        got.append((out.clone(), s.last_temperature.clone()))
    for (ids_w, t_w), (ids_g, t_g) in zip(want, got, strict=True):
        assert torch.equal(ids_w, ids_g)
        assert torch.equal(t_w, t_g)


def _copy_state(src: BatchSampler, dst: BatchSampler) -> None:
    """Copy ``src``'s state into ``dst`` in place (graph buffers must keep their address)."""
    for name, val in vars(src).items():
        if isinstance(val, torch.Tensor):
            getattr(dst, name).copy_(val)
    for name, val in vars(src.state).items():
        if isinstance(val, torch.Tensor):
            getattr(dst.state, name).copy_(val)


def _expected_starts(toks: list[int]) -> list[bool]:
    def nl2(t: int) -> bool:
        return t >= 2 and TEXTS[toks[t - 1]] == TEXTS[toks[t - 2]] == "\n"

    return [t >= 1 and ("\n\n" in TEXTS[toks[t - 1]] or nl2(t)) for t in range(len(toks))]


@pytest.mark.parametrize("impl", IMPLS)
def test_device_step_matches_oracle(impl):
    """Temperatures == reset_temperatures on the sampler's own entropies and boundaries."""
    s = make(impl=impl)
    hs, ids, temps = [], [], []
    for x in logits_stream(40):
        ids.append(s.step(x).clone())
        hs.append(s.last_entropy.clone())
        temps.append(s.last_temperature.clone())
    hs, ids, temps = torch.stack(hs).cpu(), torch.stack(ids).cpu(), torch.stack(temps).cpu()
    for b in (0, 1, 4, 5, 7):
        toks = ids[:, b].tolist()
        want = reset_temperatures(hs[:, b], torch.tensor(_expected_starts(toks)), t_low=0.1,
                                  tau0=0.5 + 0.2 * b, window=1 + 3 * b)
        assert torch.equal(temps[:, b], want), b
    assert int(s.truncated.sum()) == 0  # the LM-like head keeps every nucleus inside K


@needs_triton
@pytest.mark.parametrize("select", ["hist", "topk"])
@pytest.mark.parametrize("track", [True, False])
def test_triton_equals_torch_path_and_cpu(track, select):
    tri, tor = make(impl=f"triton:{select}", track=track), make(impl="torch", track=track)
    cpu = make("cpu", track=track)
    tri.fast["hist"].fill_(1 << 20)  # poison: each step's _finalize_kernel clears its rows
    for i, x in enumerate(logits_stream(30)):
        if i == 7:
            x[1, 5] = float("nan")
            x[2] = float("-inf")
        x = x.bfloat16() if i % 4 == 3 else x
        a, b, c = tri.step(x).clone(), tor.step(x).clone(), cpu.step(x.cpu()).clone()
        assert torch.equal(a, b) and torch.equal(a.cpu(), c), i
        assert torch.equal(tri.last_temperature, tor.last_temperature), i
        assert torch.equal(tri.last_error, tor.last_error) and torch.equal(tri.last_start, tor.last_start)
        if track:
            torch.testing.assert_close(tri.last_entropy, tor.last_entropy, atol=1e-5, rtol=1e-5,
                                       equal_nan=True)
        else:
            assert torch.isnan(tri.last_entropy).all()
    assert torch.equal(tri.error, tor.error) and torch.equal(tri.counter, tor.counter)


@needs_triton
@pytest.mark.parametrize("select", ["hist", "topk"])
def test_triton_truncation_counter_matches_torch(select):
    """Flat rows (nucleus beyond K=64) are counted identically by both candidate paths."""
    mk = [BatchSampler(B, V, "cuda", impl="triton", candidates=64, select=select),
          BatchSampler(B, V, "cuda", impl="torch", candidates=64)]
    for s in mk:
        for b in range(B):
            s.configure(b, SamplerConfig(mode="fixed", temperature=1.0, top_k=[0, 10, 0, 100][b % 4]), seed=b)
    x = torch.randn(B, V, device="cuda")  # flat: top-64 holds far less than 0.95 of the mass
    for _ in range(3):
        a, b = mk[0].step(x), mk[1].step(x)
        assert torch.equal(a[1::4], b[1::4])  # the exact rows (top-k 10 <= candidates)
        if select == "topk":  # same K candidates: even truncated rows draw alike
            assert torch.equal(a, b)
    assert mk[0].truncated.tolist() == mk[1].truncated.tolist() == [3, 0, 3, 3] * 2
