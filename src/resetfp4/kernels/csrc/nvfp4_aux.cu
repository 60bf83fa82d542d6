// NVFP4 helper kernels: activation quantization for W4A4 (bit-exact with
// resetfp4.nvfp4.quantize, one launch) and dequantization of the repacked weight
// (large-M path). Layout: see nvfp4_common.cuh.
#include "nvfp4_common.cuh"

#include <algorithm>

namespace resetfp4 {

// amax(|x|) across the whole grid, in one launch: each CTA reduces its blocks, then a
// grid-wide barrier on sync[1] (all CTAs are resident: the grid is at most 128
// CTAs of 1024 threads, all started before any dependent kernel may start). The last CTA to
// leave resets sync[0..2] to zero for the next launch / graph replay.
// sync: uint32 [4] = {amax bits, arrived, left, unused}, zero at rest.
// cta_only: every CTA has seen all of x (small x, see launch_quant_act): no global sync.
__device__ float grid_amax(float m, unsigned int* sync, bool cta_only) {
  __shared__ float wmax[32];
  __shared__ float result;
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (threadIdx.x % 32 == 0) wmax[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < (int)(blockDim.x / 32); ++w) m = fmaxf(m, wmax[w]);
    result = m;
  }
  if (cta_only || gridDim.x == 1) {
    __syncthreads();
    return result;
  }
  if (threadIdx.x == 0) {
    // Non-negative floats order like their bit patterns, so an integer max is exact.
    atomicMax(&sync[0], __float_as_uint(m));
    __threadfence();
    atomicAdd(&sync[1], 1u);
    while (*reinterpret_cast<volatile unsigned int*>(&sync[1]) < gridDim.x) {
    }
    __threadfence();
    result = __uint_as_float(*reinterpret_cast<volatile unsigned int*>(&sync[0]));
    __threadfence();
    if (atomicAdd(&sync[2], 1u) == gridDim.x - 1) sync[0] = sync[1] = sync[2] = 0u;
  }
  __syncthreads();
  return result;
}

// Quantize element pair p (elements 2p, 2p+1) of x like resetfp4.nvfp4.quantize (global
// scale gs). The 8 pairs of a 16-element block sit on 8 consecutive lanes aligned to 8
// (the caller guarantees it), which share the block amax through 3 shuffles; every lane
// of the warp must call this (shuffles), `active` says whether its pair exists (all 8
// lanes of a block agree).
template <typename T>
__device__ __forceinline__ void quant_pair(const T* __restrict__ x, size_t p, bool active,
                                           float gs, T* __restrict__ xq,
                                           uint8_t* __restrict__ codes,
                                           uint8_t* __restrict__ scales) {
  float v0 = 0.f, v1 = 0.f;
  if (active) {
    const uint32_t raw = __ldg(reinterpret_cast<const unsigned int*>(x) + p);
    const T* e = reinterpret_cast<const T*>(&raw);
    v0 = Traits<T>::to_float(e[0]);
    v1 = Traits<T>::to_float(e[1]);
  }
  float bmax = fmaxf(fabsf(v0), fabsf(v1));
#pragma unroll
  for (int o = 1; o < 8; o <<= 1) bmax = fmaxf(bmax, __shfl_xor_sync(0xffffffffu, bmax, o));
  float bs32 = bmax / (6.0f * gs);
  if (bs32 == 0.f) bs32 = 1.0f;
  const __nv_fp8_storage_t s8 = __nv_cvt_float_to_fp8(bs32, __NV_SATFINITE, __NV_E4M3);
  const float bsf = e4m3_value(s8);
  const float d = bsf * gs;
  const uint32_t c0 = e2m1_rne(v0 / d), c1 = e2m1_rne(v1 / d);
  if (active) {
    T out[2] = {Traits<T>::from_float(e2m1_value(c0) * bsf),
                Traits<T>::from_float(e2m1_value(c1) * bsf)};
    reinterpret_cast<unsigned int*>(xq)[p] = *reinterpret_cast<const unsigned int*>(out);
    codes[p] = (uint8_t)(c0 | (c1 << 4));
    if (p % 8 == 0) scales[p / 8] = s8;
  }
}

