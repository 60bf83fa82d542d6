"""GPU-only: zero host syncs, CUDA-graph capture + replay, oracle equality on the device."""

from __future__ import annotations

import pytest
import torch

from resetfp4.sampling import BatchSampler, BoundaryTables, SamplerConfig, entropy, reset_temperatures

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

V = 151_936  # Qwen3 vocabulary
B = 8
TEXTS = ["a", "\n", "\n\n", "x\n\n"] + ["w"] * (V - 4)


def make(device="cuda") -> BatchSampler:
    s = BatchSampler(B, V, device, BoundaryTables.from_token_texts(TEXTS, "toy"))
    modes = ["reset", "reset", "fixed", "greedy", "reset", "reset", "fixed", "reset"]
    for b, m in enumerate(modes):
        s.configure(b, SamplerConfig(mode=m, tau0=0.5 + 0.2 * b, window=1 + 3 * b, top_k=50 * (b % 3),
                                     min_p=0.02 * (b % 2)), seed=1000 + b)
    return s


def logits_stream(n: int, device="cuda") -> list[torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.randn(B, V, device=device, generator=g) * 3
        x[:, :4] += 8  # boundary tokens compete with the bulk
        out.append(x)
    return out


def test_zero_host_syncs():
    s = make()
    xs = logits_stream(4)
    s.step(xs[0])  # warm-up: lazy CUDA init / allocator growth happens outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x in xs[1:]:
            s.step(x)
            s.step(x.bfloat16())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_cuda_graph_capture_with_a_model_step_equals_eager():
    xs = logits_stream(12)
    eager = make()
    want = [(eager.step(x).clone(), eager.last_temperature.clone()) for x in xs]

    s = make()
    w = torch.randn(V, 64, device="cuda")  # a stand-in "lm_head" (hidden is zero: logits = bias)
    hidden = torch.zeros(B, 64, device="cuda")
    bias = torch.zeros(B, V, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
        (hidden @ w.T + bias).sum()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        logits = hidden @ w.T + bias  # the model step
        out = s.step(logits)
    s2 = make()  # capture ran the step once on s's state: use a fresh state set for replay
    _copy_state(s2, s)
    got = []
    for x in xs:
        hidden.zero_()
        bias.copy_(x)
        graph.replay()
        got.append((out.clone(), s.last_temperature.clone()))
    for (ids_w, t_w), (ids_g, t_g) in zip(want, got, strict=True):
        assert torch.equal(ids_w, ids_g)
        assert torch.equal(t_w, t_g)


def _copy_state(dst: BatchSampler, src: BatchSampler) -> None:
    """Restore ``src`` to ``dst``'s fresh state in place (graph buffers must keep their address)."""
    for name, val in vars(dst).items():
        if isinstance(val, torch.Tensor):
            getattr(src, name).copy_(val)
    for name, val in vars(dst.state).items():
        if isinstance(val, torch.Tensor):
            getattr(src.state, name).copy_(val)


def test_device_step_matches_oracle_and_cpu():
    xs = logits_stream(40)
    s, c = make(), make("cpu")
    hs, ids, temps = [], [], []
    for x in xs:
        ids.append(s.step(x).clone())
        hs.append(entropy(x))
        temps.append(s.last_temperature.clone())
        assert torch.equal(c.step(x.cpu()), ids[-1].cpu())  # same keys, same draws on CPU
    hs, ids, temps = torch.stack(hs).cpu(), torch.stack(ids).cpu(), torch.stack(temps).cpu()
    for b in (0, 1, 4, 5, 7):
        toks = ids[:, b].tolist()
        starts = [t >= 1 and (TEXTS[toks[t - 1]].count("\n\n") > 0 or
                              (t >= 2 and TEXTS[toks[t - 1]] == TEXTS[toks[t - 2]] == "\n"))
                  for t in range(len(toks))]
        want = reset_temperatures(hs[:, b], torch.tensor(starts), t_low=0.1, tau0=0.5 + 0.2 * b,
                                  window=1 + 3 * b)
        assert torch.equal(temps[:, b], want), b
