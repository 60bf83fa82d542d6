// NVFP4 small-M linear (M = 1..16) for sm_80 / sm_90, no FP4 hardware needed (v8;
// history and measurements in dev/kernels/NOTES.md).
//
// y[m, n] = (sum_k x[m, k] * e2m1(c[n, k]) * fp32(s[n, k/16])) * g_w * g_x + bias[n]
// (g_x = 1 for W4A16; W4A4 feeds the exact e2m1 * block-scale activations from
// nvfp4_aux.cu's quantizer and folds the activation global scale g_x into the epilogue).
//
// Layout and decode: see nvfp4_common.cuh. A unit is 16 rows x 64 K (576 bytes); the
// T = ceil(N/16) row tiles x KC = ceil(K/64) chunks are stored tile-major (codes and
// scales of a unit together), so the K range of one tile is one contiguous byte range.
//
// Work split (chosen on the host, resetfp4.kernels.nvfp4_gemv.plan): clusters of S CTAs
// (S = 1 on sm_80); cluster c owns the R tiles [c*R, c*R + R), and CTA rank s of it the
// chunks [s*P, s*P + P) of each of them. Inside a CTA the nR x Pn units (tile-major) are
// cut into 8 contiguous per-warp ranges. There is no producer warp and no shared-memory
// ring: every warp streams its own units straight into registers (16-byte loads, L1
// no-allocate), decodes the codes to bf16/fp16 and runs mma.sync m16n8k16 with the weights
// as A (16 rows x 16 K) and x^T as B (16 K x 8 batch rows; a second mma for M > 8). Its x
// fragments are loaded one unit ahead (read-only path, L1/L2 hits). At a tile boundary a
// warp parks its accumulators in shared memory; the CTA then sums the warps of each tile in
// warp order, and for S > 1 the ranks of a cluster sum the CTAs' partials through
// distributed shared memory in rank order. No global atomics, fences or workspaces, and
// the result is deterministic.
//
// Two loop shapes (v8, dev/kernels/NOTES.md):
// * aligned (K % (64 kBody) == 0, every shape of the models we serve; cluster ranks get
//   whole bodies): each warp range is whole bodies of kBody consecutive chunks of one tile
//   (kBody = 4 for M <= 8, 2 for M <= 16), so the body's weight and x addresses are
//   immediate offsets from two pointers, a tile can only end after a body, and no per-unit
//   bookkeeping is left (~80 instructions per unit at M <= 8, was ~120). The next body's
//   units are loaded at the end of the body (ptxas puts them there whatever the source
//   order: their consumers are in the next iteration), so lane 0 also bulk-prefetches the
//   body after that into L2 (cp.async.bulk.prefetch, sm_90), and the end-of-body loads hit
//   L2;
// * general (other K): a ring of kDepth units refilled one by one, the pointer jumping
//   after the rank's Pn chunks, x offsets clamped to K - 16.
//
// Pair mode (session 8; aligned loop, gemv_pair_mode): a body is 2 tiles x kBody/2 chunks
// instead of 1 tile x kBody chunks, the warp ranges run over tile pairs (unit (pair p,
// chunk c, tile j) is number 2 (p Pn + c) + j), and each x fragment feeds both tiles' mma,
// one accumulation chain per tile. At M = 8 a unit's x fragments are 1 KB of L1 traffic
// against 576 weight bytes, so this halves what grows with M. Needs S = 1 and an even
// tile count per CTA.
//
// SwiGLU mode (GemvArgs::swiglu, launch_gemv's `swiglu`; session 7): the weight is the
// decoder's gate and up projections with their rows interleaved per 16 (tile 2j = gate rows
// 16j.., tile 2j+1 = up rows 16j..; resetfp4.kernels.nvfp4_gemv.interleave_gate_up). The
// main loop is unchanged; with S = 1 and R even each CTA owns whole gate/up tile pairs, and
// its epilogue writes h = silu(gate) * up ([M, N/2], the model's roundings), optionally as
// the NVFP4 round trip of h with global scale g_q (16 lanes = one 16-column block), which
// is what the W4A4 down projection reads. This replaces a separate SiLU-mul kernel per
// layer in the decode step.
#include "nvfp4_common.cuh"

#include <algorithm>
#include <type_traits>

