// Forward selective scan: y_t = <C_t, h_t> + D u_t with h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t.
#include "scan_common.cuh"

namespace mambaseg {

template <typename T, int kMaxN>
__global__ void __launch_bounds__(kMaxThreads) scan_fwd_kernel(ScanParams p) {
  __shared__ float smem[kMaxWarps][2][kMaxN];
  __shared__ float carry_in[kMaxN];
  __shared__ float block_total[2][kMaxN];
  __shared__ int ticket_slot;
  const int ticket = take_ticket(p.sync, &ticket_slot);
  const int row = ticket / p.n_tiles, tile = ticket % p.n_tiles;
  const int batch = row / p.channels, channel = row % p.channels;
  const int group = channel / (p.channels / p.groups);
  const int L = p.length, N = p.state;
  const int t0 = tile * p.tile_len + threadIdx.x * kItems;

  float u[kItems], dt[kItems];
  load_items(static_cast<const T*>(p.u) + static_cast<int64_t>(row) * L, t0, L, u);
  load_items(static_cast<const T*>(p.delta) + static_cast<int64_t>(row) * L, t0, L, dt);
  const float bias = p.delta_bias ? p.delta_bias[channel] : 0.f;
#pragma unroll
  for (int i = 0; i < kItems; ++i) dt[i] = t0 + i < L ? delta_to_dt(dt[i] + bias, p.softplus) : 0.f;

  float A2[kMaxN];  // A * log2(e): exp(dt A) = exp2(dt A2)
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) A2[n] = n < N ? p.A[channel * N + n] * kLog2e : 0.f;
  const T* Bg = static_cast<const T*>(p.Bm) + static_cast<int64_t>(batch * p.groups + group) * N * L;
  const T* Cg = static_cast<const T*>(p.Cm) + static_cast<int64_t>(batch * p.groups + group) * N * L;

  // This thread's steps as one affine map per state.
  float map_p[kMaxN], map_h[kMaxN];
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    float decay = 1.f, h = 0.f;
    if (n < N) {
      float b[kItems];
      load_items(Bg + static_cast<int64_t>(n) * L, t0, L, b);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const float a = exp2f(dt[i] * A2[n]);
        h = fmaf(a, h, dt[i] * u[i] * b[i]);
        decay *= a;
      }
    }
    map_p[n] = decay, map_h[n] = h;
  }
  block_exclusive_scan<kMaxN, false>(map_p, map_h, smem, block_total);

  if (threadIdx.x == 0) {
    float* states = p.tile_states + static_cast<int64_t>(row) * p.n_tiles * N;
    hand_over<kMaxN>(N, tile > 0, p.sync + ticket, states + (tile - 1) * N, p.sync + 1 + ticket, states + tile * N,
                     block_total, carry_in);
  }
  __syncthreads();

  float y[kItems];
  const float skip = p.D ? p.D[channel] : 0.f;
#pragma unroll
  for (int i = 0; i < kItems; ++i) y[i] = skip * u[i];
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    if (n < N) {
      float b[kItems], c[kItems];
      load_items(Bg + static_cast<int64_t>(n) * L, t0, L, b);
      load_items(Cg + static_cast<int64_t>(n) * L, t0, L, c);
      float h = fmaf(map_p[n], carry_in[n], map_h[n]);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        h = fmaf(exp2f(dt[i] * A2[n]), h, dt[i] * u[i] * b[i]);
        y[i] = fmaf(c[i], h, y[i]);
      }
    }
  }
  store_items(p.y + static_cast<int64_t>(row) * L, t0, L, y);
}

template <typename T>
static void launch_fwd_typed(const ScanParams& p, cudaStream_t stream) {
  const dim3 grid(p.batch * p.channels * p.n_tiles), block(p.threads);
  if (p.state <= 1)
    scan_fwd_kernel<T, 1><<<grid, block, 0, stream>>>(p);
  else if (p.state <= 4)
    scan_fwd_kernel<T, 4><<<grid, block, 0, stream>>>(p);
  else if (p.state <= 8)
    scan_fwd_kernel<T, 8><<<grid, block, 0, stream>>>(p);
  else
    scan_fwd_kernel<T, 16><<<grid, block, 0, stream>>>(p);
}

void launch_scan_fwd(const ScanParams& p, ScanDtype dtype, cudaStream_t stream) {
  switch (dtype) {
    case ScanDtype::kFloat32: launch_fwd_typed<float>(p, stream); break;
    case ScanDtype::kFloat16: launch_fwd_typed<__half>(p, stream); break;
    case ScanDtype::kBFloat16: launch_fwd_typed<__nv_bfloat16>(p, stream); break;
  }
}

}  // namespace mambaseg
