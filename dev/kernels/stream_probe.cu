// Read-bandwidth probe (dev only, session 4): how fast can an H100 stream a weight buffer
// with the access pattern of the v7 GEMV (each warp a contiguous range of 576-byte units,
// 16 code bytes + 2 scale bytes per lane, kDepth units in flight in registers), with no
// decode or mma? Against variants of the pattern and a plain grid-stride read, so the
// kernel's ceiling (pattern) and its consumer cost (compute) can be told apart.
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a stream_probe.cu -o probe
//   ./probe [MB ...]      (prints one line per variant and size; GB/s = bytes read / time)
#include <cuda_runtime.h>
#include <stdint.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x)                                                                  \
  do {                                                                         \
    cudaError_t e = (x);                                                       \
    if (e != cudaSuccess) {                                                    \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e), __FILE__, __LINE__); \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

__device__ __forceinline__ uint4 ld128(const uint8_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ uint32_t ld16(const uint8_t* p) {
  unsigned short v;
  asm volatile("ld.global.nc.L1::no_allocate.u16 %0, [%1];\n" : "=h"(v) : "l"(p));
  return v;
}

// Dependent integer work per unit (models the decode + mma chain; kWork ALU ops).
template <int kWork>
__device__ __forceinline__ uint32_t burn(uint32_t a, uint32_t b) {
#pragma unroll
  for (int i = 0; i < kWork; ++i) a = __funnelshift_r(a, b, i & 7) ^ (b + i);
  return a;
}

// Warps stream contiguous unit ranges. kLd 16-byte loads per lane per unit (512 B each per
// warp), plus a 2-byte scale load per lane when kScales (64 B per warp): unit bytes
// = kLd*512 (+64).
template <int kDepth, int kLd, bool kScales, int kWork>
__global__ void __launch_bounds__(256) warp_stream(const uint8_t* w, long long units, uint32_t* sink) {
  constexpr int kUnit = kLd * 512 + (kScales ? 64 : 0);
  const int lane = threadIdx.x % 32;
  const long long gw = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
  const long long nw = (long long)gridDim.x * blockDim.x / 32;
  const long long per = (units + nw - 1) / nw;
  const long long b = gw * per < units ? gw * per : units, e = b + per < units ? b + per : units;
  const long long n = e - b;
  const uint8_t* p = w + b * kUnit + lane * 16;
  uint4 q[kDepth][kLd];
  uint32_t s[kDepth];
  uint32_t acc = 0;
#pragma unroll
  for (int d = 0; d < kDepth; ++d)
    if (d < n) {
#pragma unroll
      for (int l = 0; l < kLd; ++l) q[d][l] = ld128(p + d * kUnit + l * 512);
      if (kScales) s[d] = ld16(p - lane * 14 + d * kUnit + kLd * 512);
    }
  long long i = 0;
  for (; i + kDepth <= n; i += kDepth) {
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      uint32_t v = kScales ? s[d] : 0u;
#pragma unroll
      for (int l = 0; l < kLd; ++l) v ^= q[d][l].x ^ q[d][l].y ^ q[d][l].z ^ q[d][l].w;
      acc += burn<kWork>(v, acc);
      const long long j = i + d + kDepth;
      if (j < n) {
#pragma unroll
        for (int l = 0; l < kLd; ++l) q[d][l] = ld128(p + j * kUnit + l * 512);
        if (kScales) s[d] = ld16(p - lane * 14 + j * kUnit + kLd * 512);
      }
    }
  }
#pragma unroll
  for (int d = 0; d < kDepth; ++d)
    if (i + d < n) {
      uint32_t v = kScales ? s[d] : 0u;
#pragma unroll
      for (int l = 0; l < kLd; ++l) v ^= q[d][l].x ^ q[d][l].y ^ q[d][l].z ^ q[d][l].w;
      acc += burn<kWork>(v, acc);
    }
  if (acc == 0x9E3779B9u) sink[0] = acc;  // keeps the loads alive
}

// Plain read: grid-stride over 16-byte words, kUnroll loads in flight per thread.
template <int kUnroll>
__global__ void __launch_bounds__(256) grid_stride(const uint4* w, long long words, uint32_t* sink) {
  const long long tid = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  const long long nt = (long long)gridDim.x * blockDim.x;
  uint32_t acc = 0;
  long long i = tid;
  for (; i + (kUnroll - 1) * nt < words; i += kUnroll * nt) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = ld128(reinterpret_cast<const uint8_t*>(w + i + u * nt));
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < words; i += nt) {
    uint4 v = ld128(reinterpret_cast<const uint8_t*>(w + i));
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9E3779B9u) sink[0] = acc;
}

struct Bufs {
  std::vector<uint8_t*> b;
  size_t bytes;
};

