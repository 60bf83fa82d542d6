// Decode attention in one kernel (sm_90): split-KV CTAs of one (row, KV head) form a thread-
// block cluster and combine their partials through distributed shared memory (session 8).
//
// Semantics: those of resetfp4.engine.attention.decode_attention_fused (the Triton split +
// combine kernels it replaces where this one serves): from the raw q/k/v projections of one
// token per row, per-head RMSNorm (Qwen3, optional) and rotate-half RoPE with the eager
// model's roundings; the CTA that owns position pos[b] writes the new key/value into the
// cache; softmax(q k^T / sqrt(D)) v over keys 0..pos[b] (cached keys < pos[b] inside the
// view [0, attn_len), plus the new key when pos[b] < attn_len), p rounded to the activation
// dtype before p v, fp32 elsewhere; optionally the output's NVFP4 round trip (W4A4 o_proj).
//
// Work split: grid (S, B * H_kv), clusters of the S CTAs of one (row b, KV head h); CTA s
// owns keys [s * chunk, (s + 1) * chunk) (chunk a multiple of 64). 4 warps; a 64-key tile
// gives each warp 16 keys: S = Q K^T with mma.m16n8k16 (the rep query heads of h padded to
// 16 rows, K^T fragments by ldmatrix), an online softmax per warp, O += P V (P from the
// score registers, V fragments by ldmatrix.trans). K/V tiles stream through a 2-stage
// shared-memory ring filled by cp.async (16-byte chunks, XOR-swizzled rows: no bank
// conflicts for ldmatrix); the first `pre` tiles are requested before griddepcontrol.wait
// (cached keys are constant during the step; positions past pos[b] are masked and their
// values zeroed once pos[b] is known), later ones only for keys below the attended end.
// Then the warps' partials (row max, row sum, O) are merged in the CTA, the cluster syncs,
// and each CTA finishes a slice of the rep x D outputs from all S CTA partials (DSMEM
// loads), in split order: deterministic.
//
// Only CUDA headers: CI compiles this file without a GPU (see .ci/run).
#include "nvfp4_common.cuh"

#include <algorithm>

namespace resetfp4 {

namespace attn {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileKeys = 64;
constexpr int kStages = 2;
constexpr int kRows = 16;  // query heads per KV head, padded (mma rows)
constexpr float kNegInf = -1e30f;  // masked score (finite: see the combine)
constexpr int kMaxSplits = 16;     // CTAs per cluster (above 8: non-portable, H100/H200 have it)

struct Args {
  const void* q;   // [B, H*D] rows at stride sq (elements)
  const void* k;   // [B, H_kv*D] stride sk
  const void* v;   // [B, H_kv*D] stride sv
  const void* qw;  // [D] or null (then kw is null too: no per-head norm)
  const void* kw;
  const void* cos;  // [B, D] stride scs
  const void* sin;  // [B, D] stride sss (signed)
  void* kc;         // [*, H_kv, cache_len, D], row stride D, strides skb, skh
  void* vc;
  const long long* pos;  // [B]
  void* out;             // [B, H_kv, rep, D] strides sob, soh, sor
  const float* out_scale;  // [1] or null
  long long sq, sk, sv, scs, sss, skb, skh, sob, soh, sor;
  float eps, sm_scale;
  int h_kv, rep, seq, cache_len, splits, chunk, pre;
};

// Byte offset of 16-byte chunk c of row r in a [rows][D] tile of T (XOR swizzle).
template <int D>
__device__ __forceinline__ uint32_t swz(int r, int c) {
  constexpr int kChunks = D / 8;
  return (uint32_t)(r * D * 2 + ((c ^ (r & 7)) & (kChunks - 1)) * 16);
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
}

// Shared-memory address of `p` in CTA `rank` of this cluster, and a load from it. Volatile
// (kept after the cluster barrier, itself volatile asm) but with no memory clobber, so
// that the caller's independent loads are issued back to back before their first use.
__device__ __forceinline__ uint32_t cluster_addr(const void* p, int rank) {
  uint32_t r = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(smem_addr(p)), "r"(rank));
#endif
  return r;
}
__device__ __forceinline__ float ld_dsmem(uint32_t addr) {
  float v = 0.f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(addr));
#endif
  return v;
}

