// NVFP4 small-M linear (M = 1..16) for sm_80 / sm_90, no FP4 hardware needed (v6;
// history and measurements in dev/kernels/NOTES.md).
//
// y[m, n] = (sum_k x[m, k] * e2m1(c[n, k]) * fp32(s[n, k/16])) * g_w * g_x + bias[n]
// (g_x = 1 for W4A16; W4A4 feeds the exact e2m1 * block-scale activations and folds the
// activation global scale g_x into the epilogue. With a dynamic scale they come from
// nvfp4_aux.cu; with a static one (kQuant) the GEMV makes them itself, no extra launch:
// the consumers of the first qctas CTAs quantize x once into the workspace xq (one thread
// per 16-element block) and count it done; every producer waits for that count before it
// copies its x rows (its first weight stages already stream meanwhile). See
// quant_prologue / wait_quantized for the counting and why it cannot deadlock.)
//
// Layout and decode: see nvfp4_common.cuh. Work split ("stream-K"): the NG*KS units
// (64 rows x 16 K) form one contiguous byte stream; CTA c of G takes units
// [c*per, min(T, (c+1)*per)), so every CTA streams the same number of bytes, whatever N
// and K are. Inside a CTA one producer warp copies stages of kStageUnits units into shared
// memory with bulk copies (cp.async.bulk + mbarrier complete_tx on sm_90, cp.async on
// sm_80), kStages deep: the weights of the unit range plus the matching x rows (x only
// after griddepcontrol.wait: with programmatic dependent launch the weights of the first
// stages stream while the previous kernel drains). 8 consumer warps take alternate
// units of each stage (all operands from shared memory), decode the
// codes to bf16/fp16 in registers and run mma.sync m16n8k16 with the weights as the A
// operand (16 rows x 16 K) and x^T as B (16 K x 8 batch rows; a second mma for M > 8).
// Where a CTA's range crosses a row-group boundary, its 8 warps reduce in shared memory
// and either write y (the group lies wholly in this CTA) or a partial slot; the last CTA
// of a split group (atomic counter) sums the slots in CTA order, so the result is
// deterministic, writes y and resets the counter for the next launch / graph replay.
#include "nvfp4_common.cuh"

#include <algorithm>

namespace resetfp4 {

constexpr int kConsumerWarps = 8;
constexpr int kThreads = (kConsumerWarps + 1) * 32;  // + one producer warp
constexpr int kStageUnits = 32;                      // 18 KB of weights per stage, 4 units/warp

// Per batch-size class kR = M <= 8 (one mma per tile) or <= 16 (two). Shared memory per
// CTA stays under 113 KB so that 2 CTAs fit on an SM. (v6 tried a third class, M <= 2 with
// 5 stages = 92 KB of weights in flight per CTA: no faster, see NOTES.md; the kR < 8 guard
// in flush stays so that such a class needs no other change.)
template <int kR> struct Cfg {
  static constexpr bool kTwoHalves = kR > 8;
  static constexpr int kRows = kR;                         // x rows staged / reduced
  static constexpr int kStages = kR <= 2 ? 5 : (kR <= 8 ? 3 : 2);  // 92 / 54 / 36 KB weights
  static constexpr int kXRowBytes = kStageUnits * 32 + 16; // +16 B: rows on distinct banks
  static constexpr int kStageBytes = kStageUnits * (kUnitCodeBytes + kUnitScaleBytes) +
                                     kRows * kXRowBytes;
  static constexpr int kRedFloats = kConsumerWarps * kRows * kRowsPerGroup;
  static constexpr size_t kSmem = (size_t)kStages * kStageBytes + kRedFloats * sizeof(float) +
                                  2 * kStages * sizeof(uint64_t) + 16;
};

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
  void* xq;               // kQuant: T [M, K] workspace for the quantized x
  unsigned long long* qsync;  // kQuant: {CTA tickets, quantizer CTAs done}, monotonic
  int M, N, KS, per, total;
  int qctas;              // kQuant: CTAs 0..qctas-1 quantize x
};

