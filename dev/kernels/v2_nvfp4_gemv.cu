// NVFP4 small-M linear (M = 1..16) for sm_80 / sm_90, no FP4 hardware needed (v2).
//
// y[m, n] = (sum_k x[m, k] * e2m1(c[n, k]) * fp32(s[n, k/16])) * g_w * g_x + bias[n]
// (g_x = 1 for W4A16; W4A4 feeds the exact e2m1 * block-scale activations from
// nvfp4_aux.cu and folds the activation global scale g_x into the epilogue).
//
// Layout and decode: see nvfp4_common.cuh. Work split ("stream-K"): the NG*KS units
// (64 rows x 16 K) form one contiguous byte stream; CTA c of G takes units
// [c*per, min(T, (c+1)*per)), so every CTA streams the same number of bytes, whatever N
// and K are. Inside a CTA one producer warp copies stages of kStageUnits units into shared
// memory with bulk copies (cp.async.bulk + mbarrier complete_tx on sm_90, cp.async on
// sm_80), kStages deep; 8 consumer warps take alternate units of each stage, decode the
// codes to bf16/fp16 in registers and run mma.sync m16n8k16 with the weights as the A
// operand (16 rows x 16 K) and x^T as B (16 K x 8 batch rows; a second mma for M > 8).
// Where a CTA's range crosses a row-group boundary, its 8 warps reduce in shared memory
// and either write y (the group lies wholly in this CTA) or a partial slot; the last CTA
// of a split group (atomic counter) sums the slots in CTA order, so the result is
// deterministic, writes y and resets the counter for the next launch / graph replay.
#include "nvfp4_common.cuh"

#include <cstdlib>

namespace resetfp4 {

constexpr int kConsumerWarps = 8;
constexpr int kThreads = (kConsumerWarps + 1) * 32;  // + one producer warp
constexpr int kStageUnits = 16;                      // 9 KB per stage (8 KB codes, 1 KB scales)
constexpr int kStages = 6;                           // 54 KB in flight per CTA, 2 CTAs per SM
constexpr int kRedFloats = kConsumerWarps * 16 * kRowsPerGroup;
constexpr size_t kSmemBytes = (size_t)kStages * kStageUnits * (kUnitCodeBytes + kUnitScaleBytes) +
                              kRedFloats * sizeof(float) + 2 * kStages * sizeof(uint64_t) + 16;

struct GemvArgs {
  const void* x;          // T [M, K]
  const uint8_t* codes;   // [NG*KS][512]
  const uint8_t* scales;  // [NG*KS][64]
  const float* g_w;       // fp32 [1]
  const float* g_x;       // fp32 [1] or null
  const void* bias;       // T [N] or null
  void* y;                // T [M, N]
  float* partial;         // fp32 [G + NG][16][64]
  int* counter;           // int [NG], zero at rest
  int M, N, KS, per, total;
};

__device__ __forceinline__ void named_bar() {  // the 8 consumer warps only
  asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumerWarps * 32) : "memory");
}

// Producer warp: stream the CTA's units [u0, u0 + nl) into the stage ring.
__device__ __forceinline__ void produce(const GemvArgs& a, uint8_t* s_codes, uint8_t* s_scales,
                                        uint64_t* full, uint64_t* empty, int u0, int nl,
                                        int lane) {
  const int nst = (nl + kStageUnits - 1) / kStageUnits;
  for (int k = 0; k < nst; ++k) {
    const int slot = k % kStages;
    if (k >= kStages) mbar_wait(&empty[slot], ((k / kStages) - 1) & 1);
    const int lo = k * kStageUnits, cnt = min(kStageUnits, nl - lo);
    const uint8_t* gc = a.codes + (size_t)(u0 + lo) * kUnitCodeBytes;
    const uint8_t* gs = a.scales + (size_t)(u0 + lo) * kUnitScaleBytes;
    uint8_t* dc = s_codes + (size_t)slot * kStageUnits * kUnitCodeBytes;
    uint8_t* ds = s_scales + (size_t)slot * kStageUnits * kUnitScaleBytes;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (lane == 0) {
      const uint32_t cb = cnt * kUnitCodeBytes, sb = cnt * kUnitScaleBytes;
      asm volatile("{\n .reg .b64 st;\n mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n"
                   ::"r"(smem_addr(&full[slot])), "r"(cb + sb) : "memory");
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes "
                   "[%0], [%1], %2, [%3];\n"
                   ::"r"(smem_addr(dc)), "l"(gc), "r"(cb), "r"(smem_addr(&full[slot])) : "memory");
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes "
                   "[%0], [%1], %2, [%3];\n"
                   ::"r"(smem_addr(ds)), "l"(gs), "r"(sb), "r"(smem_addr(&full[slot])) : "memory");
    }