namespace resetfp4 {

// Build knobs, overridden only by dev/kernels/variant_bench.py (the plan in nvfp4_gemv.py
// assumes the defaults): RESETFP4_GEMV_MIN_BLOCKS, CTAs per SM for M <= 8; _DEPTH, units in
// flight per warp on the general loop; _BODY / _BODY16, units per aligned-loop body (= units
// in flight per warp) for M <= 8 / M <= 16; _PREFETCH, the aligned loop's L2 bulk-prefetch
// distance in bodies (0: none). (An 8-deep shared-memory ring filled by cp.async was
// measured and dropped: dev/kernels/NOTES.md, v7c; source at commit a3afee4.)
#ifndef RESETFP4_GEMV_DEPTH
#define RESETFP4_GEMV_DEPTH 4
#endif
#ifndef RESETFP4_GEMV_MIN_BLOCKS
#define RESETFP4_GEMV_MIN_BLOCKS 3
#endif
#ifndef RESETFP4_GEMV_BODY
#define RESETFP4_GEMV_BODY 4
#endif
#ifndef RESETFP4_GEMV_BODY16
#define RESETFP4_GEMV_BODY16 2  // H100: M=16 2.48x vs 2.41x BF16 with 4 (dev/kernels/NOTES.md)
#endif
#ifndef RESETFP4_GEMV_PREFETCH
#define RESETFP4_GEMV_PREFETCH 1
#endif
// _WARPS, warps per CTA; _MAXNREG (dev only, unset by default), a register cap for every
// gemv_kernel instance in place of the launch bounds' CTAs-per-SM minimum.
#ifndef RESETFP4_GEMV_WARPS
#define RESETFP4_GEMV_WARPS 8
#endif
constexpr int kWarps = RESETFP4_GEMV_WARPS;
constexpr int kPf = RESETFP4_GEMV_PREFETCH;  // aligned path: L2 prefetch, bodies ahead
constexpr int kThreads = kWarps * 32;
constexpr int kDepth = RESETFP4_GEMV_DEPTH;  // weight units in flight per warp
static_assert(kDepth >= 2 && kDepth % 2 == 0,
              "unit i uses x buffer i % 2 = d % 2: kDepth must be even (and >= 2)");

// Per batch-size class kR = M <= 8 (one mma per K step) or <= 16 (two).
template <int kR> struct Cfg {
  static constexpr bool kTwoHalves = kR > 8;
  static constexpr int kMinBlocks = kR > 8 ? 2 : RESETFP4_GEMV_MIN_BLOCKS;  // CTAs per SM
  static constexpr int kBody = kR > 8 ? RESETFP4_GEMV_BODY16 : RESETFP4_GEMV_BODY;  // aligned
  static_assert(kBody >= 2 && kBody % 2 == 0, "x buffers alternate per unit");
};
// Units per aligned-loop body for M rows (host side of Cfg<kR>::kBody).
inline int body_for_m(int M) { return M > 8 ? Cfg<16>::kBody : Cfg<8>::kBody; }

struct GemvArgs {
  const void* x;          // T [M, K]
  const uint8_t* w;       // [T*KC][576]: per unit 512 code bytes, then 64 scale bytes
  const float* g_w;       // fp32 [1]
  const float* g_x;       // fp32 [1] or null
  const void* bias;       // T [N] or null
  void* y;                // T [M, N]; with swiglu T [M, N/2]
  const float* g_q;       // swiglu: fp32 [1], the global scale to quantize h with, or null
  int M, N, K, KC, tiles, S, R, P;
  int swiglu;             // 1: gate/up tiles interleaved, y = silu(gate) * up (see gemv_kernel)
};

// Shared memory (floats): per-warp tile partials, kT kWarps + R slots of kRows x 16, then
// for S > 1 the CTA's tile partials, R x kRows x 16. kT = tiles per body: 1, or 2 in pair
// mode. Warp w's part of local tile r = kT p + j (group p, tile j of it) goes to slot
// kT (w + p) + j <= kT (kWarps + R / kT - 2) + kT - 1: unique because the warp ranges are
// contiguous and group-major.
__host__ __device__ constexpr size_t smem_floats(int rows, int R, int S, int kT = 1) {
  return (size_t)(kT * kWarps + R) * rows * 16 + (S > 1 ? (size_t)R * rows * 16 : 0);
}

__device__ __forceinline__ uint4 ld_stream128(const uint8_t* p) {  // weights: L1 no-allocate
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
// L2 prefetch of `bytes` (a multiple of 16) from a 16-byte aligned p (sm_90 bulk copy unit).
__device__ __forceinline__ void prefetch_l2(const uint8_t* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ uint32_t ld_stream16(const uint8_t* p) {
  unsigned short v;
  asm volatile("ld.global.nc.L1::no_allocate.u16 %0, [%1];\n" : "=h"(v) : "l"(p));
  return v;
}

// x fragments of one unit (two 16-byte loads of 8 elements). `row` points at the lane's
// batch row (clamped to M-1: a row >= M only feeds output columns that are never stored),
// `k` = 64*chunk + 16t is clamped to K-16 (a lane's 16-element block is all in or all
// out of K, K % 16 == 0; past K the weights are zero and any finite x is harmless).
template <typename T>
__device__ __forceinline__ void load_x(const T* row, int k, int kmax, uint4& lo, uint4& hi) {
  const uint4* p = reinterpret_cast<const uint4*>(row) + ((unsigned)min(k, kmax) >> 3);
  lo = __ldg(p);
  hi = __ldg(p + 1);
}

// One unit: 4 K steps of 16; lane (g, t) holds rows g, g+8 of block t of the chunk.
// acc[h][c]: batch half h (rows 0-7 / 8-15), chain c (even / odd K steps: two independent
// mma accumulation chains).
// kChain < 0: the K steps alternate between chains 0 and 1; else all go to chain kChain
// (pair mode: the chain is the body's tile, so the two tiles' units are the independent
// chains).
template <typename T, bool kTwoHalves, bool kExact, int kChain = -1>
__device__ __forceinline__ void unit_mma(float (&acc)[2][2][4], uint4 q, uint32_t sc, uint4 xa,
                                         uint4 xb, uint4 xa2, uint4 xb2) {
  using Tr = Traits<T>;
  uint32_t sg, sg8;  // scales of rows g and g+8, in both halves
  if constexpr (kExact) {
    const uint32_t s2 = decode_scales<T, 0, 1>(sc);
    sg = __byte_perm(s2, s2, 0x1010);
    sg8 = __byte_perm(s2, s2, 0x3232);
  } else {
    sg = fast_scale<T, 0>(sc);
    sg8 = fast_scale<T, 1>(sc);
  }
  const uint32_t words[4] = {q.x, q.y, q.z, q.w};
  const uint32_t xs[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
  const uint32_t xs2[8] = {xa2.x, xa2.y, xa2.z, xa2.w, xb2.x, xb2.y, xb2.z, xb2.w};
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    uint32_t h[4];
    decode_word(words[s], h);
    const uint32_t w[4] = {Tr::weight(h[0], sg), Tr::weight(h[1], sg8), Tr::weight(h[2], sg),
                           Tr::weight(h[3], sg8)};
    constexpr int c0 = kChain;  // (a constant per instantiation)
    const int c = c0 < 0 ? (s & 1) : c0;
    mma_16816(acc[0][c], w, xs[2 * s], xs[2 * s + 1], (T*)nullptr);
    if constexpr (kTwoHalves) mma_16816(acc[1][c], w, xs2[2 * s], xs2[2 * s + 1], (T*)nullptr);
  }
}

// Park a tile's accumulators in `slot` and zero them: kChain < 0, both chains summed (one
// tile per body); else chain kChain alone (pair mode: the chain is the tile).
// C fragment: acc[h][c][0..1] = row g, batch 8h+2t+{0,1}; [2..3] = row g+8.
template <int kR, int kChain = -1>
__device__ __forceinline__ void park(float (&acc)[2][2][4], float* red, int slot, int lane) {
  const int g = lane / 4, t = lane % 4;
  float* r = red + (size_t)slot * kR * 16;
#pragma unroll
  for (int h = 0; h < (Cfg<kR>::kTwoHalves ? 2 : 1); ++h) {
    const int m = 8 * h + 2 * t;
    float v[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if constexpr (kChain < 0) v[e] = acc[h][0][e] + acc[h][1][e];
      else v[e] = acc[h][kChain][e];
    }
    r[m * 16 + g] = v[0];
    r[(m + 1) * 16 + g] = v[1];
    r[m * 16 + g + 8] = v[2];
    r[(m + 1) * 16 + g + 8] = v[3];
#pragma unroll
    for (int c = 0; c < 2; ++c)
      if (kChain < 0 || c == kChain) acc[h][c][0] = acc[h][c][1] = acc[h][c][2] = acc[h][c][3] = 0.f;
  }
}

// v rounded to T (the model's rounding of every op's output), back in fp32.
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return Traits<T>::to_float(Traits<T>::from_float(v));
}

template <typename T>
__device__ __forceinline__ void store_y(const GemvArgs& a, float factor, int m, int n, float r) {
  using Tr = Traits<T>;
  float v = r * factor;
  if (a.bias) v += Tr::to_float(reinterpret_cast<const T*>(a.bias)[n]);
  reinterpret_cast<T*>(a.y)[(size_t)m * a.N + n] = Tr::from_float(v);
}

// The kernel body; the __global__ entries below differ only in their register budget.
// kPf2 (the two-body prefetch, gemv_pf2_mode; aligned loop only): the L2 prefetch is issued
// after every other body and covers the next two bodies where they are contiguous.
template <typename T, int kR, bool kExact, bool kGeneral, bool kPair, bool kPf2 = false>
__device__ __forceinline__ void gemv_body(const GemvArgs& a) {
  constexpr bool kTwo = Cfg<kR>::kTwoHalves;
  constexpr int kBody = Cfg<kR>::kBody;
  // Aligned loop: a body is kCh consecutive chunks of kT tiles (pair mode: tiles 2p, 2p+1
  // of the CTA, each x fragment feeding both), units in flight kBody = kCh kT either way.
  constexpr int kT = kPair ? 2 : 1;
  constexpr int kCh = kBody / kT;
  static_assert(!kPair || !kGeneral, "pair mode is an aligned-loop mode");
  static_assert(!kPf2 || !kGeneral, "the two-body prefetch is an aligned-loop mode");
  static_assert(kBody % kT == 0, "a pair body holds whole chunks of both tiles");
  extern __shared__ __align__(16) float red[];
  // The epilogue's constant global scales, read into shared memory by thread 0 just before
  // the PDL wait (after its weight loads are issued; the CTA is waiting anyway), so that the
  // W4A16 epilogue does not start with an L2 round trip after its barrier: g_w, and g_q
  // (the next linear's input_scale; neither may be written by the kernel just before). g_x
  // may be the previous kernel's output: still read in the epilogue (loading it right after
  // the wait would stall warp 0 before its first x loads).
  __shared__ float scales_s[3];  // g_w, (spare), g_q (swiglu; 0 when null)
  pdl_launch_dependents();
  auto wait_inputs = [&]() {
    if (threadIdx.x == 0) {
      scales_s[0] = __ldg(a.g_w);
      scales_s[2] = a.g_q ? __ldg(a.g_q) : 0.f;  // a constant input_scale in the engine
    }
    pdl_wait();
  };
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int S = a.S, rank = blockIdx.x % S, cl = blockIdx.x / S;
  const int tile0 = cl * a.R, nR = min(a.R, a.tiles - tile0);  // nR even in pair mode (host)
  const int ch0 = rank * a.P, Pn = max(0, min(a.P, a.KC - ch0));
  // Units per warp; the aligned path (!kGeneral) gives each warp whole bodies of kBody.
  // Units are ordered group-major: unit (group p, chunk c, tile j of the group) is number
  // (p Pn + c) kT + j, a group being kT consecutive local tiles.
  const int total = nR * Pn;
  const int Q = kGeneral ? (total + kWarps - 1) / kWarps
                       : (total + kWarps * kBody - 1) / (kWarps * kBody) * kBody;
  const int b = min(total, warp * Q), n = min(total, b + Q) - b;

  float acc[2][2][4];
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int c = 0; c < 2; ++c) acc[h][c][0] = acc[h][c][1] = acc[h][c][2] = acc[h][c][3] = 0.f;

  if constexpr (!kGeneral) {
   if (n > 0) {
    // Aligned path (K % (64 kBody) == 0, so KC, every rank's Pn and every warp range are
    // whole bodies): a body is kCh consecutive chunks of the kT tiles of one group, its
    // units sit at fixed offsets from the body pointer (plus tstride for the group's
    // second tile) and its x at fixed offsets from the x pointer (immediate offsets), and a
    // group can only end at the end of a body.
    int pt = b / (kT * Pn), pc = b / kT % Pn;  // the body being processed: group, first chunk
    const uint8_t* wp =
        a.w + (size_t)((tile0 + kT * pt) * a.KC + ch0 + pc) * kUnitBytes + lane * 16;
    const uint8_t* sp = wp + (kUnitCodeBytes - 14 * lane);  // the lane's 2 scale bytes
    const int tstride = kPair ? a.KC * kUnitBytes : 0;  // tile j of the group: + j tstride
    // Bytes from a body to the next: the next chunks, or (after the rank's last body of a
    // group) the rank's first chunk of the next group.
    const int step_in = kCh * kUnitBytes, step_wrap = (kT * a.KC - Pn + kCh) * kUnitBytes;
    uint4 q[kBody];  // unit (chunk d, tile j) of the body in slot d kT + j
    uint32_t sc[kBody];
#pragma unroll
    for (int d = 0; d < kCh; ++d)  // weights are constant: stream them before the PDL wait
#pragma unroll
      for (int j = 0; j < kT; ++j) {
        q[d * kT + j] = ld_stream128(wp + j * tstride + d * kUnitBytes);
        sc[d * kT + j] = ld_stream16(sp + j * tstride + d * kUnitBytes);
      }
    // L2 prefetch (lane 0, bulk copy unit) of the body kPf + 1 bodies ahead of the one
    // being processed, i.e. kPf ahead of the end-of-body refill. `body_ptr`, `chunk`: the
    // current body's pointer and first chunk within the rank's range; `bodies`: its index
    // among the warp's bodies (nothing past the warp's last body is prefetched). kPf2: only
    // after even-numbered bodies, and then that body and the next one together where they
    // are contiguous (not across a group's end): half the prefetch instructions issued.
    auto next_body = [&](const uint8_t*& p, int& chunk) {  // the following body of the rank
      const bool wrap = chunk + kCh == Pn;
      p += wrap ? step_wrap : step_in;
      chunk = wrap ? 0 : chunk + kCh;
    };
    auto prefetch_body = [&](const uint8_t* p) {
#pragma unroll
      for (int j = 0; j < kT; ++j) prefetch_l2(p + j * tstride, kCh * kUnitBytes);
    };
    auto prefetch_ahead = [&](const uint8_t* body_ptr, int chunk, int bodies) {
      if (kPf2 && bodies % 2 != 0) return;  // (warp-uniform)
      const uint8_t* p = body_ptr - lane * 16;
#pragma unroll
      for (int j = 0; j < kPf + 1; ++j) next_body(p, chunk);
      if constexpr (kPf2) {
        const int left = n / kBody - (bodies + kPf + 1);  // bodies from p on in the warp's range
        const uint32_t bytes = (left >= 2 && chunk + kCh != Pn ? 2 : 1) * kCh * kUnitBytes;
        if (lane == 0 && left > 0) {
#pragma unroll
          for (int j = 0; j < kT; ++j) prefetch_l2(p + j * tstride, bytes);
        }
      } else {
        if (lane == 0 && bodies + kPf + 1 < n / kBody) prefetch_body(p);
      }
    };
    if constexpr (kPf > 0) {  // the bodies the first kPf refills load
      const uint8_t* p = wp - lane * 16;
      int chunk = pc;
#pragma unroll
      for (int j = 0; j < kPf; ++j) {
        next_body(p, chunk);
        if (lane == 0 && j + 1 < n / kBody) prefetch_body(p);
      }
    }
    wait_inputs();  // x, y: only after the previous kernel finished

    const T* x0 =
        reinterpret_cast<const T*>(a.x) + (size_t)min(g, a.M - 1) * a.K + ch0 * 64 + 16 * t;
    const T* x20 =
        reinterpret_cast<const T*>(a.x) + (size_t)min(g + 8, a.M - 1) * a.K + ch0 * 64 + 16 * t;
    const T* xp = x0 + pc * 64;
    const T* xp2 = x20 + pc * 64;
    uint4 xa[2], xb[2], xa2[2], xb2[2];
    xa[0] = __ldg(reinterpret_cast<const uint4*>(xp));
    xb[0] = __ldg(reinterpret_cast<const uint4*>(xp) + 1);
    if constexpr (kTwo) {
      xa2[0] = __ldg(reinterpret_cast<const uint4*>(xp2));
      xb2[0] = __ldg(reinterpret_cast<const uint4*>(xp2) + 1);
    } else {
      xa2[0] = xb2[0] = xa2[1] = xb2[1] = make_uint4(0u, 0u, 0u, 0u);
    }
    auto park_group = [&](int group) {
      if constexpr (kPair) {
        park<kR, 0>(acc, red, 2 * (warp + group), lane);
        park<kR, 1>(acc, red, 2 * (warp + group) + 1, lane);
      } else {
        park<kR>(acc, red, warp + group, lane);
      }
    };
    auto body = [&](int i, bool refill) {
      const bool tile_end = pc + kCh == Pn;
      const uint8_t* wn = wp + (tile_end ? step_wrap : step_in);  // the next body
      const uint8_t* sn = sp + (tile_end ? step_wrap : step_in);
      const T* xn = tile_end ? x0 : xp + kCh * 64;  // x of the next body
      const T* xn2 = tile_end ? x20 : xp2 + kCh * 64;
#pragma unroll
      for (int d = 0; d < kCh; ++d) {
        const int cur = d & 1, nxt = cur ^ 1;
        const uint4* xl = reinterpret_cast<const uint4*>(d + 1 < kCh ? xp + (d + 1) * 64 : xn);
        xa[nxt] = __ldg(xl);  // x one chunk ahead (always in range)
        xb[nxt] = __ldg(xl + 1);
        if constexpr (kTwo) {
          const uint4* xl2 = reinterpret_cast<const uint4*>(d + 1 < kCh ? xp2 + (d + 1) * 64 : xn2);
          xa2[nxt] = __ldg(xl2);
          xb2[nxt] = __ldg(xl2 + 1);
        }
        if constexpr (kPair) {  // one x fragment, both tiles (chain = tile)
          unit_mma<T, kTwo, kExact, 0>(acc, q[2 * d], sc[2 * d], xa[cur], xb[cur], xa2[cur], xb2[cur]);
          unit_mma<T, kTwo, kExact, 1>(acc, q[2 * d + 1], sc[2 * d + 1], xa[cur], xb[cur], xa2[cur],
                                       xb2[cur]);
        } else {
          unit_mma<T, kTwo, kExact>(acc, q[d], sc[d], xa[cur], xb[cur], xa2[cur], xb2[cur]);
        }
      }
      if constexpr (kCh % 2 == 1) {  // the next body's x must start in buffer 0
        xa[0] = xa[1];
        xb[0] = xb[1];
        xa2[0] = xa2[1];
        xb2[0] = xb2[1];
      }
      if (refill) {  // the next body's units (ptxas issues these at the body's end anyway)
#pragma unroll
        for (int d = 0; d < kCh; ++d)
#pragma unroll
          for (int j = 0; j < kT; ++j) {
            q[d * kT + j] = ld_stream128(wn + j * tstride + d * kUnitBytes);
            sc[d * kT + j] = ld_stream16(sn + j * tstride + d * kUnitBytes);
          }
        if constexpr (kPf > 0) prefetch_ahead(wp, pc, i / kBody);
      }
      wp = wn;
      sp = sn;
      xp = xn;
      xp2 = xn2;
      pc += kCh;
      if (tile_end) {
        park_group(pt);
        ++pt;
        pc = 0;
      }
    };
    int i = 0;
    for (; i + kBody < n; i += kBody) body(i, true);
    body(i, false);  // the last body: nothing left to load
    if (pc > 0) park_group(pt);
   } else {
    wait_inputs();
   }
  } else if (n > 0) {
    // General path (K not a multiple of 64 kBody): the pointer jumps after Pn chunks,
    // a tile can end after any unit, x offsets are clamped to K - 16.
    int lc = b % Pn;
    const uint8_t* wp =
        a.w + (size_t)((tile0 + b / Pn) * a.KC + ch0 + lc) * kUnitBytes + lane * 16;
    const uint8_t* sp = wp + (kUnitCodeBytes - 14 * lane);
    const size_t jump = (size_t)(a.KC - Pn + 1) * kUnitBytes;  // last chunk -> next tile
    uint4 q[kDepth];
    uint32_t sc[kDepth];
    auto request = [&](int d) {
      q[d] = ld_stream128(wp);
      sc[d] = ld_stream16(sp);
      const bool wrap = ++lc == Pn;
      lc = wrap ? 0 : lc;
      const size_t step = wrap ? jump : (size_t)kUnitBytes;
      wp += step;
      sp += step;
    };
#pragma unroll
    for (int d = 0; d < kDepth; ++d)
      if (d < n) request(d);  // weights are constant: stream them before the PDL wait
    wait_inputs();

    const T* xr = reinterpret_cast<const T*>(a.x) + (size_t)min(g, a.M - 1) * a.K;
    const T* xr2 = reinterpret_cast<const T*>(a.x) + (size_t)min(g + 8, a.M - 1) * a.K;
    const int kl = ch0 * 64 + 16 * t, kmax = a.K - 16;
    int pt = b / Pn, pc = b % Pn;  // the unit being processed: local tile, chunk
    int xo = kl + pc * 64;         // its x offset (unclamped)
    uint4 xa[2], xb[2], xa2[2], xb2[2];
    load_x<T>(xr, xo, kmax, xa[0], xb[0]);
    if constexpr (kTwo) load_x<T>(xr2, xo, kmax, xa2[0], xb2[0]);
    else xa2[0] = xb2[0] = xa2[1] = xb2[1] = make_uint4(0u, 0u, 0u, 0u);
    // Unit i sits in ring slot i % kDepth and x buffer i % 2 (kDepth even).
    auto step = [&](int d, int i) {
      const int cur = d & 1, nxt = cur ^ 1;
      const int nc = pc + 1 == Pn ? 0 : pc + 1;
      xo = nc == 0 ? kl : xo + 64;
      load_x<T>(xr, xo, kmax, xa[nxt], xb[nxt]);  // x one unit ahead (clamped: in range)
      if constexpr (kTwo) load_x<T>(xr2, xo, kmax, xa2[nxt], xb2[nxt]);
      unit_mma<T, kTwo, kExact>(acc, q[d], sc[d], xa[cur], xb[cur], xa2[cur], xb2[cur]);
      if (i + kDepth < n) request(d);
      if (nc == 0) {  // the tile is done
        park<kR>(acc, red, warp + pt, lane);
        ++pt;
      }
      pc = nc;
    };
    int i = 0;
    for (; i + kDepth <= n; i += kDepth) {
#pragma unroll
      for (int d = 0; d < kDepth; ++d) step(d, i + d);
    }
#pragma unroll
    for (int d = 0; d < kDepth - 1; ++d)
      if (i + d < n) step(d, i + d);
    if (pc > 0) park<kR>(acc, red, warp + pt, lane);
  } else {
    wait_inputs();
  }
  __syncthreads();

  // Sum the warps of each local tile (warp order: deterministic).
  const float factor = Traits<T>::kOutScale * scales_s[0] * (a.g_x ? __ldg(a.g_x) : 1.0f);
  auto tile_sum = [&](int r, int m, int row) {  // local tile r = kT p + j: warps of group p
    float s = 0.f;
    if (Pn > 0) {
      const int p = r / kT, j = r % kT;
      const int wa = p * kT * Pn / Q, wb = min(kWarps - 1, ((p + 1) * kT * Pn - 1) / Q);
      for (int w = wa; w <= wb; ++w) s += red[((size_t)(kT * (w + p) + j) * kR + m) * 16 + row];
    }
    return s;
  };
  if (a.swiglu) {
    // SwiGLU epilogue (S = 1, R even: the host checks). Local tiles 2p and 2p+1 are rows
    // 16j..16j+15 of gate and of up (j = tile0/2 + p, the weight's rows interleaved per 16);
    // h[m, 16j + row] = silu(g) * up with the model's roundings (g, up, silu(g) and the
    // product each rounded to T; silu with expf and a true division, as torch's eager
    // kernel). With g_q, h is the NVFP4 round trip of that value (16 lanes = one block of
    // 16 columns of h), what the W4A4 down projection reads.
    const int I = a.N / 2;
    const float gq = scales_s[2];
    const T* bias = reinterpret_cast<const T*>(a.bias);
    const int items2 = nR / 2 * a.M * 16;  // whole 16-lane groups: the shuffles' precondition
    for (int i = threadIdx.x; i < items2; i += kThreads) {
      const int p = i / (a.M * 16), m = (i / 16) % a.M, row = i % 16;
      const int ng = (tile0 + 2 * p) * 16 + row;  // the gate row (up: ng + 16)
      float gv = tile_sum(2 * p, m, row) * factor, uv = tile_sum(2 * p + 1, m, row) * factor;
      if (bias) {
        gv += Traits<T>::to_float(bias[ng]);
        uv += Traits<T>::to_float(bias[ng + 16]);
      }
      gv = round_to<T>(gv);
      uv = round_to<T>(uv);
      const float sv = round_to<T>(gv / (1.0f + expf(-gv)));
      float hv = round_to<T>(sv * uv);
      if (a.g_q) hv = fake_quant16(hv, gq);
      reinterpret_cast<T*>(a.y)[(size_t)m * I + (tile0 / 2 + p) * 16 + row] = Traits<T>::from_float(hv);
    }
    return;
  }
  float* cpart = red + (size_t)(kT * kWarps + a.R) * kR * 16;
  const int items = nR * a.M * 16;
  for (int i = threadIdx.x; i < items; i += kThreads) {
    const int r = i / (a.M * 16), m = (i / 16) % a.M, row = i % 16;
    const float s = tile_sum(r, m, row);
    if (S == 1) {
      const int nn = (tile0 + r) * 16 + row;
      if (nn < a.N) store_y<T>(a, factor, m, nn, s);
    } else {
      cpart[i] = s;
    }
  }
  if (S == 1) return;
  // Clusters: rank s finishes items [s*per, s*per + per) from every rank's cpart.
  cluster_sync();
  const int per = (items + S - 1) / S;
  for (int i = rank * per + threadIdx.x; i < min(items, (rank + 1) * per); i += kThreads) {
    float s = 0.f;
    for (int q = 0; q < S; ++q) s += ld_cluster(cpart + i, q);
    const int r = i / (a.M * 16), m = (i / 16) % a.M, row = i % 16;
    const int nn = (tile0 + r) * 16 + row;
    if (nn < a.N) store_y<T>(a, factor, m, nn, s);
  }
  cluster_sync();  // no CTA leaves while another still reads its shared memory
}

#ifdef RESETFP4_GEMV_MAXNREG
#define RESETFP4_GEMV_BOUNDS(kR) __maxnreg__(RESETFP4_GEMV_MAXNREG)
#else
#define RESETFP4_GEMV_BOUNDS(kR) __launch_bounds__(kThreads, Cfg<kR>::kMinBlocks)
#endif
template <typename T, int kR, bool kExact, bool kGeneral, bool kPair, bool kPf2 = false>
__global__ void RESETFP4_GEMV_BOUNDS(kR) gemv_kernel(const GemvArgs a) {
  gemv_body<T, kR, kExact, kGeneral, kPair, kPf2>(a);
}

// The wide build (M <= 8, aligned loop; session 14): RESETFP4_GEMV_WIDE_REGS registers per
// thread instead of 80 (2 CTAs per SM instead of 3). Same source, same arithmetic order
// (bit-identical results); with registers to spare ptxas issues the next body's weight loads
// earlier in the body (4 of its 16 mmas after them instead of 2), so the first unit of the
// next body waits less of an L2 round trip. 112, not 128: two CTAs of 128 fill the register
// file, so the next kernel (the Triton add + RMSNorm, 52 registers x 128 threads) cannot
// become resident before the GEMV's CTAs exit and its programmatic dependent launch gains
// nothing. H200, Qwen3-8B decode step (dev/kernels/NOTES.md, session 14), W4A16 batch 1 /
// batch 8: 3-CTA build 1.886 / 2.360 ms, wide 128 1.858 / 2.332, wide 112 1.863 / 2.189.
// Used when the plan's grid has at most 2 CTAs per SM anyway (launch_gemv, gemv_wide_mode).
#ifndef RESETFP4_GEMV_WIDE_REGS
#define RESETFP4_GEMV_WIDE_REGS 112
#endif
constexpr int kWideRegs = RESETFP4_GEMV_WIDE_REGS;
static_assert(kWideRegs <= 128 && kWideRegs % 8 == 0, "2 CTAs of 256 threads per SM");
template <typename T, bool kExact, bool kPair>
__global__ void __maxnreg__(kWideRegs) gemv_kernel_wide(const GemvArgs a) {
  gemv_body<T, 8, kExact, false, kPair>(a);
}

// ---- host launcher (plain C++: the binding passes the current stream) ----

template <typename T, int kR, bool kExact, bool kGeneral, bool kPair = false, bool kWide = false,
          bool kPf2 = false>
static cudaError_t launch_kernel(const GemvArgs& a, cudaStream_t stream) {
  static_assert(!kWide || (kR <= 8 && !kGeneral), "the wide build is an M <= 8 aligned-loop build");
  static_assert(!kPf2 || (kR <= 8 && !kGeneral && !kPair && !kWide),
                "the two-body prefetch runs only in the one-tile 3-CTA build for M <= 8");
  void (*kern)(const GemvArgs);
  if constexpr (kWide) kern = gemv_kernel_wide<T, kExact, kPair>;
  else kern = gemv_kernel<T, kR, kExact, kGeneral, kPair, kPf2>;
  const size_t smem = smem_floats(kR, a.R, a.S, kPair ? 2 : 1) * sizeof(float);
  const int dev = current_device();
  const int optin = smem_optin(dev);
  if (smem > (size_t)(optin > 0 ? optin : 48 * 1024)) return cudaErrorInvalidValue;  // R too large
  // Opt in above 48 KB, per device and kernel, once per size increase.
  static std::atomic<size_t> allowed[64];  // per template instance; 0 = only the default 48 KB so far
  const bool cached = dev >= 0 && dev < 64;
  if (smem > 48 * 1024 && (!cached || smem > allowed[dev].load(std::memory_order_relaxed))) {
    const cudaError_t e =
        cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    if (cached) allowed[dev].store(smem, std::memory_order_relaxed);
  }
  return launch_with_pdl(kern, dim3((unsigned)(a.S * ((a.tiles + a.R - 1) / a.R))),
                         dim3(kThreads), smem, stream, (unsigned)a.S, a);
}

template <typename T, int kR>
static cudaError_t launch_class(const GemvArgs& a, bool exact, bool pair, bool wide, bool pf2,
                                cudaStream_t stream) {
  // The aligned loop needs whole bodies of 64-wide chunks (K % (64 kBody) == 0).
  if (a.K % (kChunkK * Cfg<kR>::kBody) != 0)
    return exact ? launch_kernel<T, kR, true, true>(a, stream)
                 : launch_kernel<T, kR, false, true>(a, stream);
  if constexpr (kR <= 8) {
    if (wide) {
      if (pair)
        return exact ? launch_kernel<T, kR, true, false, true, true>(a, stream)
                     : launch_kernel<T, kR, false, false, true, true>(a, stream);
      return exact ? launch_kernel<T, kR, true, false, false, true>(a, stream)
                   : launch_kernel<T, kR, false, false, false, true>(a, stream);
    }
    if (pf2 && !pair)
      return exact ? launch_kernel<T, kR, true, false, false, false, true>(a, stream)
                   : launch_kernel<T, kR, false, false, false, false, true>(a, stream);
  }
  if (pair)
    return exact ? launch_kernel<T, kR, true, false, true>(a, stream)
                 : launch_kernel<T, kR, false, false, true>(a, stream);
  return exact ? launch_kernel<T, kR, true, false>(a, stream)
               : launch_kernel<T, kR, false, false>(a, stream);
}

// Pair mode (session 8): the aligned loop's bodies hold 2 tiles x kBody/2 chunks, so each x
// fragment loaded from L1 feeds two tiles' mma (at M = 8 a unit's x fragments are 1 KB
// against 576 weight bytes). RESETFP4_GEMV_PAIR (read once): 1 (default) on for M <= 8,
// 0 off. Used where every CTA owns whole tile pairs: S = 1, R and the tile count even, the
// aligned loop. Also at M = 1 (where x is small), so that a row's result does not depend on
// how many rows share the call within the M <= 8 class (continuous batching relies on it).
// Not for M > 8: measured slower there (8B.gate_up M=16 24.4 -> 25.1 µs, 14B.qkv 10.7 ->
// 11.2; dev/kernels/NOTES.md, session 8).
// An on/off environment switch, on unless it starts with '0'.
static int env_switch(const char* name) {
  const char* e = std::getenv(name);
  return (e && e[0] == '0') ? 0 : 1;
}
int gemv_pair_mode() {
  static const int mode = env_switch("RESETFP4_GEMV_PAIR");
  return mode;
}

// Wide build (session 14; gemv_kernel_wide): M <= 8 on the aligned loop runs the build for
// 2 CTAs per SM when the plan's grid has at most 2 CTAs per SM (S * ceil(tiles / R) <= 2 SMs),
// where the 3-CTA build's third slot would stay empty anyway. H200, bench kernels at M = 1
// with the 128-register wide build: 8B.down 12.0 -> 9.4 µs, 8B.o 4.9 -> 4.4
// (dev/kernels/NOTES.md, session 14).
// RESETFP4_GEMV_WIDE (read once): 1 (default) on, 0 off. The results are bit-identical.
int gemv_wide_mode() {
  static const int mode = env_switch("RESETFP4_GEMV_WIDE");
  return mode;
}

// Two-body prefetch (session 17; gemv_body's kPf2): for M <= 8 on the aligned loop with
// one-tile bodies (not pair, not wide) where a warp streams at least kPf2MinBodies bodies,
// the L2 prefetch is issued after every other body and covers two. H200, variant_bench.py,
// two runs, M = 1: 14B.gate_up -2%, 14B.down -4 to -6%, 32B.gate_up -4% (µs); it was slower on
// the short ranges (8B.down, 6 bodies a warp: +2%; 8B.qkv, 2: +3%, from the loop's schedule
// alone) and in the Qwen3-8B decode step at batch 8 (+1.3%), hence the rule, which no
// Qwen3-8B layer meets (dev/kernels/NOTES.md, session 17). Same arithmetic: bit-identical.
// RESETFP4_GEMV_PF2 (read once): 1 (default) on where the rule holds, 0 never.
constexpr int kPf2MinBodies = 7;
int gemv_pf2_mode() {
  static const int mode = env_switch("RESETFP4_GEMV_PF2");
  return mode;
}

// plan = {S, R} for the class of M (cluster size, tiles per cluster; see nvfp4_gemv.py plan).
// exact: some block scale is zero / subnormal / negative (decode_scales instead of fast_scale).
// swiglu: w holds [gate; up] (N = 2I rows) with the rows interleaved per 16 (tile 2j = gate
// rows 16j.., tile 2j+1 = up rows 16j..); y = silu(gate) * up, [M, I] (quantized like
// resetfp4.nvfp4.quantize with global scale *g_q when g_q is not null). Needs I % 16 == 0,
// S = 1 and R even (a CTA owns whole gate/up tile pairs).
template <typename T>
cudaError_t launch_gemv(const void* x, const void* w, const float* g_w,
                        const float* g_x, const void* bias, void* y, int M, int N, int K, int S,
                        int R, bool exact, bool swiglu, const float* g_q, cudaStream_t stream) {
  if (M < 1 || M > 16 || K % 16 != 0 || K < 16 || N < 1 || S < 1 || S > 8 || R < 1)
    return cudaErrorInvalidValue;
  if (swiglu ? (N % 32 != 0 || S != 1 || R % 2 != 0) : g_q != nullptr) return cudaErrorInvalidValue;
  const int tiles = (N + 15) / 16, KC = (K + 63) / 64;
  // Chunks per cluster rank; the aligned loop (K % (64 kBody) == 0) needs whole bodies.
  const int body = body_for_m(M);
  const bool aligned = K % (kChunkK * body) == 0;
  const int P = aligned ? ((KC + S - 1) / S + body - 1) / body * body : (KC + S - 1) / S;
  // Unit counts and a tile's K range in bytes (step_wrap, jump) must fit an int.
  if (R > tiles || (long long)tiles * KC > (1ll << 30) ||
      (long long)KC * kUnitBytes > 0x7fffffffll)
    return cudaErrorInvalidValue;
  if (S > 1 && cc_major(current_device()) < 9) return cudaErrorInvalidValue;  // clusters: sm_90
  const GemvArgs a{x, (const uint8_t*)w, g_w, g_x, bias, y, g_q,
                   M, N, K, KC, tiles, S, R, P, swiglu ? 1 : 0};
  const bool pair = gemv_pair_mode() == 1 && M <= 8 && aligned && S == 1 && R % 2 == 0 &&
                    tiles % 2 == 0;
  const long long ctas = (long long)S * ((tiles + R - 1) / R);
  const bool wide = gemv_wide_mode() == 1 && M <= 8 && aligned &&
                    ctas <= 2ll * device_attr(cudaDevAttrMultiProcessorCount, 2, current_device());
  // Bodies per warp of a full CTA (gemv_body's Q / kBody for R tiles and P chunks).
  const long long warp_bodies = ((long long)R * std::min(P, KC) + kWarps * body - 1) / (kWarps * body);
  const bool pf2 = gemv_pf2_mode() == 1 && M <= 8 && aligned && !pair && !wide &&
                   warp_bodies >= kPf2MinBodies;
  if (M > 8) return launch_class<T, 16>(a, exact, pair, false, false, stream);
  return launch_class<T, 8>(a, exact, pair, wide, pf2, stream);
}

template cudaError_t launch_gemv<__nv_bfloat16>(const void*, const void*, const float*,
    const float*, const void*, void*, int, int, int, int, int, bool, bool, const float*,
    cudaStream_t);
template cudaError_t launch_gemv<__half>(const void*, const void*, const float*, const float*,
    const void*, void*, int, int, int, int, int, bool, bool, const float*, cudaStream_t);

}  // namespace resetfp4