__device__ __forceinline__ void named_bar() {  // the 8 consumer warps only
  asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumerWarps * 32) : "memory");
}

__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes,
                                          uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes "
               "[%0], [%1], %2, [%3];\n"
               ::"r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(bar)) : "memory");
#else
  for (uint32_t i = 0; i < bytes; i += 16)  // sm_80: 16-byte cp.async pieces
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n"
                 ::"r"(smem_addr((uint8_t*)dst + i)), "l"((const uint8_t*)src + i) : "memory");
#endif
}

// Stage k of the CTA's units: weights (all lanes share the work on sm_80, lane 0 on sm_90).
template <int kR>
__device__ __forceinline__ void copy_weights(const GemvArgs& a, uint8_t* st, uint64_t* bar,
                                             int u, int cnt, int lane) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (lane != 0) return;
  bulk_copy(st, a.codes + (size_t)u * kUnitCodeBytes, cnt * kUnitCodeBytes, bar);
  bulk_copy(st + kStageUnits * kUnitCodeBytes, a.scales + (size_t)u * kUnitScaleBytes,
            cnt * kUnitScaleBytes, bar);
#else
  const int cb = cnt * kUnitCodeBytes, sb = cnt * kUnitScaleBytes;
  for (int i = 16 * lane; i < cb; i += 16 * 32)
    bulk_copy(st + i, a.codes + (size_t)u * kUnitCodeBytes + i, 16, bar);
  for (int i = 16 * lane; i < sb; i += 16 * 32)
    bulk_copy(st + kStageUnits * kUnitCodeBytes + i, a.scales + (size_t)u * kUnitScaleBytes + i,
              16, bar);
#endif
}

// Stage k: x rows (lane m copies row m), as runs of consecutive K steps (a run ends where
// the unit range wraps to the next row group).
template <typename T, int kR>
__device__ __forceinline__ void copy_x(const GemvArgs& a, const void* xsrc, uint8_t* st,
                                       uint64_t* bar, int u, int cnt, int lane) {
  using C = Cfg<kR>;
  if (lane >= a.M) return;
  const T* x = reinterpret_cast<const T*>(xsrc) + (size_t)lane * a.KS * 16;
  uint8_t* dst = st + kStageUnits * (kUnitCodeBytes + kUnitScaleBytes) + lane * C::kXRowBytes;
  for (int l = 0; l < cnt;) {
    const int s = (u + l) % a.KS, run = min(cnt - l, a.KS - s);
    bulk_copy(dst + l * 32, x + s * 16, run * 32, bar);
    l += run;
  }
}

// Fused W4A4 (kQuant). Every launch, every CTA's producer takes a ticket t from qsync[0]
// (after griddepcontrol.wait, so the G tickets of one launch are consecutive:
// launch L = t / G) and waits until qsync[1] reaches (L + 1) * G: the quantizer CTAs add
// G in all when they are done (CTA 0 adds G - qctas + 1, the others 1, so the sum per
// launch does not depend on M). Both counters only grow (64-bit: no wrap in practice), so
// a graph replay needs no reset; G is fixed per weight (one workspace per weight).
// CTAs 0..qctas-1 wait for nothing before they count, and CTAs are dispatched in index
// order (the assumption decoupled look-back scans make too), so a waiting CTA implies the
// quantizer CTAs are resident or done: no deadlock whatever the occupancy.
__device__ __forceinline__ void wait_quantized(const GemvArgs& a, int lane) {
  if (lane == 0) {
    const unsigned long long t = atomicAdd(a.qsync, 1ull);
    const unsigned long long want = (t / gridDim.x + 1) * (unsigned long long)gridDim.x;
    unsigned long long done = 0;
    do {
      asm volatile("ld.acquire.gpu.global.u64 %0, [%1];\n" : "=l"(done) : "l"(a.qsync + 1)
                   : "memory");
    } while (done < want);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("fence.proxy.async.global;\n" ::: "memory");  // bulk copies read xq next
#endif
  }
  __syncwarp();
  __threadfence();  // sm_80: every lane's cp.async reads xq after the acquire
}

