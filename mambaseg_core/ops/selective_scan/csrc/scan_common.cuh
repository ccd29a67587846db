// Shared device code of the selective-scan kernels: element loads, the block-wide scan of affine maps, and
// the kernel that carries the state from tile to tile.
//
// Work split: one CUDA block scans one tile of kItems * blockDim.x consecutive steps of one (batch, channel)
// row; each thread owns kItems consecutive steps. The recurrence h_t = a_t * h_{t-1} + x_t is a composition
// of affine maps (a, x), so a tile is scanned in parallel: every thread composes its own steps, and the block
// scans those maps (warp shuffles, then across warps). Rows longer than one tile take three launches, none
// of which waits on another block: (1) every tile's map from a zero state, (2) one thread per (row, state)
// composes those maps in sequence into the state entering each tile, (3) every tile rescans with its
// entering state and writes the output.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "scan_params.h"

namespace mambaseg {

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// kItems consecutive elements from step t0 of each of kRows rows, as kLoadBytes-wide vector loads (in bounds and
// aligned: the caller checked). Every raw load is issued before the first conversion: a conversion between loads
// (fp16/bf16 -> float is an instruction, float -> float is none) would make each row's load wait for the previous
// row's, one memory latency per row in bf16 where fp32 pays one in total.
template <int kLoadBytes, int kItems, int kRows, typename T>
__device__ __forceinline__ void load_rows_vectorized(const T* const (&rows)[kRows], int t0,
                                                     float (&out)[kRows][kItems]) {
  using Vector = std::conditional_t<kLoadBytes == 16, uint4, std::conditional_t<kLoadBytes == 8, uint2, uint32_t>>;
  constexpr int kPerLoad = kLoadBytes / static_cast<int>(sizeof(T)), kLoads = kItems / kPerLoad;
  Vector raw[kRows][kLoads];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int i = 0; i < kLoads; ++i) raw[r][i] = reinterpret_cast<const Vector*>(rows[r] + t0)[i];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      const T* v = reinterpret_cast<const T*>(&raw[r][i]);
#pragma unroll
      for (int j = 0; j < kPerLoad; ++j) out[r][i * kPerLoad + j] = to_float(v[j]);
    }
}

