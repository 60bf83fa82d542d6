// Shared device helpers of the NVFP4 kernels: the repacked weight layout, the E2M1 decode
// in registers, the tensor-core product, and the launch helpers.
//
// Repacked weight layout (built once at load time by resetfp4.kernels.nvfp4_gemv.repack).
// A "unit" is 16 weight rows x 64 K (four K blocks of 16, one e4m3 scale per row and block):
//   T = ceil(N/16) row tiles, KC = ceil(K/64) chunks (padding: code 0, scale 0), and the
//   T*KC units of 576 bytes (512 code bytes, then 64 scale bytes) are stored tile-major
//   (u = tile*KC + chunk), so the K range of a tile is one contiguous byte range.
//   codes  bytes 0..511 of a unit, [32 lanes][4 words][4 bytes]: lane l (g = l/4, t = l%4) holds rows
//          g and g+8 of block t of the chunk (32 codes); word s is the mma.m16n8k16 A
//          fragment of K step s, with the K index permuted inside the chunk (the same
//          permutation is applied to x, so the product is unchanged): register r (a0..a3)
//          = row 16*tile + g + 8*(r&1), k = 64*chunk + 16t + 4s + 2*(r>>1) + half.
//          So the x values a lane needs for the 4 K steps are the 16 contiguous elements
//          64*chunk + 16t .. +15 (two 16-byte loads), and all its weights share two scales.
//          The 8 codes of word s sit at bit positions chosen so that the bf16 pattern of
//          each register is one or two shifts and a mask away (see decode_word):
//          code bits (m, e0, e1, sign) of register r, low half, are at
//          r0: 0,1,2,9   r1: 6,7,8,15   r2: 10,11,12,19   r3: 4,5,14,13
//          and the high half at the same positions + 16 (mod 32).
//   scales bytes 512..575 of a unit, [32 lanes][2]: byte h of lane (g, t) = e4m3 bits of row
//          16*tile + g + 8h, block 4*chunk + t.
// Decode: a code's 3 magnitude bits land at the bottom of the bf16 exponent (bits 6..8)
// and its sign at bit 15, which is e2m1 * 2^-126 (subnormal for codes 0/1, exactly like
// E2M1's own subnormal); the 2^126 goes into the block scale. e2m1 * fp32(scale) is exact
// in bf16/fp16 (<= 6 significant bits, range 2^-10..2688), so the tensor core sees the
// exact dequantized weight / g_w, and accumulates in fp32.
#pragma once
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <stdint.h>

#include <atomic>
#include <cstdlib>