#else
    for (int i = lane; i < cnt * (kUnitCodeBytes / 16); i += 32)
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n"
                   ::"r"(smem_addr(dc + 16 * i)), "l"(gc + 16 * i) : "memory");
    for (int i = lane; i < cnt * (kUnitScaleBytes / 16); i += 32)
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n"
                   ::"r"(smem_addr(ds + 16 * i)), "l"(gs + 16 * i) : "memory");
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n"
                 ::"r"(smem_addr(&full[slot])) : "memory");
#endif
  }
#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// B fragment (x^T, 16 K x 8 batch rows starting at row r0) for K step st.
template <typename T>
__device__ __forceinline__ uint2 load_b(const T* __restrict__ x, int M, int K, int r0, int st,
                                        int g, int t) {
  const int r = r0 + g;
  if (r >= M) return make_uint2(0u, 0u);
  const uint32_t* p = reinterpret_cast<const uint32_t*>(x + (size_t)r * K + st * 16 + 2 * t);
  return make_uint2(__ldg(p), __ldg(p + 4));
}

// One unit: 4 tiles of 16 rows, each one (or two) mma.
template <typename T, bool kTwoHalves>
__device__ __forceinline__ void unit_mma(float (&acc)[2][4][4], uint4 q, uint2 sc, uint2 b,
                                         uint2 b2) {
  using Tr = Traits<T>;
  const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t sw = j < 2 ? sc.x : sc.y;
    const uint32_t s2 = (j % 2 == 0) ? decode_scales<T, 0, 1>(sw) : decode_scales<T, 2, 3>(sw);
    const uint32_t sg = __byte_perm(s2, s2, 0x1010);   // row 16j+g, both halves
    const uint32_t sg8 = __byte_perm(s2, s2, 0x3232);  // row 16j+g+8
    uint32_t h[4];
    decode_word(words[j], h);
    const uint32_t a[4] = {Tr::weight(h[0], sg), Tr::weight(h[1], sg8), Tr::weight(h[2], sg),
                           Tr::weight(h[3], sg8)};
    mma_16816(acc[0][j], a, b.x, b.y, (T*)nullptr);
    if constexpr (kTwoHalves) mma_16816(acc[1][j], a, b2.x, b2.y, (T*)nullptr);
  }
}

template <typename T>
__device__ __forceinline__ void store_y(const GemvArgs& a, int m, int n, float r) {
  using Tr = Traits<T>;
  const float factor = Tr::kOutScale * __ldg(a.g_w) * (a.g_x ? __ldg(a.g_x) : 1.0f);
  float v = r * factor;
  if (a.bias) v += Tr::to_float(reinterpret_cast<const T*>(a.bias)[n]);
  reinterpret_cast<T*>(a.y)[(size_t)m * a.N + n] = Tr::from_float(v);
}

