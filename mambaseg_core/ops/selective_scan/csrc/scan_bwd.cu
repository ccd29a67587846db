// Backward selective scan. With g_t = dL/dh_t (a reverse scan: g_t = dy_t C_t + exp(dt_{t+1} A) g_{t+1}):
//   dC_t += dy_t h_t,  dB_t += g_t dt_t u_t,  du_t = sum_n g_t dt_t B_t + D dy_t,
//   ddt_t = sum_n g_t (u_t B_t + A exp(dt_t A) h_{t-1}),  dA += g_t dt_t exp(dt_t A) h_{t-1}.
// The reverse scan runs over r_{t-1} = exp(dt_t A) (dy_t C_t + r_t), whose map at step t depends on step t
// only, so it uses the same affine-map block scan and tile carries as the forward, in reversed order. The
// forward states h_{t-1} are recomputed from the tile entering states saved by the forward.
#include "scan_common.cuh"

namespace mambaseg {

// Sums `v` over the block; the result is valid in thread 0.
__device__ __forceinline__ float block_sum(float v, float* smem_warps) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) smem_warps[warp] = v;
  __syncthreads();
  float total = 0.f;
  if (threadIdx.x == 0)
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) total += smem_warps[w];
  __syncthreads();
  return total;
}

// kMapOnly: write this tile's reverse map from a zero incoming gradient and stop (first launch of a
// multi-tile row). Otherwise: compute every gradient from the tile's forward and reverse entering states.
template <typename T, int kMaxN, int kItems, bool kMapOnly>
__global__ void __launch_bounds__(kMaxThreads) scan_bwd_kernel(ScanParams p) {
  __shared__ float smem[kMaxWarps][2][kMaxN];
  __shared__ float block_total[2][kMaxN];
  __shared__ float smem_warps[kMaxWarps];
  const int row = blockIdx.x / p.n_tiles, tile = blockIdx.x % p.n_tiles;
  const int batch = row / p.channels, channel = row % p.channels;
  const int group = channel / (p.channels / p.groups);
  const int L = p.length, N = p.state;
  const int t0 = tile * p.tile_len + threadIdx.x * kItems;
  const int64_t row_offset = static_cast<int64_t>(row) * L;
  const int64_t tile_index = static_cast<int64_t>(row) * p.n_tiles + tile;

  float raw_delta[kItems], dt[kItems], dy[kItems];
  load_items<kItems>(static_cast<const T*>(p.delta) + row_offset, t0, L, raw_delta);
  load_items<kItems>(p.dy + row_offset, t0, L, dy);
  const float bias = p.delta_bias ? p.delta_bias[channel] : 0.f;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    raw_delta[i] += bias;
    dt[i] = t0 + i < L ? delta_to_dt(raw_delta[i], p.softplus) : 0.f;
  }
  float A[kMaxN], A2[kMaxN];
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    A[n] = n < N ? p.A[channel * N + n] : 0.f;
    A2[n] = A[n] * kLog2e;
  }
  const int64_t group_offset = static_cast<int64_t>(batch * p.groups + group) * N * L;
  const T* Bg = static_cast<const T*>(p.Bm) + group_offset;
  const T* Cg = static_cast<const T*>(p.Cm) + group_offset;

  // Reverse: the map taking r entering this thread's last step (from the right) to r_{t0 - 1}.
  float rev_p[kMaxN], rev_r[kMaxN];
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    float decay = 1.f, r = 0.f;
    if (n < N) {
      float c[kItems];
      load_items<kItems>(Cg + static_cast<int64_t>(n) * L, t0, L, c);
#pragma unroll
      for (int i = kItems - 1; i >= 0; --i) {
        const float a = exp2f(dt[i] * A2[n]);
        r = a * fmaf(dy[i], c[i], r);
        decay *= a;
      }
    }
    rev_p[n] = decay, rev_r[n] = r;
  }
  block_exclusive_scan<kMaxN, true>(rev_p, rev_r, smem, block_total);
  if constexpr (kMapOnly) {
    write_tile_map<kMaxN>(p.reverse_maps + tile_index * 2 * N, N, block_total);
    return;
  }

  // Forward: the state entering this thread's first step (tile entering state saved by the forward).
  float u[kItems];
  load_items<kItems>(static_cast<const T*>(p.u) + row_offset, t0, L, u);
  float fwd_p[kMaxN], fwd_h[kMaxN];
  compose_forward_steps<kMaxN, kItems>(Bg, t0, L, N, dt, u, A2, fwd_p, fwd_h);
  block_exclusive_scan<kMaxN, false>(fwd_p, fwd_h, smem, block_total);
  const float* fwd_carry = p.tile_carries + tile_index * N;
  const float* rev_carry = p.reverse_carries + tile_index * N;
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    if (p.n_tiles > 1 && n < N) {
      fwd_h[n] = fmaf(fwd_p[n], fwd_carry[n], fwd_h[n]);
      rev_r[n] = fmaf(rev_p[n], rev_carry[n], rev_r[n]);
    }
  }

  float du[kItems], ddt[kItems];