// One 16-element block b of x [M, K] -> xq = e2m1(code) * bs (exact in T), exactly like
// resetfp4.nvfp4.quantize(x, global_scale=gs).
template <typename T>
__device__ __forceinline__ void quant_block_xq(const T* __restrict__ x, T* __restrict__ xq,
                                               int b, float gs, float six_gs) {
  using Tr = Traits<T>;
  const uint4* src = reinterpret_cast<const uint4*>(x + (size_t)b * 16);
  uint4 raw[2] = {src[0], src[1]};
  const T* e = reinterpret_cast<const T*>(raw);
  float v[16], bmax = 0.f;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    v[i] = Tr::to_float(e[i]);
    bmax = fmaxf(bmax, fabsf(v[i]));
  }
  const float bs = nvfp4_block_scale(bmax, six_gs);
  const float d = __fmul_rn(bs, gs);
  uint4 out[2];
  T* o = reinterpret_cast<T*>(out);
#pragma unroll
  for (int i = 0; i < 16; ++i) o[i] = Tr::from_float(nvfp4_round_value(v[i], d, bs));
  uint4* dst = reinterpret_cast<uint4*>(xq + (size_t)b * 16);
  dst[0] = out[0];
  dst[1] = out[1];
}

// Consumers of CTAs 0..qctas-1: quantize x into xq (one thread per block), then count.
template <typename T>
__device__ void quant_prologue(const GemvArgs& a, int tid) {
  if ((int)blockIdx.x >= a.qctas) return;
  const float gs = __ldg(a.g_x), six_gs = __fmul_rn(6.0f, gs);  // the reference's fp32 6*gs
  const int nb = a.M * a.KS, stride = a.qctas * kConsumerWarps * 32;
  for (int b = blockIdx.x * kConsumerWarps * 32 + tid; b < nb; b += stride)
    quant_block_xq<T>(reinterpret_cast<const T*>(a.x), reinterpret_cast<T*>(a.xq), b, gs,
                      six_gs);
  named_bar();  // every consumer's xq stores, then one cumulative fence and the count
  if (tid == 0) {
    __threadfence();
    atomicAdd(a.qsync + 1, blockIdx.x == 0 ? (unsigned long long)(gridDim.x - a.qctas + 1) : 1ull);
  }
}

// Producer warp: stream the CTA's units [u0, u0 + nl) into the stage ring. Weights are
// constant, so the first kStages stages are requested before pdl_wait; x only after it.
template <typename T, int kR, bool kQuant>
__device__ void produce(const GemvArgs& a, uint8_t* ring, uint64_t* full, uint64_t* empty,
                        int u0, int nl, int lane) {
  using C = Cfg<kR>;
  const int nst = (nl + kStageUnits - 1) / kStageUnits;
  auto arm = [&](int k) {  // expect this stage's bytes, then request its weights
    const int cnt = min(kStageUnits, nl - k * kStageUnits);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (lane == 0) {
      const uint32_t bytes = cnt * (kUnitCodeBytes + kUnitScaleBytes + 32 * a.M);
      asm volatile("{\n .reg .b64 st;\n mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n"
                   ::"r"(smem_addr(&full[k % C::kStages])), "r"(bytes) : "memory");
    }
    __syncwarp();
#endif
    copy_weights<kR>(a, ring + (size_t)(k % C::kStages) * C::kStageBytes,
                             &full[k % C::kStages], u0 + k * kStageUnits, cnt, lane);
  };
  auto finish = [&](int k) {  // request x; on sm_80 arrive once all copies are issued
    const int cnt = min(kStageUnits, nl - k * kStageUnits);
    copy_x<T, kR>(a, kQuant ? a.xq : a.x, ring + (size_t)(k % C::kStages) * C::kStageBytes,
                          &full[k % C::kStages], u0 + k * kStageUnits, cnt, lane);
#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n"
                 ::"r"(smem_addr(&full[k % C::kStages])) : "memory");
#endif
  };
  const int first = min(nst, C::kStages);
  for (int k = 0; k < first; ++k) arm(k);
  pdl_wait();
  if constexpr (kQuant) wait_quantized(a, lane);
  for (int k = 0; k < first; ++k) finish(k);
  for (int k = first; k < nst; ++k) {
    mbar_wait(&empty[k % C::kStages], ((k / C::kStages) - 1) & 1);
    arm(k);
    finish(k);
  }