// End of this CTA's part of row group ng: reduce the 8 warps, then write y or a partial.
template <typename T, bool kTwoHalves>
__device__ void flush(const GemvArgs& a, float (&acc)[2][4][4], float* red, int* flag, int ng,
                      int warp, int lane) {
  const int g = lane / 4, t = lane % 4, tid = warp * 32 + lane;
  float* r = red + warp * 16 * kRowsPerGroup;
  // C fragment: acc[h][j][0..1] = row 16j+g, batch 8h+2t+{0,1}; [2..3] = row 16j+g+8.
#pragma unroll
  for (int h = 0; h < (kTwoHalves ? 2 : 1); ++h)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int m = 8 * h + 2 * t, n = 16 * j + g;
      r[m * kRowsPerGroup + n] = acc[h][j][0];
      r[(m + 1) * kRowsPerGroup + n] = acc[h][j][1];
      r[m * kRowsPerGroup + n + 8] = acc[h][j][2];
      r[(m + 1) * kRowsPerGroup + n + 8] = acc[h][j][3];
      acc[h][j][0] = acc[h][j][1] = acc[h][j][2] = acc[h][j][3] = 0.f;
    }
  named_bar();
  const int c = blockIdx.x, KS = a.KS;
  const int c_first = ng * KS / a.per, c_last = ((ng + 1) * KS - 1) / a.per;
  const int items = a.M * kRowsPerGroup;
  if (c_first == c_last) {  // the whole row group is ours
    for (int i = tid; i < items; i += kConsumerWarps * 32) {
      float s = 0.f;
#pragma unroll
      for (int w = 0; w < kConsumerWarps; ++w) s += red[w * 16 * kRowsPerGroup + i];
      const int n = ng * kRowsPerGroup + i % kRowsPerGroup;
      if (n < a.N) store_y<T>(a, i / kRowsPerGroup, n, s);
    }
  } else {
    float* mine = a.partial + (size_t)(c + ng) * 16 * kRowsPerGroup;  // unique per segment
    for (int i = tid; i < items; i += kConsumerWarps * 32) {
      float s = 0.f;
#pragma unroll
      for (int w = 0; w < kConsumerWarps; ++w) s += red[w * 16 * kRowsPerGroup + i];
      __stcg(mine + i, s);
    }
    __threadfence();
    named_bar();
    if (tid == 0) *flag = (atomicAdd(a.counter + ng, 1) == c_last - c_first);
    named_bar();
    if (*flag) {
      __threadfence();
      for (int i = tid; i < items; i += kConsumerWarps * 32) {
        float s = 0.f;
        for (int cc = c_first; cc <= c_last; ++cc)  // fixed order: deterministic
          s += __ldcg(a.partial + (size_t)(cc + ng) * 16 * kRowsPerGroup + i);
        const int n = ng * kRowsPerGroup + i % kRowsPerGroup;
        if (n < a.N) store_y<T>(a, i / kRowsPerGroup, n, s);
      }
      if (tid == 0) a.counter[ng] = 0;  // ready for the next launch / graph replay
    }
  }
  named_bar();  // red and flag are reused by the next flush
}

template <typename T, bool kTwoHalves>
__global__ void __launch_bounds__(kThreads, 2) gemv_kernel(const GemvArgs a) {
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* s_codes = smem;
  uint8_t* s_scales = s_codes + kStages * kStageUnits * kUnitCodeBytes;
  float* red = reinterpret_cast<float*>(s_scales + kStages * kStageUnits * kUnitScaleBytes);
  uint64_t* full = reinterpret_cast<uint64_t*>(red + kRedFloats);
  uint64_t* empty = full + kStages;
  int* flag = reinterpret_cast<int*>(empty + kStages);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int u0 = blockIdx.x * a.per, nl = min(a.per, a.total - u0);
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
      mbar_init(&full[s], 1);   // the producer's arrive.expect_tx
#else
      mbar_init(&full[s], 32);  // one cp.async arrive per producer lane
#endif
      mbar_init(&empty[s], kConsumerWarps);
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
  }
  __syncthreads();
  pdl_launch_dependents();
  if (warp == kConsumerWarps) {  // weights are constant: stream them before pdl_wait
    produce(a, s_codes, s_scales, full, empty, u0, nl, lane);
    return;
  }
  pdl_wait();  // x, g_x, y, partial, counter: only after the previous kernel finished
  const T* x = reinterpret_cast<const T*>(a.x);
  const int K = a.KS * 16;
  float acc[2][4][4];
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[h][j][0] = acc[h][j][1] = acc[h][j][2] = acc[h][j][3] = 0.f;
  int cur_ng = u0 / a.KS;
  int next_b = (cur_ng + 1) * a.KS - u0;  // local index of the next row-group start
  const int nst = (nl + kStageUnits - 1) / kStageUnits;
  for (int k = 0; k < nst; ++k) {
    const int slot = k % kStages;
    mbar_wait(&full[slot], (k / kStages) & 1);
    const int lo = k * kStageUnits, hi = min(nl, lo + kStageUnits);
    const uint8_t* sc_base = s_codes + (size_t)slot * kStageUnits * kUnitCodeBytes;
    const uint8_t* ss_base = s_scales + (size_t)slot * kStageUnits * kUnitScaleBytes;
    if (next_b >= hi) {  // common case: no group boundary in this stage; 2 units per warp
      uint4 q[2];
      uint2 sc[2], b[2], b2[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int l = lo + warp + 8 * i;
        if (l < hi) {
          const int st = u0 + l - cur_ng * a.KS;
          q[i] = *reinterpret_cast<const uint4*>(sc_base + (l - lo) * kUnitCodeBytes + lane * 16);
          sc[i] = *reinterpret_cast<const uint2*>(ss_base + (l - lo) * kUnitScaleBytes + g * 8);
          b[i] = load_b(x, a.M, K, 0, st, g, t);
          b2[i] = kTwoHalves ? load_b(x, a.M, K, 8, st, g, t) : make_uint2(0u, 0u);
        }
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
        if (lo + warp + 8 * i < hi) unit_mma<T, kTwoHalves>(acc, q[i], sc[i], b[i], b2[i]);
    } else {  // a row-group boundary inside: go unit by unit
      for (int l = lo; l < hi; ++l) {
        if (l == next_b) {
          flush<T, kTwoHalves>(a, acc, red, flag, cur_ng, warp, lane);
          ++cur_ng;
          next_b += a.KS;
        }
        if ((l & 7) == warp) {
          const int st = u0 + l - cur_ng * a.KS;
          const uint4 q = *reinterpret_cast<const uint4*>(sc_base + (l - lo) * kUnitCodeBytes + lane * 16);
          const uint2 sc = *reinterpret_cast<const uint2*>(ss_base + (l - lo) * kUnitScaleBytes + g * 8);
          const uint2 b2 = kTwoHalves ? load_b(x, a.M, K, 8, st, g, t) : make_uint2(0u, 0u);
          unit_mma<T, kTwoHalves>(acc, q, sc, load_b(x, a.M, K, 0, st, g, t), b2);
        }
      }
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[slot]);
  }
  flush<T, kTwoHalves>(a, acc, red, flag, cur_ng, warp, lane);
}