#pragma unroll
  for (int i = 0; i < kItems; ++i) du[i] = 0.f, ddt[i] = 0.f;
  float dA_partial[kMaxN];
  float* dBg = p.dB + group_offset;
  float* dCg = p.dC + group_offset;
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    dA_partial[n] = 0.f;
    if (n < N) {
      float b[kItems], c[kItems], h_before[kItems];
      load_items(Bg + static_cast<int64_t>(n) * L, t0, L, b);
      load_items(Cg + static_cast<int64_t>(n) * L, t0, L, c);
      float h = fwd_h[n];
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        h_before[i] = h;
        h = fmaf(exp2f(dt[i] * A2[n]), h, dt[i] * u[i] * b[i]);
      }
      float r = rev_r[n];
#pragma unroll
      for (int i = kItems - 1; i >= 0; --i) {
        if (t0 + i >= L) continue;
        const float a = exp2f(dt[i] * A2[n]);
        const float g = fmaf(dy[i], c[i], r);
        const float h_i = fmaf(a, h_before[i], dt[i] * u[i] * b[i]);
        const float decayed_before = a * h_before[i];
        atomicAdd(dCg + static_cast<int64_t>(n) * L + t0 + i, dy[i] * h_i);
        atomicAdd(dBg + static_cast<int64_t>(n) * L + t0 + i, g * dt[i] * u[i]);
        du[i] = fmaf(g * dt[i], b[i], du[i]);
        ddt[i] = fmaf(g, fmaf(u[i], b[i], A[n] * decayed_before), ddt[i]);
        dA_partial[n] = fmaf(g * dt[i], decayed_before, dA_partial[n]);
        r = a * g;
      }
    }
  }

  const float skip = p.D ? p.D[channel] : 0.f;
  float dD_partial = 0.f, dbias_partial = 0.f;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    du[i] = fmaf(skip, dy[i], du[i]);
    dD_partial = fmaf(dy[i], u[i], dD_partial);
    if (p.softplus) ddt[i] *= 1.f / (1.f + __expf(-raw_delta[i]));  // d softplus / dx = sigmoid(x)
    if (t0 + i < L) dbias_partial += ddt[i];
  }
  store_items(p.du + row_offset, t0, L, du);
  store_items(p.ddelta + row_offset, t0, L, ddt);

#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    const float sum = block_sum(dA_partial[n], smem_warps);
    if (threadIdx.x == 0 && n < N) atomicAdd(p.dA + channel * N + n, sum);
  }
  if (p.dD) {
    const float sum = block_sum(dD_partial, smem_warps);
    if (threadIdx.x == 0) atomicAdd(p.dD + channel, sum);
  }
  if (p.dbias) {
    const float sum = block_sum(dbias_partial, smem_warps);
    if (threadIdx.x == 0) atomicAdd(p.dbias + channel, sum);
  }
}

template <typename T, int kMaxN>
struct BwdLaunch {
  static void run(const ScanParams& p, cudaStream_t stream) {
    constexpr int kItems = kMaxN == 1 ? 8 : 4;  // must match items_per_thread()
    const dim3 grid(p.batch * p.channels * p.n_tiles), block(p.threads);
    if (p.n_tiles > 1) {
      scan_bwd_kernel<T, kMaxN, kItems, true><<<grid, block, 0, stream>>>(p);
      launch_carry<true>(p.reverse_maps, p.reverse_carries, p, stream);
    }
    scan_bwd_kernel<T, kMaxN, kItems, false><<<grid, block, 0, stream>>>(p);
  }
};

void launch_scan_bwd(const ScanParams& p, ScanDtype dtype, cudaStream_t stream) {
  dispatch_dtype_state<BwdLaunch>(p, dtype, stream);
}

}  // namespace mambaseg