template <typename T>
__device__ __forceinline__ float rnd(float v) {  // rounded to T, back in fp32
  return Traits<T>::to_float(Traits<T>::from_float(v));
}
template <typename T>
__device__ __forceinline__ uint32_t pack2(float a, float b) {
  T h[2] = {Traits<T>::from_float(a), Traits<T>::from_float(b)};
  return *reinterpret_cast<uint32_t*>(h);
}

// One head of a raw projection (row pointer `raw`, D elements) prepared by one warp: lane
// holds elements d = E lane .. E lane + E - 1 (E = D / 32) in `y`, T-rounded values as the
// eager model computes them (attention.prep_heads_ref): RMSNorm with weight w (if given),
// then y = x cos + partner(x) sin with the rotate-half partner d +- D/2 (lane ^ 16).
template <typename T, int D>
__device__ __forceinline__ void prep_head(const T* raw, const T* w, const T* c, const T* s, float eps,
                                          int lane, float (&y)[D / 32]) {
  constexpr int E = D / 32;
  float x[E];
#pragma unroll
  for (int e = 0; e < E; ++e) x[e] = Traits<T>::to_float(raw[E * lane + e]);
  if (w != nullptr) {
    float ss = 0.f;
#pragma unroll
    for (int e = 0; e < E; ++e) ss += x[e] * x[e];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float r = __fdiv_rn(1.0f, __fsqrt_rn(__fdiv_rn(ss, (float)D) + eps));
#pragma unroll
    for (int e = 0; e < E; ++e) x[e] = rnd<T>(Traits<T>::to_float(w[E * lane + e]) * rnd<T>(x[e] * r));
  }
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const float xp = __shfl_xor_sync(0xffffffffu, x[e], 16);
    const float a = rnd<T>(x[e] * Traits<T>::to_float(c[E * lane + e]));
    const float b = rnd<T>(xp * Traits<T>::to_float(s[E * lane + e]));
    y[e] = rnd<T>(a + b);
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attn_kernel(const Args a) {
  constexpr int E = D / 32;
  constexpr int kChunks = D / 8;           // 16-byte chunks per row
  constexpr int kTileBytes = kTileKeys * D * 2;
  constexpr int kNd = D / 8;               // n-blocks of O
  constexpr int kOd = D + 8;               // padded row of a warp's O partial (floats)
  constexpr int kWs = 2 * kRows + kRows * kOd;  // a warp's partial (floats)
  extern __shared__ __align__(128) uint8_t smem[];
  // [Q 16 x D][stage 0: K, V][stage 1: K, V][new k, v: 2 x D of T]; after the loop the ring
  // holds the warps' partials, and `part` (below) the CTA's.
  uint8_t* qs = smem;
  uint8_t* ring = smem + kRows * D * 2;
  T* knew = reinterpret_cast<T*>(ring + kStages * 2 * kTileBytes);
  T* vnew = knew + D;
  // The CTA's partial: (m, l) per row, then O [rep][D]; read by the whole cluster.
  float* part = reinterpret_cast<float*>(vnew + D);
  pdl_launch_dependents();
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int s = blockIdx.x, bh = blockIdx.y;
  const long long b = bh / a.h_kv, h = bh % a.h_kv;
  const int start = s * a.chunk;
  const int nt = a.chunk / kTileKeys;
  const T* kbase = reinterpret_cast<const T*>(a.kc) + b * a.skb + h * a.skh;
  const T* vbase = reinterpret_cast<const T*>(a.vc) + b * a.skb + h * a.skh;
  const uint32_t ring0 = smem_addr(ring);

  // Request tile j's keys below `lim` into stage j % 2 (rows at or past lim: zero-filled,
  // no global read).
  auto request = [&](int j, int lim) {
    const uint32_t kd = ring0 + (j % kStages) * 2 * kTileBytes, vd = kd + kTileBytes;
    if (start + j * kTileKeys >= lim) {  // nothing to read: an empty group keeps the count
      cp_commit();
      return;
    }
    for (int i = tid; i < kTileKeys * kChunks; i += kThreads) {
      const int r = i / kChunks, c = i % kChunks, key = start + j * kTileKeys + r;
      const bool ok = key < lim;
      const long long off = (long long)(ok ? key : 0) * D + c * 8;
      cp_async16(kd + swz<D>(r, c), kbase + off, ok);
      cp_async16(vd + swz<D>(r, c), vbase + off, ok);
    }
    cp_commit();
  };
  for (int j = 0; j < a.pre; ++j) request(j, a.seq);  // before the wait: any cached key
  pdl_wait();  // q/k/v (the projection), pos, cos/sin: only after the previous kernel

  const long long last = a.pos[b];
  // Attended keys of this CTA: [start, kend); the new key (pos) is attended iff pos < seq.
  const int kend = (int)min((long long)start + a.chunk, last < a.seq ? last + 1 : (long long)a.seq);
  const int owner = last < a.seq ? (int)(last / a.chunk) : 0;
  const bool own = s == owner && last >= 0 && last < a.cache_len;
  const T* cosr = reinterpret_cast<const T*>(a.cos) + b * a.scs;
  const T* sinr = reinterpret_cast<const T*>(a.sin) + b * a.sss;
  // Query heads h*rep .. h*rep+rep-1 -> Q rows (padded with zeros to 16); the owner's warp 0
  // also prepares the new key (and copies the value) and writes both into the cache.
  for (int j = warp; j < kRows; j += kWarps) {
    float y[E];
    if (j < a.rep) {
      const T* raw = reinterpret_cast<const T*>(a.q) + b * a.sq + (h * a.rep + j) * D;
      prep_head<T, D>(raw, reinterpret_cast<const T*>(a.qw), cosr, sinr, a.eps, lane, y);
    } else {
#pragma unroll
      for (int e = 0; e < E; ++e) y[e] = 0.f;
    }
#pragma unroll
    for (int e = 0; e < E; ++e) {  // element d = E lane + e: chunk d / 8, slot d % 8
      const int d = E * lane + e;
      *reinterpret_cast<T*>(qs + swz<D>(j, d / 8) + (d % 8) * 2) = Traits<T>::from_float(y[e]);
    }
  }
  if (own && warp == 0) {
    float y[E];
    const T* raw = reinterpret_cast<const T*>(a.k) + b * a.sk + h * D;
    prep_head<T, D>(raw, reinterpret_cast<const T*>(a.kw), cosr, sinr, a.eps, lane, y);
    const T* vraw = reinterpret_cast<const T*>(a.v) + b * a.sv + h * D;
    T* kdst = reinterpret_cast<T*>(a.kc) + b * a.skb + h * a.skh + last * D;
    T* vdst = reinterpret_cast<T*>(a.vc) + b * a.skb + h * a.skh + last * D;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int d = E * lane + e;
      const T kv = Traits<T>::from_float(y[e]);
      knew[d] = kv;
      vnew[d] = vraw[d];
      kdst[d] = kv;
      vdst[d] = vraw[d];
    }
  }
  // Later tiles: only keys below kend (nothing past pos is read).
  for (int j = a.pre; j < min(nt, kStages); ++j) request(j, kend);

  float o[kNd][4];
#pragma unroll
  for (int n = 0; n < kNd; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m0 = kNegInf, m1 = kNegInf, l0 = 0.f, l1 = 0.f;  // rows g, g + 8 (l: this lane's part)
  const uint32_t q0 = smem_addr(qs);
  for (int j = 0; j < nt; ++j) {
    if (j + 1 < nt) cp_wait<1>(); else cp_wait<0>();
    __syncthreads();  // tile j landed (every thread's copies); Q written
    const int base = start + j * kTileKeys;
    const uint32_t kt = ring0 + (j % kStages) * 2 * kTileBytes, vt = kt + kTileBytes;
    if (base < kend) {
      // Values past the attended end: zeroed (their p is 0, but 0 * inf is not); the
      // owner's new key/value replace the stale cache row at pos when pos is attended (an
      // idle slot past the view keeps the zeros). (A uniform condition: most tiles need
      // neither.)
      const bool mine = own && last >= base && last < base + kTileKeys && last < kend;
      const bool fix = base + kTileKeys > kend || mine;
      for (int i = tid; fix && i < kTileKeys * kChunks; i += kThreads) {
        const int r = i / kChunks, c = i % kChunks, key = base + r;
        uint4* vp = reinterpret_cast<uint4*>(ring + (vt - ring0) + swz<D>(r, c));
        uint4* kp = reinterpret_cast<uint4*>(ring + (kt - ring0) + swz<D>(r, c));
        if (key >= kend) *vp = make_uint4(0u, 0u, 0u, 0u);
        if (mine && key == last) {
          *kp = reinterpret_cast<const uint4*>(knew)[c];
          *vp = reinterpret_cast<const uint4*>(vnew)[c];
        }
      }
      if (fix) __syncthreads();
      // S = Q K^T for this warp's 16 keys (two n-blocks of 8).
      float sc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
      const int kb = warp * 16;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t qa[4], kf[4];
        const int mi = lane / 8;
        ldsm_x4(q0 + swz<D>((mi & 1) * 8 + lane % 8, 2 * kk + (mi >> 1)), qa);
        ldsm_x4(kt + swz<D>(kb + (mi >> 1) * 8 + lane % 8, 2 * kk + (mi & 1)), kf);
        mma_16816(sc[0], qa, kf[0], kf[1], (T*)nullptr);
        mma_16816(sc[1], qa, kf[2], kf[3], (T*)nullptr);
      }
      // Online softmax (rows g, g + 8; the 4 lanes of a row share its max).
      float mx0 = m0, mx1 = m1;
#pragma unroll
      for (int nb = 0; nb < 2; ++nb)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int key = base + kb + nb * 8 + 2 * t + e;
          const bool ok = key < kend;
          sc[nb][e] = ok ? sc[nb][e] * a.sm_scale : kNegInf;
          sc[nb][2 + e] = ok ? sc[nb][2 + e] * a.sm_scale : kNegInf;
          mx0 = fmaxf(mx0, sc[nb][e]);
          mx1 = fmaxf(mx1, sc[nb][2 + e]);
        }
#pragma unroll
      for (int off = 1; off < 4; off <<= 1) {
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
      }
      const float al0 = __expf(m0 - mx0), al1 = __expf(m1 - mx1);
      m0 = mx0;
      m1 = mx1;
      float p[2][4];
#pragma unroll
      for (int nb = 0; nb < 2; ++nb)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          p[nb][e] = __expf(sc[nb][e] - m0);
          p[nb][2 + e] = __expf(sc[nb][2 + e] - m1);
        }
      l0 = l0 * al0 + p[0][0] + p[0][1] + p[1][0] + p[1][1];
      l1 = l1 * al1 + p[0][2] + p[0][3] + p[1][2] + p[1][3];
#pragma unroll
      for (int n = 0; n < kNd; ++n) {
        o[n][0] *= al0;
        o[n][1] *= al0;
        o[n][2] *= al1;
        o[n][3] *= al1;
      }
      // O += P V: P (16 rows x 16 keys) from the score registers, rounded to T.
      const uint32_t pa[4] = {pack2<T>(p[0][0], p[0][1]), pack2<T>(p[0][2], p[0][3]),
                              pack2<T>(p[1][0], p[1][1]), pack2<T>(p[1][2], p[1][3])};
      const int mi = lane / 8;
#pragma unroll
      for (int n = 0; n < kNd; n += 2) {
        uint32_t vf[4];
        ldsm_x4_t(vt + swz<D>(kb + (mi & 1) * 8 + lane % 8, n + (mi >> 1)), vf);
        mma_16816(o[n], pa, vf[0], vf[1], (T*)nullptr);
        mma_16816(o[n + 1], pa, vf[2], vf[3], (T*)nullptr);
      }
    }
    __syncthreads();  // stage j % 2 is free again
    if (j + kStages < nt) request(j + kStages, kend);
  }

  // Warp partials -> the ring (free now): per warp [2][kRows] (m, l) then [kRows][kOd]
  // (rows padded by 8 floats: the 8 row groups of a store land on different banks).
  float* wp = reinterpret_cast<float*>(ring) + warp * kWs;