// Dynamic scale: up to this many elements of x (64 KB of bf16: M = 8 at K = 4096), every CTA
// recomputes the amax from all of x (L2 hits) instead of a grid-wide reduction (atomics and
// a spin).
constexpr int kCtaAmaxMaxElems = 1 << 15;

// One thread per element pair (a grid-stride loop beyond the grid). xq gets e2m1(code) *
// fp32(bs) (exact in T); the global scale goes to *gs_out for the GEMV epilogue. With
// programmatic dependent launch it starts while the previous kernel drains, and the GEMV
// after it already streams its weights meanwhile.
template <typename T>
__global__ void __launch_bounds__(1024) quant_act_kernel(
    const T* __restrict__ x, size_t numel, const float* __restrict__ gs_static,
    unsigned int* __restrict__ sync, float* __restrict__ gs_out, T* __restrict__ xq,
    uint8_t* __restrict__ codes, uint8_t* __restrict__ scales, bool cta_amax) {
  pdl_launch_dependents();
  pdl_wait();  // x is the previous kernel's output
  const size_t n_pairs = numel / 2, stride = (size_t)gridDim.x * blockDim.x;
  const size_t first = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  float gs;
  if (gs_static) {
    gs = __ldg(gs_static);
  } else {
    float m = 0.f;
    if (cta_amax) {  // pass 1: all of x, 16 bytes per thread per step, 8 loads in flight
      const uint4* xv = reinterpret_cast<const uint4*>(x);
      const size_t nv = numel / 8;
#pragma unroll 8
      for (size_t v = threadIdx.x; v < nv; v += blockDim.x) {
        const uint4 raw = __ldg(xv + v);
        const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int i = 0; i < 8; ++i) m = fmaxf(m, fabsf(Traits<T>::to_float(e[i])));
      }
    } else {  // pass 1: this thread's pairs
      for (size_t p = first; p < n_pairs; p += stride) {
        const uint32_t raw = __ldg(reinterpret_cast<const unsigned int*>(x) + p);
        const T* e = reinterpret_cast<const T*>(&raw);
        m = fmaxf(m, fmaxf(fabsf(Traits<T>::to_float(e[0])), fabsf(Traits<T>::to_float(e[1]))));
      }
    }
    const float amax = grid_amax(m, sync, cta_amax);
    // 2688 = 6 * 448. True IEEE division, as resetfp4.nvfp4.quantize computes it.
    gs = amax > 0.f ? __fdiv_rn(amax, 2688.0f) : 1.0f;
  }
  if (first == 0) *gs_out = gs;
  // pass 2: the same number of rounds for every thread (whole warps reach the shuffles);
  // blockDim and stride are multiples of 32, so pair p sits on lane p % 32.
  const size_t rounds = (n_pairs + stride - 1) / stride;
  for (size_t r = 0; r < rounds; ++r) {
    const size_t p = first + r * stride;
    quant_pair<T>(x, p, p < n_pairs, gs, xq, codes, scales);
  }
}

// Code of register r (a0..a3), half h of a layout word (bit positions: nvfp4_common.cuh).
__device__ __forceinline__ uint32_t code_at(uint32_t word, int r, int h) {
  const int pos[4][4] = {{0, 1, 2, 9}, {6, 7, 8, 15}, {10, 11, 12, 19}, {4, 5, 14, 13}};
  uint32_t c = 0;
#pragma unroll
  for (int b = 0; b < 4; ++b) c |= ((word >> ((pos[r][b] + 16 * h) & 31)) & 1u) << b;
  return c;
}