#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// One unit: 4 tiles of 16 rows, each one (or two) mma. b / b2: x^T fragments (rows 0-7 / 8-15).
template <typename T, bool kTwoHalves, bool kExact>
__device__ __forceinline__ void unit_mma(float (&acc)[2][4][4], uint4 q, uint2 sc, uint2 b,
                                         uint2 b2) {
  using Tr = Traits<T>;
  const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t sw = j < 2 ? sc.x : sc.y;
    uint32_t sg, sg8;  // scales of rows 16j+g and 16j+g+8, in both halves
    if constexpr (kExact) {
      const uint32_t s2 = (j % 2 == 0) ? decode_scales<T, 0, 1>(sw) : decode_scales<T, 2, 3>(sw);
      sg = __byte_perm(s2, s2, 0x1010);
      sg8 = __byte_perm(s2, s2, 0x3232);
    } else {
      sg = (j % 2 == 0) ? fast_scale<T, 0>(sw) : fast_scale<T, 2>(sw);
      sg8 = (j % 2 == 0) ? fast_scale<T, 1>(sw) : fast_scale<T, 3>(sw);
    }
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
// (v4 let warp 0 alone finish a split group while the others went on: no gain at M = 1,
// much slower at M >= 2 where one warp then summed 2M items per lane; see NOTES.md.)
template <typename T, int kR>
__device__ void flush(const GemvArgs& a, float (&acc)[2][4][4], float* red, int* flag, int ng,
                      int warp, int lane) {
  constexpr bool kTwoHalves = Cfg<kR>::kTwoHalves;
  const int g = lane / 4, t = lane % 4, tid = warp * 32 + lane;
  float* r = red + warp * kR * kRowsPerGroup;
  // C fragment: acc[h][j][0..1] = row 16j+g, batch 8h+2t+{0,1}; [2..3] = row 16j+g+8.
#pragma unroll
  for (int h = 0; h < (kTwoHalves ? 2 : 1); ++h)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int m = 8 * h + 2 * t, n = 16 * j + g;
      if (kR >= 8 || m < kR) {  // the M <= 2 class reduces only batch rows 0, 1
        r[m * kRowsPerGroup + n] = acc[h][j][0];
        r[(m + 1) * kRowsPerGroup + n] = acc[h][j][1];
        r[m * kRowsPerGroup + n + 8] = acc[h][j][2];
        r[(m + 1) * kRowsPerGroup + n + 8] = acc[h][j][3];
      }
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
      for (int w = 0; w < kConsumerWarps; ++w) s += red[w * kR * kRowsPerGroup + i];
      const int n = ng * kRowsPerGroup + i % kRowsPerGroup;
      if (n < a.N) store_y<T>(a, i / kRowsPerGroup, n, s);
    }
  } else {
    float* mine = a.partial + (size_t)(c + ng) * 16 * kRowsPerGroup;  // unique per segment
    for (int i = tid; i < items; i += kConsumerWarps * 32) {
      float s = 0.f;
#pragma unroll
      for (int w = 0; w < kConsumerWarps; ++w) s += red[w * kR * kRowsPerGroup + i];
      __stcg(mine + i, s);
    }
    named_bar();
    if (tid == 0) {
      __threadfence();  // the CTA's partial stores (ordered by the barrier) before the count
      *flag = (atomicAdd(a.counter + ng, 1) == c_last - c_first);
      __threadfence();
    }
    named_bar();
    if (*flag) {
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

// Unit l_in (index inside stage `base`) of this warp: shared-memory operands + mma.
template <typename T, int kR, bool kExact>
__device__ __forceinline__ void do_unit(float (&acc)[2][4][4], const uint8_t* base, int l_in,
                                        int lane, bool has_row, bool has_row8) {
  using C = Cfg<kR>;
  constexpr bool kTwoHalves = C::kTwoHalves;
  const int g = lane / 4, t = lane % 4;
  const uint4 q = *reinterpret_cast<const uint4*>(base + l_in * kUnitCodeBytes + lane * 16);
  const uint2 sc = *reinterpret_cast<const uint2*>(base + kStageUnits * kUnitCodeBytes +
                                                   l_in * kUnitScaleBytes + g * 8);
  const uint8_t* xs = base + kStageUnits * (kUnitCodeBytes + kUnitScaleBytes) + l_in * 32 + 4 * t;
  uint2 b = make_uint2(0u, 0u), b2 = make_uint2(0u, 0u);
  if (has_row) {
    b.x = *reinterpret_cast<const uint32_t*>(xs + g * C::kXRowBytes);
    b.y = *reinterpret_cast<const uint32_t*>(xs + g * C::kXRowBytes + 16);
  }
  if (kTwoHalves && has_row8) {
    b2.x = *reinterpret_cast<const uint32_t*>(xs + (g + 8) * C::kXRowBytes);
    b2.y = *reinterpret_cast<const uint32_t*>(xs + (g + 8) * C::kXRowBytes + 16);
  }
  unit_mma<T, kTwoHalves, kExact>(acc, q, sc, b, b2);
}

template <typename T, int kR, bool kExact, bool kQuant>
__global__ void __launch_bounds__(kThreads, 2) gemv_kernel(const GemvArgs a) {
  using C = Cfg<kR>;
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t* ring = smem;
  float* red = reinterpret_cast<float*>(smem + C::kStages * C::kStageBytes);
  uint64_t* full = reinterpret_cast<uint64_t*>(red + C::kRedFloats);
  uint64_t* empty = full + C::kStages;
  int* flag = reinterpret_cast<int*>(empty + C::kStages);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int u0 = blockIdx.x * a.per, nl = min(a.per, a.total - u0);
  if (threadIdx.x == 0) {
    for (int s = 0; s < C::kStages; ++s) {
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
  if (warp == kConsumerWarps) {
    produce<T, kR, kQuant>(a, ring, full, empty, u0, nl, lane);
    return;
  }
  pdl_wait();  // y, partial, counter, g_x: only after the previous kernel finished
  if constexpr (kQuant) quant_prologue<T>(a, warp * 32 + lane);
  const bool has_row = lane / 4 < a.M, has_row8 = lane / 4 + 8 < a.M;
  float acc[2][4][4];
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[h][j][0] = acc[h][j][1] = acc[h][j][2] = acc[h][j][3] = 0.f;
  int cur_ng = u0 / a.KS;
  int next_b = (cur_ng + 1) * a.KS - u0;  // local index of the next row-group start
  const int nst = (nl + kStageUnits - 1) / kStageUnits;
  for (int k = 0; k < nst; ++k) {
    const int slot = k % C::kStages;
    mbar_wait(&full[slot], (k / C::kStages) & 1);
    const uint8_t* base = ring + (size_t)slot * C::kStageBytes;
    const int lo = k * kStageUnits, hi = min(nl, lo + kStageUnits);
    if (next_b >= hi && hi - lo == kStageUnits) {  // common case: 4 units per warp
#pragma unroll
      for (int i = 0; i < kStageUnits / kConsumerWarps; ++i)
        do_unit<T, kR, kExact>(acc, base, warp + kConsumerWarps * i, lane, has_row, has_row8);
    } else {  // a row-group boundary or the last, partial stage: unit by unit
      for (int l = lo; l < hi; ++l) {
        if (l == next_b) {
          flush<T, kR>(a, acc, red, flag, cur_ng, warp, lane);
          ++cur_ng;
          next_b += a.KS;
        }
        if ((l & 7) == warp) do_unit<T, kR, kExact>(acc, base, l - lo, lane, has_row, has_row8);
      }
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[slot]);
  }
  flush<T, kR>(a, acc, red, flag, cur_ng, warp, lane);
}

// ---- host launcher (plain C++: the binding passes the current stream) ----

template <typename T, int kR, bool kExact, bool kQuant>
static cudaError_t launch_kernel(const GemvArgs& a, int grid, cudaStream_t stream) {
  auto* kern = gemv_kernel<T, kR, kExact, kQuant>;
  constexpr size_t kSmemBytes = Cfg<kR>::kSmem;
  static cudaError_t attr = cudaFuncSetAttribute(
      kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kSmemBytes);
  if (attr != cudaSuccess) return attr;
  return launch_with_pdl(kern, dim3(grid), dim3(kThreads), kSmemBytes, stream, a);
}

template <typename T, int kR>
static cudaError_t launch_class(const GemvArgs& a, int grid, bool exact, bool quant,
                                cudaStream_t stream) {
  if (exact)
    return quant ? launch_kernel<T, kR, true, true>(a, grid, stream)
                 : launch_kernel<T, kR, true, false>(a, grid, stream);
  return quant ? launch_kernel<T, kR, false, true>(a, grid, stream)
               : launch_kernel<T, kR, false, false>(a, grid, stream);
}

// ctas: the wanted number of CTAs (2 per SM); partial must hold >= G + NG slots of 16x64.
// exact: some block scale is zero / subnormal / negative (decode_scales instead of fast_scale).
// quant: x is quantized in the kernel with the static activation scale *g_x (fused W4A4),
// through xq (T [>= M, K]) and qsync (uint64 [2], zero at first use).
template <typename T>
cudaError_t launch_gemv(const void* x, const void* codes, const void* scales, const float* g_w,
                        const float* g_x, const void* bias, void* y, float* partial, int* counter,
                        int M, int N, int K, int ctas, bool exact, bool quant, void* xq,
                        unsigned long long* qsync, cudaStream_t stream) {
  if (M < 1 || M > 16 || K % 16 != 0 || K < 16 || N < 1 || ctas < 1) return cudaErrorInvalidValue;
  if (quant && (g_x == nullptr || xq == nullptr || qsync == nullptr)) return cudaErrorInvalidValue;
  const int NG = (N + kRowsPerGroup - 1) / kRowsPerGroup, KS = K / 16;
  const long long total = (long long)NG * KS;
  if (total > (1ll << 30)) return cudaErrorInvalidValue;
  const int per = (int)((total + ctas - 1) / ctas);
  const int grid = (int)((total + per - 1) / per);  // no empty CTA
  // Quantizer CTAs: one thread per 16-element block, 256 consumer threads per CTA.
  const int qctas = std::min(grid, (M * KS + kConsumerWarps * 32 - 1) / (kConsumerWarps * 32));
  const GemvArgs a{x, (const uint8_t*)codes, (const uint8_t*)scales, g_w, g_x, bias, y,
                   partial, counter, xq, qsync, M, N, KS, per, (int)total, qctas};
  if (M > 8) return launch_class<T, 16>(a, grid, exact, quant, stream);
  return launch_class<T, 8>(a, grid, exact, quant, stream);
}

template cudaError_t launch_gemv<__nv_bfloat16>(const void*, const void*, const void*,
    const float*, const float*, const void*, void*, float*, int*, int, int, int, int, bool,
    bool, void*, unsigned long long*, cudaStream_t);
template cudaError_t launch_gemv<__half>(const void*, const void*, const void*, const float*,
    const float*, const void*, void*, float*, int*, int, int, int, int, bool, bool, void*,
    unsigned long long*, cudaStream_t);

}  // namespace resetfp4