#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  if (t == 0) {
    wp[g] = m0;
    wp[g + 8] = m1;
    wp[kRows + g] = l0;
    wp[kRows + g + 8] = l1;
  }
  float* wo = wp + 2 * kRows;
#pragma unroll
  for (int n = 0; n < kNd; ++n) {
    *reinterpret_cast<float2*>(wo + g * kOd + 8 * n + 2 * t) = make_float2(o[n][0], o[n][1]);
    *reinterpret_cast<float2*>(wo + (g + 8) * kOd + 8 * n + 2 * t) = make_float2(o[n][2], o[n][3]);
  }
  __syncthreads();
  // CTA partial (warp order): m = max_w m_w, l = sum_w e^(m_w - m) l_w, O likewise.
  const float* w0 = reinterpret_cast<const float*>(ring);
  for (int i = tid; i < a.rep * D; i += kThreads) {
    const int r = i / D, d = i % D;
    float m = kNegInf;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, w0[w * kWs + r]);
    float l = 0.f, acc = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = __expf(w0[w * kWs + r] - m);
      l += f * w0[w * kWs + kRows + r];
      acc += f * w0[w * kWs + 2 * kRows + r * kOd + d];
    }
    part[2 * kRows + r * D + d] = acc;
    if (d == 0) {
      part[r] = m;
      part[kRows + r] = l;
    }
  }
  cluster_sync();  // every CTA's partial is written and visible to the cluster
  // Outputs [rep, D]: CTA s finishes items [s * per, s * per + per) (per: a multiple of 32,
  // so each 16-lane group holds one 16-column block of one row), from the S partials in
  // split order.
  const int items = a.rep * D;
  const int per = ((items + a.splits - 1) / a.splits + 31) / 32 * 32;
  const float gq = a.out_scale ? __ldg(a.out_scale) : 0.f;
  for (int i0 = s * per; i0 < min(items, s * per + per); i0 += kThreads) {
    const int i = i0 + tid;
    const bool ok = i < min(items, s * per + per);
    const int r = ok ? i / D : 0, d = ok ? i % D : 0;
    float pm[kMaxSplits], pl[kMaxSplits], po[kMaxSplits];  // all loads in flight at once
#pragma unroll
    for (int q = 0; q < kMaxSplits; ++q) {
      if (q < a.splits) {
        const uint32_t base = cluster_addr(part, q);
        pm[q] = ld_dsmem(base + 4 * r);
        pl[q] = ld_dsmem(base + 4 * (kRows + r));
        po[q] = ld_dsmem(base + 4 * (2 * kRows + r * D + d));
      }
    }
    float m = kNegInf;
#pragma unroll
    for (int q = 0; q < kMaxSplits; ++q)
      if (q < a.splits) m = fmaxf(m, pm[q]);
    float den = 0.f, acc = 0.f;
#pragma unroll
    for (int q = 0; q < kMaxSplits; ++q) {
      if (q < a.splits) {
        const float f = __expf(pm[q] - m);
        den += f * pl[q];
        acc += f * po[q];
      }
    }
    float v = rnd<T>(acc / den);
    if (a.out_scale) v = fake_quant16(v, gq);  // 16 lanes = one 16-column block
    if (ok)
      reinterpret_cast<T*>(a.out)[b * a.sob + h * a.soh + r * a.sor + d] = Traits<T>::from_float(v);
  }
  cluster_sync();  // no CTA leaves while another still reads its shared memory
}

}  // namespace attn

