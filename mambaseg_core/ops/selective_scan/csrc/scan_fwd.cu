// Forward selective scan: y_t = <C_t, h_t> + D u_t with h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t.
#include "scan_common.cuh"

namespace mambaseg {

// kMapOnly: write this tile's map from a zero state and stop (first launch of a multi-tile row).
// Otherwise: scan from the state entering the tile (zero, or tile_carries) and write y.
template <typename T, int kMaxN, int kItems, bool kMapOnly>
__global__ void __launch_bounds__(kMaxThreads, 2) scan_fwd_kernel(ScanParams p) {
  __shared__ float smem[kMaxWarps][2][kMaxN];
  __shared__ float block_total[2][kMaxN];
  const int row = blockIdx.x / p.n_tiles, tile = blockIdx.x % p.n_tiles;
  const int batch = row / p.channels, channel = row % p.channels;
  const int group = channel / (p.channels / p.groups);
  const int L = p.length, N = p.state;
  const int t0 = tile * p.tile_len + threadIdx.x * kItems;
  const int64_t row_offset = static_cast<int64_t>(row) * L;

  float u[kItems], dt[kItems];
  load_items<kItems>(static_cast<const T*>(p.u) + row_offset, t0, L, u);
  load_items<kItems>(static_cast<const T*>(p.delta) + row_offset, t0, L, dt);
  const float bias = p.delta_bias ? p.delta_bias[channel] : 0.f;
#pragma unroll
  for (int i = 0; i < kItems; ++i) dt[i] = t0 + i < L ? delta_to_dt(dt[i] + bias, p.softplus) : 0.f;

  float A2[kMaxN];  // A * log2(e): exp(dt A) = exp2(dt A2)
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) A2[n] = n < N ? p.A[channel * N + n] * kLog2e : 0.f;
  const int64_t group_offset = static_cast<int64_t>(batch * p.groups + group) * N * L;
  const T* Bg = static_cast<const T*>(p.Bm) + group_offset;
  const T* Cg = static_cast<const T*>(p.Cm) + group_offset;

  // This thread's steps as one affine map per state.
  float map_p[kMaxN], map_h[kMaxN];
  compose_forward_steps<kMaxN, kItems>(Bg, t0, L, N, dt, u, A2, map_p, map_h);
  block_exclusive_scan<kMaxN, false>(map_p, map_h, smem, block_total);
  const int64_t tile_index = static_cast<int64_t>(row) * p.n_tiles + tile;
  if constexpr (kMapOnly) {
    write_tile_map<kMaxN>(p.tile_maps + tile_index * 2 * N, N, block_total);
    return;
  }

  float y[kItems];
  const float skip = p.D ? p.D[channel] : 0.f;
#pragma unroll
  for (int i = 0; i < kItems; ++i) y[i] = skip * u[i];
  const float* carry = p.tile_carries + tile_index * N;
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    if (n < N) {
      float b[kItems], c[kItems];
      load_items<kItems>(Bg + static_cast<int64_t>(n) * L, t0, L, b);
      load_items<kItems>(Cg + static_cast<int64_t>(n) * L, t0, L, c);
      float h = p.n_tiles > 1 ? fmaf(map_p[n], carry[n], map_h[n]) : map_h[n];
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        h = fmaf(exp2f(dt[i] * A2[n]), h, dt[i] * u[i] * b[i]);
        y[i] = fmaf(c[i], h, y[i]);
      }
    }
  }
  store_items<kItems>(static_cast<float*>(p.y) + row_offset, t0, L, y);
}

template <typename T, int kMaxN>
struct FwdLaunch {
  static void run(const ScanParams& p, cudaStream_t stream) {
    constexpr int kItems = kMaxN == 1 ? 8 : 4;  // must match items_per_thread()
    const dim3 grid(p.batch * p.channels * p.n_tiles), block(p.threads);
    if (p.n_tiles > 1) {
      scan_fwd_kernel<T, kMaxN, kItems, true><<<grid, block, 0, stream>>>(p);
      launch_carry<false>(p.tile_maps, p.tile_carries, p, stream);
    }
    scan_fwd_kernel<T, kMaxN, kItems, false><<<grid, block, 0, stream>>>(p);
  }
};

void launch_scan_fwd(const ScanParams& p, ScanDtype dtype, cudaStream_t stream) {
  dispatch_dtype_state<FwdLaunch>(p, dtype, stream);
}

}  // namespace mambaseg