namespace resetfp4 {

constexpr int kTileRows = 16;
constexpr int kChunkK = 64;
constexpr int kUnitCodeBytes = 512;  // 16 rows x 64 codes x 4 bits
constexpr int kUnitScaleBytes = 64;  // 16 rows x 4 blocks x one e4m3
constexpr int kUnitBytes = kUnitCodeBytes + kUnitScaleBytes;  // codes, then scales

template <typename T> struct Traits;
template <> struct Traits<__nv_bfloat16> {
  static constexpr int kScaleShift = 4;          // e4m3 bits << 4 = bs * 2^-120 in bf16
  static constexpr uint32_t kScaleMask = 0x07F007F0u;
  static constexpr float kOutScale = 512.0f;    // weights enter the mma as e2m1*bs*2^-9
  // Fast scale path (normal e4m3 only): (b << 4) + (237 << 7) is bf16 bs * 2^117
  // (e4m3 exponent e -> e + 237 <= 252; the low half never carries into the high half).
  static constexpr uint32_t kFastMul = 16u, kFastAdd = 0x76807680u;
  static __device__ __forceinline__ uint32_t mul2(uint32_t a, uint32_t b) {
    __nv_bfloat162 r = __hmul2(*reinterpret_cast<__nv_bfloat162*>(&a),
                               *reinterpret_cast<__nv_bfloat162*>(&b));
    return *reinterpret_cast<uint32_t*>(&r);
  }
  // bs*2^-120 -> bs*2^117 (two exact power-of-two products; 2^237 is not a bf16).
  static __device__ __forceinline__ uint32_t scale_fix(uint32_t s) {
    return mul2(mul2(s, 0x7F007F00u /*2^127*/), 0x76807680u /*2^110*/);
  }
  // bf16 code pattern (e2m1*2^-126) -> weight e2m1*bs*2^-9, one exact product.
  static __device__ __forceinline__ uint32_t weight(uint32_t h, uint32_t s) { return mul2(h, s); }
  static __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
};
template <> struct Traits<__half> {
  static constexpr int kScaleShift = 7;          // e4m3 bits << 7 = bs * 2^-8 in fp16
  static constexpr uint32_t kScaleMask = 0x3F803F80u;
  static constexpr float kOutScale = 1.0f;
  // Fast scale path (normal e4m3 only): (b << 7) + (8 << 10) is fp16 bs (bias 7 -> 15).
  static constexpr uint32_t kFastMul = 128u, kFastAdd = 0x20002000u;
  static __device__ __forceinline__ uint32_t mul2(uint32_t a, uint32_t b) {
    __half2 r = __hmul2(*reinterpret_cast<__half2*>(&a), *reinterpret_cast<__half2*>(&b));
    return *reinterpret_cast<uint32_t*>(&r);
  }
  static __device__ __forceinline__ uint32_t scale_fix(uint32_t s) {
    return mul2(s, 0x5C005C00u /*2^8*/);  // = bs exactly
  }
  // bf16 pattern -> fp16 pattern (magnitude to bits 9..11: e2m1*2^-14), then x 2^14 and
  // x bs: two exact products that keep every value normal.
  static __device__ __forceinline__ uint32_t weight(uint32_t h, uint32_t s) {
    const uint32_t f = (h & 0x80008000u) | ((h << 3) & 0x0E000E00u);
    return mul2(mul2(f, 0x74007400u /*2^14*/), s);
  }
  static __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
};

// One code word -> the 4 A registers as bf16x2 patterns e2m1 * 2^-126 (layout above).
__device__ __forceinline__ void decode_word(uint32_t q, uint32_t (&h)[4]) {
  constexpr uint32_t kMask = 0x81C081C0u;  // bits 6..8 (magnitude) and 15 (sign), per half
  h[0] = (q << 6) & kMask;
  h[1] = q & kMask;
  h[2] = __funnelshift_r(q, q, 4) & kMask;  // rotate: the high half's sign comes from bit 3
  h[3] = ((q << 2) & 0x80C080C0u) | ((q >> 6) & 0x01000100u);
}

// Bytes A, B of w (two e4m3 scales) -> x2 scale (low half = byte A) in the weight's units.
template <typename T, int A, int B> __device__ __forceinline__ uint32_t decode_scales(uint32_t w) {
  using Tr = Traits<T>;
  const uint32_t spread = __byte_perm(w, 0u, 0x4040u | (B << 8) | A);  // bytes A, B -> halves
  return Tr::scale_fix((spread << Tr::kScaleShift) & Tr::kScaleMask);
}

// Byte A of w (a normal e4m3 scale) -> x2 broadcast scale in the weight's units: one
// byte_perm and one integer multiply-add (valid only when every scale is a normal e4m3,
// which prepare_weight checks; otherwise the kernel uses decode_scales).
template <typename T, int A> __device__ __forceinline__ uint32_t fast_scale(uint32_t w) {
  const uint32_t spread = __byte_perm(w, 0u, 0x4040u | (A << 8) | A);  // byte A in both halves
  return spread * Traits<T>::kFastMul + Traits<T>::kFastAdd;
}

__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1, __nv_bfloat16*) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1, __half*) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
               "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// e4m3 bits -> fp32 (exact).
__device__ __forceinline__ float e4m3_value(uint32_t bits) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)bits, __NV_E4M3)));
}

// Round an fp32 value (already divided by its scale) to the nearest E2M1 code,
// round-half-to-even, saturating at +-6 (resetfp4.nvfp4.e2m1_encode).
__device__ __forceinline__ uint32_t e2m1_rne(float v) {
  // Midpoints of the magnitude grid 0,.5,1,1.5,2,3,4,6; ties go to the even code.
  const float a = fabsf(v);
  uint32_t mag = (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) +
                 (a >= 3.5f) + (a > 5.0f);
  return mag | ((v < 0.f) ? 8u : 0u);
}

__device__ __forceinline__ float e2m1_value(uint32_t code) {
  const uint32_t mag = code & 7u, e = mag >> 1, m = mag & 1u;
  const float v = e ? __uint_as_float(((e + 126u) << 23) | (m << 22)) : 0.5f * (float)m;
  return (code & 8u) ? -v : v;
}