// Loads kItems consecutive elements from step t0 of each of kRows rows (zero past `length`). Where every run is
// in bounds, it takes the widest vector loads that divide a run and that every row's alignment allows (16 bytes,
// else 8 or 4): rows of an odd multiple of 4 or 2 bf16 steps (DDD17's L = 4350, 1100, 286) start 8- or 4-byte
// aligned, and would otherwise fall to one bounds-checked 2-byte load per step. The rows share one bounds check
// and one branch (uniform across a warp: lane runs are 16-byte multiples apart).
template <int kItems, int kRows, typename T>
__device__ __forceinline__ void load_rows(const T* const (&rows)[kRows], int t0, int length,
                                          float (&out)[kRows][kItems]) {
  constexpr int kBytes = kItems * static_cast<int>(sizeof(T));
  if (t0 + kItems <= length) {
    uintptr_t addresses = 0;
#pragma unroll
    for (int r = 0; r < kRows; ++r) addresses |= reinterpret_cast<uintptr_t>(rows[r] + t0);
    if constexpr (kBytes % 16 == 0) {
      if ((addresses & 15) == 0) return load_rows_vectorized<16>(rows, t0, out);
    }
    if constexpr (kBytes % 8 == 0) {
      if ((addresses & 7) == 0) return load_rows_vectorized<8>(rows, t0, out);
    }
    if constexpr (kBytes % 4 == 0 && sizeof(T) < 4) {
      if ((addresses & 3) == 0) return load_rows_vectorized<4>(rows, t0, out);
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int i = 0; i < kItems; ++i) out[r][i] = t0 + i < length ? to_float(rows[r][t0 + i]) : 0.f;
}

// One row of load_rows.
template <int kItems, typename T>
__device__ __forceinline__ void load_items(const T* row, int t0, int length, float (&out)[kItems]) {
  const T* const rows[1] = {row};
  load_rows<kItems>(rows, t0, length, reinterpret_cast<float (&)[1][kItems]>(out));
}

// Stores kItems consecutive values from step t0 (none past `length`) as T, rounded to nearest: the widest of 16-
// and 8-byte stores that divides the run and that its alignment allows where it is in bounds, else one at a time.
template <int kItems, typename T>
__device__ __forceinline__ void store_items(T* row, int t0, int length, const float (&v)[kItems]) {
  constexpr int kBytes = kItems * static_cast<int>(sizeof(T));
  const uintptr_t address = reinterpret_cast<uintptr_t>(row + t0);
  const auto store_vectors = [&](auto vector) {
    using Vector = decltype(vector);
    constexpr int kPerStore = static_cast<int>(sizeof(Vector) / sizeof(T));
#pragma unroll
    for (int i = 0; i < kItems / kPerStore; ++i) {
      Vector packed;
      T* items = reinterpret_cast<T*>(&packed);
#pragma unroll
      for (int j = 0; j < kPerStore; ++j) items[j] = from_float<T>(v[i * kPerStore + j]);
      reinterpret_cast<Vector*>(row + t0)[i] = packed;
    }
  };
  if (t0 + kItems <= length) {
    if constexpr (kBytes % 16 == 0) {
      if ((address & 15) == 0) return store_vectors(uint4{});
    }
    if constexpr (kBytes % 8 == 0) {
      if ((address & 7) == 0) return store_vectors(uint2{});
    }
  }
#pragma unroll
  for (int i = 0; i < kItems; ++i)
    if (t0 + i < length) row[t0 + i] = from_float<T>(v[i]);
}

// The inference kernels' y store: fp32, or the inputs' dtype T where p.y_in_input_dtype (half the bytes written
// and read by the merge; SS2D's y stays far inside fp16's range, the TSSM's does not: models/ssm.py).
template <int kItems, typename T>
__device__ __forceinline__ void store_y(const ScanParams& p, int64_t offset, int t0, int length,
                                        const float (&y)[kItems]) {
  if (p.y_in_input_dtype)
    store_items<kItems>(static_cast<T*>(p.y) + offset, t0, length, y);
  else
    store_items<kItems>(static_cast<float*>(p.y) + offset, t0, length, y);
}

// dt = softplus(delta + bias) (or delta + bias), zero on padded steps so they act as the identity.
__device__ __forceinline__ float delta_to_dt(float delta, bool softplus) {
  if (!softplus) return delta;
  return delta <= 20.f ? log1pf(__expf(delta)) : delta;
}

// delta_to_dt for the inference kernels: for fp16/bf16 inputs the softplus costs ~12 instructions instead of
// log1pf's ~35 (by PTX count about a fifth of the state-resident kernel's instructions at N = 16, more at N = 1),
// adding a relative error below 4e-6, far under the 2^-11 rounding of the delta it is given: log1p(z) of z = e^x by
// its series up to z^6 where z <= 0.05 (float32 rounding only: 1.5e-7), else by the hardware log of 1 + z
// (log(1 + z) >= 0.049, so the approximate log's absolute error of ~2^-22.6 stays below 2.5e-6 relative, the
// rounding of 1 + z below 1.3e-6). Float32 inputs keep log1pf: that path is the accuracy reference.
template <typename T>
__device__ __forceinline__ float delta_to_dt_inference(float delta, bool softplus) {
  if constexpr (std::is_same_v<T, float>) {
    return delta_to_dt(delta, softplus);
  } else {
    if (!softplus) return delta;
    const float z = __expf(delta);
    const float series =
        z * fmaf(z, fmaf(z, fmaf(z, fmaf(z, fmaf(z, -1.f / 6, 0.2f), -0.25f), 1.f / 3), -0.5f), 1.f);
    const float logarithm = __logf(1.f + z);
    return delta > 20.f ? delta : (z <= 0.05f ? series : logarithm);
  }
}

// This thread's kItems forward steps from step t0, composed into one affine map per state n < N (identity for
// n >= N): h -> decay[n] * h + h_out[n], with h_t = exp2(dt_t A2_n) h_{t-1} + dt_t u_t B_t. The training forward
// and the backward (which recomputes the forward states) both start from it.
template <int kMaxN, int kItems, typename T>
__device__ __forceinline__ void compose_forward_steps(const T* Bg, int t0, int length, int state,
                                                      const float (&dt)[kItems], const float (&u)[kItems],
                                                      const float (&A2)[kMaxN], float (&decay)[kMaxN],
                                                      float (&h_out)[kMaxN]) {
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    float d = 1.f, h = 0.f;
    if (n < state) {
      float b[kItems];
      load_items<kItems>(Bg + static_cast<int64_t>(n) * length, t0, length, b);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const float a = exp2f(dt[i] * A2[n]);
        h = fmaf(a, h, dt[i] * u[i] * b[i]);
        d *= a;
      }
    }
    decay[n] = d, h_out[n] = h;
  }
}