// Median over reps of one launch each (events around one kernel, buffers rotated so the
// 50 MB L2 holds none of the next buffer), and the mean of a back-to-back batch.
template <typename F>
static void timeit(const char* name, const Bufs& bf, double copy_gbs, F launch) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) launch(bf.b[i % bf.b.size()]);
  std::vector<float> ts;
  for (int r = 0; r < 30; ++r) {
    const uint8_t* p = bf.b[r % bf.b.size()];
    CK(cudaEventRecord(e0));
    launch(p);
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    ts.push_back(ms * 1000.f);
  }
  std::sort(ts.begin(), ts.end());
  const int batch = 40;
  CK(cudaEventRecord(e0));
  for (int r = 0; r < batch; ++r) launch(bf.b[r % bf.b.size()]);
  CK(cudaEventRecord(e1));
  CK(cudaEventSynchronize(e1));
  float ms;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  CK(cudaGetLastError());
  const double one = ts[ts.size() / 2], many = ms * 1000.0 / batch;
  std::printf("%-34s %7.1f MB  single %7.2f us %6.0f GB/s %5.1f%%  | batch %7.2f us %6.0f GB/s %5.1f%%\n",
              name, bf.bytes / 1e6, one, bf.bytes / one / 1e3, 100.0 * bf.bytes / one / 1e3 / copy_gbs,
              many, bf.bytes / many / 1e3, 100.0 * bf.bytes / many / 1e3 / copy_gbs);
}

template <int kDepth, int kLd, bool kScales, int kWork>
static void run_warp(const char* name, const Bufs& bf, double copy, int sms, int ctas_per_sm,
                     uint32_t* sink) {
  constexpr int kUnit = kLd * 512 + (kScales ? 64 : 0);
  const long long units = bf.bytes / kUnit;
  timeit(name, bf, copy, [&](const uint8_t* p) {
    warp_stream<kDepth, kLd, kScales, kWork><<<sms * ctas_per_sm, 256>>>(p, units, sink);
  });
}

int main(int argc, char** argv) {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  std::printf("%s, %d SMs, L2 %d MB\n", prop.name, sms, prop.l2CacheSize >> 20);
  std::vector<double> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::atof(argv[i]));
  if (sizes.empty()) sizes = {9.437184, 28.311552, 73.728};
  uint32_t* sink;
  CK(cudaMalloc(&sink, 64));
  for (double mb : sizes) {
    Bufs bf;
    bf.bytes = (size_t)(mb * 1e6) / 1152 * 1152;
    const int nbuf = std::max(2, (int)(200e6 / bf.bytes) + 1);
    for (int i = 0; i < nbuf; ++i) {
      uint8_t* p;
      CK(cudaMalloc(&p, bf.bytes + 4096));
      CK(cudaMemset(p, i + 1, bf.bytes + 4096));
      bf.b.push_back(p);
    }
    // Copy bandwidth, (read + write) / time, as resetfp4 bench kernels reports it.
    uint8_t* dst;
    CK(cudaMalloc(&dst, bf.bytes));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaMemcpy(dst, bf.b[0], bf.bytes, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e0));
    for (int r = 0; r < 20; ++r) CK(cudaMemcpyAsync(dst, bf.b[r % nbuf], bf.bytes, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    const double copy = 2.0 * bf.bytes * 20 / (ms * 1e-3) / 1e9;
    std::printf("--- %.1f MB, copy %.0f GB/s (read+write)\n", bf.bytes / 1e6, copy);
    CK(cudaFree(dst));
    const long long words = bf.bytes / 16;
    for (int cps : {4, 8}) {
      char nm[64];
      std::snprintf(nm, sizeof nm, "grid_stride u4 %d CTA/SM", cps);
      timeit(nm, bf, copy, [&](const uint8_t* p) {
        grid_stride<4><<<sms * cps, 256>>>(reinterpret_cast<const uint4*>(p), words, sink);
      });
    }
    timeit("grid_stride u8 4 CTA/SM", bf, copy, [&](const uint8_t* p) {
      grid_stride<8><<<sms * 4, 256>>>(reinterpret_cast<const uint4*>(p), words, sink);
    });
    run_warp<4, 1, true, 0>("v7 pattern d4 3CTA (576B)", bf, copy, sms, 3, sink);
    run_warp<4, 1, true, 96>("v7 pattern d4 3CTA work96", bf, copy, sms, 3, sink);
    run_warp<4, 1, false, 0>("512B units d4 3CTA", bf, copy, sms, 3, sink);
    run_warp<8, 1, true, 0>("v7 pattern d8 3CTA", bf, copy, sms, 3, sink);
    run_warp<4, 1, true, 0>("v7 pattern d4 4CTA", bf, copy, sms, 4, sink);
    run_warp<4, 1, true, 0>("v7 pattern d4 6CTA", bf, copy, sms, 6, sink);
    run_warp<4, 1, true, 96>("v7 pattern d4 6CTA work96", bf, copy, sms, 6, sink);
    run_warp<2, 2, true, 0>("1088B units d2 3CTA", bf, copy, sms, 3, sink);
    run_warp<4, 2, true, 0>("1088B units d4 3CTA", bf, copy, sms, 3, sink);
    run_warp<4, 2, false, 0>("1024B units d4 3CTA", bf, copy, sms, 3, sink);
    run_warp<4, 2, true, 192>("1088B units d4 3CTA work192", bf, copy, sms, 3, sink);
    for (auto* p : bf.b) CK(cudaFree(p));
  }
  return 0;
}