// Shared memory of the kernel (bytes): Q, the ring (later the warps' partials), the new
// k/v, and the CTA partial sized by rep (Qwen3-8B: ~71 KB, so 3 CTAs fit on an SM; a
// 16-row partial made it 77 KB, 2 CTAs, and the batch-8 step 6% slower).
inline size_t attn_smem(int D, int rep) {
  const size_t ring = (size_t)attn::kStages * 2 * attn::kTileKeys * D * 2;
  const size_t warps = (size_t)attn::kWarps * (2 * attn::kRows + attn::kRows * (D + 8)) * 4;
  return (size_t)attn::kRows * D * 2 + std::max(ring, warps) + 2 * D * 2 +
         (2 * attn::kRows + (size_t)rep * D) * 4;
}

template <typename T, int D>
static cudaError_t attn_launch(const attn::Args& a, int batch, cudaStream_t stream) {
  auto* kern = attn::attn_kernel<T, D>;
  const size_t smem = attn_smem(D, a.rep);
  static std::atomic<size_t> ready[64];  // per device: the largest shared memory set so far
  const int dev = current_device();
  if (dev < 0 || dev >= 64 || smem > ready[dev].load(std::memory_order_relaxed)) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (e != cudaSuccess) return e;
    if (dev >= 0 && dev < 64) ready[dev].store(smem, std::memory_order_relaxed);
  }
  return launch_with_pdl(kern, dim3((unsigned)a.splits, (unsigned)(batch * a.h_kv)), dim3(attn::kThreads),
                         smem, stream, (unsigned)a.splits, a);
}