// ---- host launcher (plain C++: the binding passes the current stream) ----

static bool use_pdl() {  // programmatic dependent launch: sm_90+, RESETFP4_NO_PDL=1 disables
  static const bool on = [] {
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
      return false;
    const char* off = std::getenv("RESETFP4_NO_PDL");
    return major >= 9 && !(off && off[0] == '1');
  }();
  return on;
}

template <typename T, bool kTwoHalves>
static cudaError_t launch_kernel(const GemvArgs& a, int grid, cudaStream_t stream) {
  auto* kern = gemv_kernel<T, kTwoHalves>;
  static cudaError_t attr = cudaFuncSetAttribute(
      kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kSmemBytes);
  if (attr != cudaSuccess) return attr;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = kSmemBytes;
  cfg.stream = stream;
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = at;
  cfg.numAttrs = use_pdl() ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kern, a);
}

// ctas: the wanted number of CTAs (2 per SM); partial must hold >= G + NG slots of 16x64.
template <typename T>
cudaError_t launch_gemv(const void* x, const void* codes, const void* scales, const float* g_w,
                        const float* g_x, const void* bias, void* y, float* partial, int* counter,
                        int M, int N, int K, int ctas, cudaStream_t stream) {
  if (M < 1 || M > 16 || K % 16 != 0 || K < 16 || N < 1 || ctas < 1) return cudaErrorInvalidValue;
  const int NG = (N + kRowsPerGroup - 1) / kRowsPerGroup, KS = K / 16;
  const long long total = (long long)NG * KS;
  if (total > (1ll << 30)) return cudaErrorInvalidValue;
  const int per = (int)((total + ctas - 1) / ctas);
  const int grid = (int)((total + per - 1) / per);  // no empty CTA
  const GemvArgs a{x, (const uint8_t*)codes, (const uint8_t*)scales, g_w, g_x, bias, y,
                   partial, counter, M, N, KS, per, (int)total};
  return M > 8 ? launch_kernel<T, true>(a, grid, stream) : launch_kernel<T, false>(a, grid, stream);
}

template cudaError_t launch_gemv<__nv_bfloat16>(const void*, const void*, const void*,
    const float*, const float*, const void*, void*, float*, int*, int, int, int, int, cudaStream_t);
template cudaError_t launch_gemv<__half>(const void*, const void*, const void*, const float*,
    const float*, const void*, void*, float*, int*, int, int, int, int, cudaStream_t);

}  // namespace resetfp4