// NVFP4 round trip of one 16-element block held by 16 consecutive lanes aligned to 16 (all
// of them call this; the other half of the warp may be absent): the block scale
// e4m3(amax / (6 gs)) (1 for an all-zero block), the code of v / (scale * gs), and the
// returned value e2m1(code) * fp32(scale), exact in bf16/fp16 (the global scale gs goes to
// the consuming GEMV's epilogue), as resetfp4.nvfp4.quantize(y, global_scale=gs).
__device__ __forceinline__ float fake_quant16(float v, float gs) {
  const unsigned mask = 0xFFFFu << (threadIdx.x & 16);
  float amax = fabsf(v);
#pragma unroll
  for (int o = 1; o < 16; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(mask, amax, o));
  float bs32 = amax / (6.0f * gs);  // true division (never built with -use_fast_math)
  if (bs32 == 0.f) bs32 = 1.0f;
  const float bsf = e4m3_value(__nv_cvt_float_to_fp8(bs32, __NV_SATFINITE, __NV_E4M3));
  return e2m1_value(e2m1_rne(v / (bsf * gs))) * bsf;
}

// ---- shared-memory address, programmatic dependent launch ----

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Programmatic dependent launch (sm_90): let the next kernel start its prologue now /
// wait until the previous kernel's results are visible. No-ops before sm_90.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// ---- thread-block clusters (sm_90): barrier, distributed shared memory ----

__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n"
               "barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}

// Float at the same shared-memory offset as `p`, in CTA `rank` of this cluster.
__device__ __forceinline__ float ld_cluster(const float* p, int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint32_t remote;
  float v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(smem_addr(p)), "r"(rank));
  asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(remote) : "memory");
  return v;
#else
  return rank == 0 ? *p : 0.f;  // never used: S = 1 before sm_90 (the host checks)
#endif
}

// Host: an attribute of device `dev`, cached per device (first 64 devices; others are asked
// every time). Multi-GPU safe: nothing is taken from whichever device was used first.
inline int device_attr(cudaDeviceAttr attr, int slot, int dev) {
  static std::atomic<int> cache[4][64];  // 0 = not read yet (every attribute used is > 0)
  int v = 0;
  if (dev >= 0 && dev < 64 && (v = cache[slot][dev].load(std::memory_order_relaxed)) != 0) return v;
  if (cudaDeviceGetAttribute(&v, attr, dev) != cudaSuccess) return 0;
  if (dev >= 0 && dev < 64) cache[slot][dev].store(v, std::memory_order_relaxed);
  return v;
}
inline int current_device() {
  int dev = 0;
  return cudaGetDevice(&dev) == cudaSuccess ? dev : -1;
}
inline int cc_major(int dev) { return device_attr(cudaDevAttrComputeCapabilityMajor, 0, dev); }
inline int smem_optin(int dev) { return device_attr(cudaDevAttrMaxSharedMemoryPerBlockOptin, 1, dev); }

// Host: programmatic dependent launch on sm_90+ (RESETFP4_NO_PDL=1, read once, turns it off).
inline bool use_pdl() {
  static const bool off = [] {
    const char* e = std::getenv("RESETFP4_NO_PDL");
    return e && e[0] == '1';
  }();
  return !off && cc_major(current_device()) >= 9;
}

// Host: launch `kern` on `stream`, with programmatic dependent launch when use_pdl(), in
// thread-block clusters of `cluster` CTAs along x when cluster > 1 (sm_90).
template <typename... Params, typename... Args>
cudaError_t launch_with_pdl(void (*kern)(Params...), dim3 grid, dim3 block, size_t smem,
                            cudaStream_t stream, unsigned cluster, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute at[2];
  unsigned na = 0;
  if (use_pdl()) {
    at[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[na].val.programmaticStreamSerializationAllowed = 1;
    ++na;
  }
  if (cluster > 1) {
    at[na].id = cudaLaunchAttributeClusterDimension;
    at[na].val.clusterDim.x = cluster;
    at[na].val.clusterDim.y = 1;
    at[na].val.clusterDim.z = 1;
    ++na;
  }
  cfg.attrs = at;
  cfg.numAttrs = na;
  return cudaLaunchKernelEx(&cfg, kern, static_cast<Args&&>(args)...);
}

}  // namespace resetfp4