// The host checks shapes and dtypes (resetfp4.engine.attention); here: what the kernel's
// design needs. splits: 1..16 (clusters above 8 are non-portable: H100/H200 have them).
template <typename T>
cudaError_t launch_decode_attention(const void* q, const void* k, const void* v, const void* qw,
                                    const void* kw, const void* cos, const void* sin, void* kc, void* vc,
                                    const long long* pos, void* out, const float* out_scale,
                                    const long long* strides, float eps, float sm_scale, int batch,
                                    int h_kv, int rep, int D, int seq, int cache_len, int splits,
                                    int chunk, int pre, cudaStream_t stream) {
  if (cc_major(current_device()) < 9 || batch < 1 || h_kv < 1 || rep < 1 || rep > attn::kRows ||
      splits < 1 || splits > attn::kMaxSplits || chunk < attn::kTileKeys || chunk % attn::kTileKeys ||
      (long long)splits * chunk < seq || seq < 1 || seq > cache_len || pre < 0 || pre > attn::kStages ||
      (out_scale && D % 16))
    return cudaErrorInvalidValue;
  attn::Args a{q, k, v, qw, kw, cos, sin, kc, vc, pos, out, out_scale,
               strides[0], strides[1], strides[2], strides[3], strides[4], strides[5], strides[6],
               strides[7], strides[8], strides[9], eps, sm_scale,
               h_kv, rep, seq, cache_len, splits, chunk, std::min(pre, chunk / attn::kTileKeys)};
  if (D == 128) return attn_launch<T, 128>(a, batch, stream);
  if (D == 64) return attn_launch<T, 64>(a, batch, stream);
  return cudaErrorInvalidValue;
}

template cudaError_t launch_decode_attention<__nv_bfloat16>(const void*, const void*, const void*,
    const void*, const void*, const void*, const void*, void*, void*, const long long*, void*,
    const float*, const long long*, float, float, int, int, int, int, int, int, int, int, int,
    cudaStream_t);
template cudaError_t launch_decode_attention<__half>(const void*, const void*, const void*,
    const void*, const void*, const void*, const void*, void*, void*, const long long*, void*,
    const float*, const long long*, float, float, int, int, int, int, int, int, int, int, int,
    cudaStream_t);

}  // namespace resetfp4
