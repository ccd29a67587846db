// Shared device code of the selective-scan kernels: element loads, the block-wide scan of affine
// maps, and the tile-to-tile hand-over of the state.
//
// Work split: one CUDA block scans one tile of kItems * blockDim.x consecutive steps of one (batch, channel)
// row; each thread owns kItems consecutive steps. The state recurrence h_t = a_t * h_{t-1} + x_t is a
// composition of affine maps (a, x), so a tile is scanned in parallel: every thread composes its own steps,
// the block scans those maps (warp shuffles, then across warps), and the tiles of a row hand their end state
// to the next tile through global memory (a chained scan). Blocks take tiles in order from an atomic ticket
// counter, so the tile a block waits on has always started already and the chain cannot deadlock.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

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

// Loads kItems consecutive elements starting at step t0 of a row (zero past `length`).
template <typename T>
__device__ __forceinline__ void load_items(const T* row, int t0, int length, float (&out)[kItems]) {
  if constexpr (sizeof(T) == 4 && kItems == 4) {
    if (t0 + kItems <= length && (reinterpret_cast<uintptr_t>(row + t0) & 15) == 0) {
      const float4 v = *reinterpret_cast<const float4*>(row + t0);
      out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < kItems; ++i) out[i] = t0 + i < length ? to_float(row[t0 + i]) : 0.f;
}

__device__ __forceinline__ void store_items(float* row, int t0, int length, const float (&v)[kItems]) {
  if (t0 + kItems <= length && (reinterpret_cast<uintptr_t>(row + t0) & 15) == 0) {
    *reinterpret_cast<float4*>(row + t0) = make_float4(v[0], v[1], v[2], v[3]);
    return;
  }
#pragma unroll
  for (int i = 0; i < kItems; ++i)
    if (t0 + i < length) row[t0 + i] = v[i];
}

__device__ __forceinline__ int load_acquire(const int* flag) {
  int v;
  asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(flag) : "memory");
  return v;
}

__device__ __forceinline__ void store_release(int* flag, int v) {
  asm volatile("st.release.gpu.global.s32 [%0], %1;" ::"l"(flag), "r"(v) : "memory");
}

// dt = softplus(delta + bias) (or delta + bias), zero on padded steps so they act as the identity.
__device__ __forceinline__ float delta_to_dt(float delta, bool softplus) {
  if (!softplus) return delta;
  return delta <= 20.f ? log1pf(__expf(delta)) : delta;
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
  __syncthreads();  // smem is reused by the caller
}

// Blocks take tiles in ticket order; returns the ticket (broadcast through shared memory).
__device__ __forceinline__ int take_ticket(int* counter, int* shared_slot) {
  if (threadIdx.x == 0) *shared_slot = atomicAdd(counter, 1);
  __syncthreads();
  return *shared_slot;
}

// Chained hand-over: wait for the previous tile of this row (if any) to publish its end state, read it into
// carry_in, publish this tile's end state (total applied to carry_in), then raise this tile's flag.
// Called by thread 0 only. `prev_states`/`own_states` point at N floats.
template <int kMaxN>
__device__ __forceinline__ void hand_over(int state, bool has_prev, const int* prev_flag, const float* prev_states,
                                         int* own_flag, float* own_states, const float (&total)[2][kMaxN],
                                         float* carry_in) {
  if (has_prev) {
    while (load_acquire(prev_flag) == 0) {
    }
  }
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    if (n < state) {
      const float prev = has_prev ? __ldcg(prev_states + n) : 0.f;
      carry_in[n] = prev;
      own_states[n] = fmaf(total[0][n], prev, total[1][n]);
    } else {
      carry_in[n] = 0.f;
    }
  }
  store_release(own_flag, 1);
}

}  // namespace mambaseg
