// Torch binding for nvfp4_gemv.cu + nvfp4_aux.cu (built only on CUDA machines by build.py).
// Shapes, dtypes and devices are validated in resetfp4/kernels/nvfp4_gemv.py; here we
// only pass pointers, the current stream, and turn CUDA error codes into messages.
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

namespace resetfp4 {
template <typename T>
cudaError_t launch_gemv(const void*, const void*, const float*, const float*, const void*,
                        void*, int, int, int, int, int, bool, bool, const float*, cudaStream_t);
template <typename T>
cudaError_t launch_quant_act(const void*, size_t, const float*, unsigned int*, float*, void*,
                             uint8_t*, uint8_t*, cudaStream_t);
int gemv_pair_mode();
int gemv_wide_mode();
int gemv_pf2_mode();
template <typename T>
cudaError_t launch_decode_attention(const void*, const void*, const void*, const void*, const void*,
                                    const void*, const void*, void*, void*, const long long*, void*,
                                    const float*, const long long*, float, float, int, int, int, int,
                                    int, int, int, int, int, cudaStream_t);
template <typename T>
cudaError_t launch_dequant(const void*, const float*, void*, int, int, cudaStream_t);
}  // namespace resetfp4

// Errors go back to Python as a message ("" = success), which raises them: no C++
// exception crosses the extension boundary.
static std::string check(cudaError_t e, const char* what, int64_t m, int64_t n, int64_t k) {
  if (e == cudaSuccess) return std::string();
  return std::string(what) + " failed for (M=" + std::to_string(m) + ", N=" + std::to_string(n) +
         ", K=" + std::to_string(k) + "): " + cudaGetErrorString(e) +
         " (constraints: 1 <= M <= 16, K % 16 == 0, N >= 1; a cluster size > 1 needs sm_90; the "
              "tiles per cluster must fit shared memory)";
}

static const float* opt_ptr(const c10::optional<torch::Tensor>& t) {
  return t.has_value() ? t->data_ptr<float>() : nullptr;
}

// y [M, N] = x @ W^T (swiglu = false), or y [M, N/2] = silu(gate) * up of the gate/up-interleaved
// W (swiglu = true; quantized with g_q when given): see launch_gemv.
static std::string gemv_any(torch::Tensor x, torch::Tensor packed, torch::Tensor g_w,
          c10::optional<torch::Tensor> g_x, c10::optional<torch::Tensor> bias, torch::Tensor y,
          int64_t N, int64_t cluster, int64_t tiles_per_cluster, bool exact, bool swiglu,
          c10::optional<torch::Tensor> g_q) {
  const int64_t M = x.size(0), K = x.size(1);
  auto stream = at::cuda::getCurrentCUDAStream(x.get_device()).stream();
  const void* b = bias.has_value() ? bias->data_ptr() : nullptr;
  cudaError_t e;
  if (x.scalar_type() == at::kBFloat16)
    e = resetfp4::launch_gemv<__nv_bfloat16>(x.data_ptr(), packed.data_ptr(),
        g_w.data_ptr<float>(), opt_ptr(g_x), b, y.data_ptr(), M, N, K, cluster,
        tiles_per_cluster, exact, swiglu, opt_ptr(g_q), stream);
  else
    e = resetfp4::launch_gemv<__half>(x.data_ptr(), packed.data_ptr(),
        g_w.data_ptr<float>(), opt_ptr(g_x), b, y.data_ptr(), M, N, K, cluster,
        tiles_per_cluster, exact, swiglu, opt_ptr(g_q), stream);
  return check(e, swiglu ? "nvfp4 gemv (swiglu)" : "nvfp4 gemv", M, N, K);
}

std::string gemv(torch::Tensor x, torch::Tensor packed, torch::Tensor g_w,
          c10::optional<torch::Tensor> g_x, c10::optional<torch::Tensor> bias, torch::Tensor y,
          int64_t cluster, int64_t tiles_per_cluster, bool exact) {
  return gemv_any(x, packed, g_w, g_x, bias, y, y.size(1), cluster, tiles_per_cluster, exact,
                  false, c10::nullopt);
}

// h [M, I]: the gate/up weight has N = 2I rows.
std::string gemv_swiglu(torch::Tensor x, torch::Tensor packed, torch::Tensor g_w,
          c10::optional<torch::Tensor> g_x, c10::optional<torch::Tensor> g_q,
          c10::optional<torch::Tensor> bias, torch::Tensor h, int64_t tiles_per_cluster, bool exact) {
  return gemv_any(x, packed, g_w, g_x, bias, h, 2 * h.size(1), 1, tiles_per_cluster, exact, true,
                  g_q);
}

std::string quant_act(torch::Tensor x, c10::optional<torch::Tensor> gs_static, torch::Tensor sync,
               torch::Tensor gs_out, torch::Tensor xq, torch::Tensor codes, torch::Tensor scales) {
  auto stream = at::cuda::getCurrentCUDAStream(x.get_device()).stream();
  auto* sy = reinterpret_cast<unsigned int*>(sync.data_ptr<int>());
  auto* c = codes.data_ptr<uint8_t>();
  auto* s = reinterpret_cast<uint8_t*>(scales.data_ptr());
  cudaError_t e;
  if (x.scalar_type() == at::kBFloat16)
    e = resetfp4::launch_quant_act<__nv_bfloat16>(x.data_ptr(), x.numel(), opt_ptr(gs_static),
        sy, gs_out.data_ptr<float>(), xq.data_ptr(), c, s, stream);
  else
    e = resetfp4::launch_quant_act<__half>(x.data_ptr(), x.numel(), opt_ptr(gs_static),
        sy, gs_out.data_ptr<float>(), xq.data_ptr(), c, s, stream);
  return check(e, "nvfp4 activation quantization", x.size(0), 0, x.size(1));
}