// An affine map x -> p * x + h per state; "first then second" composes to (p1 p2, p2 h1 + h2).
// Exclusive block scan of every thread's map in processing order (thread order, or reversed if kReverse).
// On return (p, h) hold the composition of all maps before this thread; thread 0 has written the whole
// block's map to total[0] (p) and total[1] (h), in shared memory (kept out of every thread's registers).
template <int kMaxN, bool kReverse>
__device__ __forceinline__ void block_exclusive_scan(float (&p)[kMaxN], float (&h)[kMaxN], float (*smem)[2][kMaxN],
                                                     float (&total)[2][kMaxN]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) {
      const float pp = kReverse ? __shfl_down_sync(0xffffffffu, p[n], offset) : __shfl_up_sync(0xffffffffu, p[n], offset);
      const float hh = kReverse ? __shfl_down_sync(0xffffffffu, h[n], offset) : __shfl_up_sync(0xffffffffu, h[n], offset);
      const bool has_earlier = kReverse ? lane + offset < 32 : lane >= offset;
      if (has_earlier) {
        h[n] = fmaf(p[n], hh, h[n]);
        p[n] *= pp;
      }
    }
  }
  const int last_lane = kReverse ? 0 : 31;
  if (lane == last_lane) {
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) smem[warp][0][n] = p[n], smem[warp][1][n] = h[n];
  }
  // Inclusive -> exclusive within the warp.
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    const float pp = kReverse ? __shfl_down_sync(0xffffffffu, p[n], 1) : __shfl_up_sync(0xffffffffu, p[n], 1);
    const float hh = kReverse ? __shfl_down_sync(0xffffffffu, h[n], 1) : __shfl_up_sync(0xffffffffu, h[n], 1);
    const bool first = kReverse ? lane == 31 : lane == 0;
    p[n] = first ? 1.f : pp;
    h[n] = first ? 0.f : hh;
  }
  __syncthreads();
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    float before_p = 1.f, before_h = 0.f, all_p = 1.f, all_h = 0.f;
    for (int i = 0; i < n_warps; ++i) {
      const int w = kReverse ? n_warps - 1 - i : i;
      if (w == warp) before_p = all_p, before_h = all_h;
      all_h = fmaf(smem[w][0][n], all_h, smem[w][1][n]);
      all_p *= smem[w][0][n];
    }
    // Compose (warps before) then (lanes before in this warp).
    h[n] = fmaf(p[n], before_h, h[n]);
    p[n] *= before_p;
    if (threadIdx.x == 0) total[0][n] = all_p, total[1][n] = all_h;
  }
  __syncthreads();  // smem is reused and total is read by the caller
}

// Writes a tile's map (decay, state) for states n < N, laid out (2, N), from shared memory.
template <int kMaxN>
__device__ __forceinline__ void write_tile_map(float* out, int state, const float (&total)[2][kMaxN]) {
  const int n = threadIdx.x;
  if (n < state) out[n] = total[0][n], out[state + n] = total[1][n];
}

// One thread per (row, state): composes the tile maps (rows, n_tiles, 2, N) in order (last to first if
// kReverse) and writes the state entering each tile, (rows, n_tiles, N). The composition is a chain, its inputs are
// not: they are loaded kBatch tiles at a time, all before the first use (with one load latency per tile this kernel
// took tens of µs at a hundred tiles).
template <bool kReverse>
__global__ void carry_kernel(const float* __restrict__ maps, float* __restrict__ carries, int rows, int n_tiles,
                             int state) {
  constexpr int kBatch = 16;
  const int index = blockIdx.x * blockDim.x + threadIdx.x;
  if (index >= rows * state) return;
  const int row = index / state, n = index % state;
  float h = 0.f;
  for (int first = 0; first < n_tiles; first += kBatch) {
    float decay[kBatch], add[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int i = first + k;
      const int64_t tile = static_cast<int64_t>(row) * n_tiles + (kReverse ? n_tiles - 1 - i : i);
      decay[k] = i < n_tiles ? maps[tile * 2 * state + n] : 1.f;
      add[k] = i < n_tiles ? maps[tile * 2 * state + state + n] : 0.f;
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int i = first + k;
      if (i < n_tiles) {
        carries[(static_cast<int64_t>(row) * n_tiles + (kReverse ? n_tiles - 1 - i : i)) * state + n] = h;
        h = fmaf(decay[k], h, add[k]);
      }
    }
  }
}

template <bool kReverse>
inline void launch_carry(const float* maps, float* carries, const ScanParams& p, cudaStream_t stream) {
  const int rows = p.batch * p.channels, threads = 256;
  carry_kernel<kReverse><<<(rows * p.state + threads - 1) / threads, threads, 0, stream>>>(maps, carries, rows,
                                                                                           p.n_tiles, p.state);
}

// Runs Launch<T, kMaxN>::run(p, stream, args...) for the input dtype T and the smallest compiled state count
// kMaxN >= N (1, 4, 8 or 16: the per-state values live in registers sized by kMaxN).
template <typename T, template <typename, int> class Launch, typename... Args>
inline void dispatch_state(const ScanParams& p, cudaStream_t stream, Args&... args) {
  if (p.state <= 1)
    Launch<T, 1>::run(p, stream, args...);
  else if (p.state <= 4)
    Launch<T, 4>::run(p, stream, args...);
  else if (p.state <= 8)
    Launch<T, 8>::run(p, stream, args...);
  else
    Launch<T, 16>::run(p, stream, args...);
}

template <template <typename, int> class Launch, typename... Args>
inline void dispatch_dtype_state(const ScanParams& p, ScanDtype dtype, cudaStream_t stream, Args&... args) {
  switch (dtype) {
    case ScanDtype::kFloat32: dispatch_state<float, Launch>(p, stream, args...); break;
    case ScanDtype::kFloat16: dispatch_state<__half, Launch>(p, stream, args...); break;
    case ScanDtype::kBFloat16: dispatch_state<__nv_bfloat16, Launch>(p, stream, args...); break;
  }
}

}  // namespace mambaseg