// One thread per (unit, lane): writes the 32 weights of w [N, K] that lane holds.
template <typename T>
__global__ void dequant_kernel(const uint8_t* __restrict__ packed, const float* __restrict__ g_w,
                               T* __restrict__ w, int N, int K) {
  const int KC = (K + kChunkK - 1) / kChunkK;
  const size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  const size_t total = (size_t)((N + kTileRows - 1) / kTileRows) * KC * 32;
  if (idx >= total) return;
  const int lane = idx % 32, g = lane / 4, t = lane % 4;
  const size_t u = idx / 32;
  const int chunk = u % KC, tile = u / KC;
  const int k0 = chunk * kChunkK + 16 * t;
  if (k0 >= K) return;  // K padding
  const uint4 q = reinterpret_cast<const uint4*>(packed + u * kUnitBytes)[lane];
  const uint8_t* sc = packed + u * kUnitBytes + kUnitCodeBytes + 2 * lane;
  const uint32_t words[4] = {q.x, q.y, q.z, q.w};
  const float gw = *g_w;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int n = tile * kTileRows + g + 8 * (r & 1);
    if (n >= N) continue;
    const float scale = e4m3_value(sc[r & 1]) * gw;
#pragma unroll
    for (int s = 0; s < 4; ++s)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int k = k0 + 4 * s + 2 * (r >> 1) + h;
        w[(size_t)n * K + k] = Traits<T>::from_float(e2m1_value(code_at(words[s], r, h)) * scale);
      }
  }
}

// ---- host launchers ----

template <typename T>
cudaError_t launch_quant_act(const void* x, size_t numel, const float* gs_static,
                             unsigned int* sync, float* gs_out, void* xq, uint8_t* codes,
                             uint8_t* scales, cudaStream_t stream) {
  if (numel % 16 != 0 || numel == 0) return cudaErrorInvalidValue;
  const size_t pairs = numel / 2;
  // Static scale, or a small x whose amax every CTA can afford to recompute (it reads x from
  // L2; decode sizes): no grid-wide step, one pair per thread in 256-thread CTAs.
  const bool cta_amax = !gs_static && numel <= (size_t)kCtaAmaxMaxElems;
  if (gs_static || cta_amax) {
    const size_t threads = 256;
    const unsigned blocks = (unsigned)std::min<size_t>((pairs + threads - 1) / threads, 65535);
    return launch_with_pdl(quant_act_kernel<T>, dim3(blocks), dim3((unsigned)threads), 0, stream,
                           1u, (const T*)x, numel, gs_static, sync, gs_out, (T*)xq, codes, scales,
                           cta_amax);
  }
  // Large x, dynamic scale: the grid-wide amax spins until every CTA has arrived, so the grid
  // never exceeds what can be resident at once on this device (a MIG slice or a small GPU
  // holds fewer CTAs) nor 128 CTAs.
  const size_t threads = 1024;
  int per_sm = 0;
  const int dev = current_device();
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, quant_act_kernel<T>, (int)threads,
                                                    0) != cudaSuccess)
    return cudaErrorInvalidValue;
  const size_t resident = (size_t)per_sm * device_attr(cudaDevAttrMultiProcessorCount, 2, dev);
  if (resident == 0) return cudaErrorInvalidValue;
  const unsigned blocks =
      (unsigned)std::min<size_t>({(pairs + threads - 1) / threads, (size_t)128, resident});
  return launch_with_pdl(quant_act_kernel<T>, dim3(blocks), dim3((unsigned)threads), 0, stream, 1u,
                         (const T*)x, numel, gs_static, sync, gs_out, (T*)xq, codes, scales, false);
}

template <typename T>
cudaError_t launch_dequant(const void* packed, const float* g_w, void* w,
                           int N, int K, cudaStream_t stream) {
  if (K % 16 != 0) return cudaErrorInvalidValue;
  const size_t total =
      (size_t)((N + kTileRows - 1) / kTileRows) * ((K + kChunkK - 1) / kChunkK) * 32;
  const int threads = 256;
  dequant_kernel<T><<<(unsigned)((total + threads - 1) / threads), threads, 0, stream>>>(
      (const uint8_t*)packed, g_w, (T*)w, N, K);
  return cudaGetLastError();
}

#define RESETFP4_INST(T)                                                                     \
  template cudaError_t launch_quant_act<T>(const void*, size_t, const float*, unsigned int*,  \
                                           float*, void*, uint8_t*, uint8_t*, cudaStream_t);  \
  template cudaError_t launch_dequant<T>(const void*, const float*, void*, int, int,         \
                                         cudaStream_t);
RESETFP4_INST(__nv_bfloat16)
RESETFP4_INST(__half)
#undef RESETFP4_INST

}  // namespace resetfp4