std::string dequant(torch::Tensor packed, torch::Tensor g_w, torch::Tensor w) {
  const int64_t N = w.size(0), K = w.size(1);
  auto stream = at::cuda::getCurrentCUDAStream(w.get_device()).stream();
  cudaError_t e;
  if (w.scalar_type() == at::kBFloat16)
    e = resetfp4::launch_dequant<__nv_bfloat16>(packed.data_ptr(),
        g_w.data_ptr<float>(), w.data_ptr(), N, K, stream);
  else
    e = resetfp4::launch_dequant<__half>(packed.data_ptr(),
        g_w.data_ptr<float>(), w.data_ptr(), N, K, stream);
  return check(e, "nvfp4 dequant", 0, N, K);
}

// Decode attention in one cluster kernel (sm_90; decode_attention.cu). Shapes, dtypes,
// strides and devices are checked in resetfp4/engine/attention.py.
std::string decode_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                             c10::optional<torch::Tensor> qw, c10::optional<torch::Tensor> kw,
                             torch::Tensor cos, torch::Tensor sin, torch::Tensor kc, torch::Tensor vc,
                             torch::Tensor pos, torch::Tensor out, c10::optional<torch::Tensor> out_scale,
                             double eps, double sm_scale, int64_t seq, int64_t splits, int64_t chunk,
                             int64_t pre) {
  auto stream = at::cuda::getCurrentCUDAStream(q.get_device()).stream();
  const int64_t B = q.size(0), h_kv = kc.size(1), D = kc.size(3);
  const int64_t rep = q.size(1) / (h_kv * D);
  const long long st[10] = {q.stride(0), k.stride(0), v.stride(0), cos.stride(0), sin.stride(0),
                            kc.stride(0), kc.stride(1), out.stride(0), out.stride(1), out.stride(2)};
  const void* qwp = qw.has_value() ? qw->data_ptr() : nullptr;
  const void* kwp = kw.has_value() ? kw->data_ptr() : nullptr;
  const auto* pp = reinterpret_cast<const long long*>(pos.data_ptr<int64_t>());
  cudaError_t e;
  if (q.scalar_type() == at::kBFloat16)
    e = resetfp4::launch_decode_attention<__nv_bfloat16>(q.data_ptr(), k.data_ptr(), v.data_ptr(), qwp,
        kwp, cos.data_ptr(), sin.data_ptr(), kc.data_ptr(), vc.data_ptr(), pp, out.data_ptr(),
        opt_ptr(out_scale), st, (float)eps, (float)sm_scale, B, h_kv, rep, D, seq, kc.size(2), splits,
        chunk, pre, stream);
  else
    e = resetfp4::launch_decode_attention<__half>(q.data_ptr(), k.data_ptr(), v.data_ptr(), qwp,
        kwp, cos.data_ptr(), sin.data_ptr(), kc.data_ptr(), vc.data_ptr(), pp, out.data_ptr(),
        opt_ptr(out_scale), st, (float)eps, (float)sm_scale, B, h_kv, rep, D, seq, kc.size(2), splits,
        chunk, pre, stream);
  if (e == cudaSuccess) return std::string();
  return std::string("decode attention (cluster kernel) failed for B=") + std::to_string(B) +
         " H_kv=" + std::to_string(h_kv) + " rep=" + std::to_string(rep) + " D=" + std::to_string(D) +
         " attn_len=" + std::to_string(seq) + " splits=" + std::to_string(splits) + ": " +
         cudaGetErrorString(e) + " (needs sm_90, D 64 or 128, rep <= 16, splits <= 16)";
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gemv", &gemv, "NVFP4 small-M linear (M <= 16), writes y in place");
  m.def("gemv_swiglu", &gemv_swiglu,
        "silu(gate) * up of a gate/up-interleaved NVFP4 weight (M <= 16), writes h in place");
  m.def("gemv_pair_mode", &resetfp4::gemv_pair_mode,
        "RESETFP4_GEMV_PAIR as read: 1 pair bodies for M <= 8 (default), 0 none");
  m.def("gemv_wide_mode", &resetfp4::gemv_wide_mode,
        "RESETFP4_GEMV_WIDE as read: 1 the 2-CTA/SM build for M <= 8 grids of <= 2 CTAs per SM "
        "(default), 0 never");
  m.def("gemv_pf2_mode", &resetfp4::gemv_pf2_mode,
        "RESETFP4_GEMV_PF2 as read: 1 the two-body L2 prefetch where a warp streams >= 7 one-tile "
        "bodies at M <= 8 (default), 0 never");
  m.def("decode_attention", &decode_attention,
        "decode attention from raw q/k/v (norm, RoPE, cache write) in one cluster kernel (sm_90)");
  m.def("quant_act", &quant_act, "NVFP4 activation quantization, no host sync");
  m.def("dequant", &dequant, "dequantize a repacked NVFP4 weight into w [N, K]");
}
