// Forward selective scan: y_t = <C_t, h_t> + D u_t with h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t.
#include "scan_common.cuh"

namespace mambaseg {

// With N >= 8 a block first copies its group's B and C for the tile's steps into shared memory (kStaged):
// the per-state loops then read shared memory instead of waiting on a cache load for every state.
template <int kMaxN>
constexpr bool kStaged = kMaxN >= 8;

// Copies a group's B or C for steps [tile_start, tile_start + tile_len) into out (N, tile_len), zero past L.
template <typename T>
__device__ __forceinline__ void stage_tile(const T* group, int N, int L, int tile_start, int tile_len, float* out) {
  for (int index = threadIdx.x; index < N * tile_len; index += blockDim.x) {
    const int n = index / tile_len, t = tile_start + index % tile_len;
    out[index] = t < L ? to_float(group[static_cast<int64_t>(n) * L + t]) : 0.f;
  }
}

// This thread's kItems steps of state n of B or C: from the staged tile, or from global memory.
template <bool kFromStage, int kItems, typename T>
__device__ __forceinline__ void load_state_items(const T* group, const float* stage, int n, int t0, int L,
                                                 int tile_len, float (&out)[kItems]) {
  if constexpr (kFromStage) {
    const float* src = stage + n * tile_len + threadIdx.x * kItems;
#pragma unroll
    for (int i = 0; i < kItems; i += 4) {
      const float4 v = *reinterpret_cast<const float4*>(src + i);
      out[i] = v.x, out[i + 1] = v.y, out[i + 2] = v.z, out[i + 3] = v.w;
    }
  } else {
    load_items<kItems>(group + static_cast<int64_t>(n) * L, t0, L, out);
  }
}

// One tile of one row. kMapOnly: write the tile's map from a zero state and stop (first launch of a
// multi-tile row). Otherwise: scan from the state entering the tile (zero, or tile_carries) and write y.
template <typename T, int kMaxN, int kItems, bool kMapOnly>
__device__ __forceinline__ void scan_fwd_tile(const ScanParams& p, int row, int tile, float (*smem)[2][kMaxN],
                                              float (&block_total)[2][kMaxN], float (&carry)[kMaxN],
                                              const float* staged_B, const float* staged_C) {
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
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    float decay = 1.f, h = 0.f;
    if (n < N) {
      float b[kItems];
      load_state_items<kStaged<kMaxN>, kItems>(Bg, staged_B, n, t0, L, p.tile_len, b);
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
  const int64_t tile_index = static_cast<int64_t>(row) * p.n_tiles + tile;
  if constexpr (kMapOnly) {
    write_tile_map<kMaxN>(p.tile_maps + tile_index * 2 * N, N, block_total);
    return;
  }

  if (p.n_tiles > 1) {
    compose_tile_maps<kMaxN, false>(p.tile_maps + static_cast<int64_t>(row) * p.n_tiles * 2 * N, tile, p.n_tiles, N,
                                    carry, p.tile_carries + tile_index * N);
  }

  float y[kItems];
  const float skip = p.D ? p.D[channel] : 0.f;
#pragma unroll
  for (int i = 0; i < kItems; ++i) y[i] = skip * u[i];
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) {
    if (n < N) {
      float b[kItems], c[kItems];
      load_state_items<kStaged<kMaxN>, kItems>(Bg, staged_B, n, t0, L, p.tile_len, b);
      load_state_items<kStaged<kMaxN>, kItems>(Cg, staged_C, n, t0, L, p.tile_len, c);
      float h = p.n_tiles > 1 ? fmaf(map_p[n], carry[n], map_h[n]) : map_h[n];
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        h = fmaf(exp2f(dt[i] * A2[n]), h, dt[i] * u[i] * b[i]);
        y[i] = fmaf(c[i], h, y[i]);
      }
    }
  }
  store_items<kItems>(p.y + row_offset, t0, L, y);
}

// A block scans one tile of kRows consecutive rows, one after the other; with staging, rows of the same
// group reuse the staged B and C tile.
template <typename T, int kMaxN, int kItems, int kRows, bool kMapOnly>
__global__ void __launch_bounds__(kMaxThreads, 2) scan_fwd_kernel(ScanParams p) {
  __shared__ float smem[kMaxWarps][2][kMaxN];
  __shared__ float block_total[2][kMaxN];
  __shared__ float carry[kMaxN];
  extern __shared__ float staged[];  // kStaged: B then (unless kMapOnly) C, each (N, tile_len)
  const int rows = p.batch * p.channels, row_blocks = (rows + kRows - 1) / kRows;
  const int tile = blockIdx.x / row_blocks, first_row = blockIdx.x % row_blocks * kRows;
  const int64_t group_size = static_cast<int64_t>(p.state) * p.length;
  int staged_group = -1;
  for (int r = 0; r < kRows && first_row + r < rows; ++r) {
    const int row = first_row + r;
    if constexpr (kStaged<kMaxN>) {
      const int channel = row % p.channels;
      const int group = row / p.channels * p.groups + channel / (p.channels / p.groups);  // batch * K + k
      if (group != staged_group) {  // the same for every thread of the block
        __syncthreads();           // earlier rows are done reading the stage
        const int tile_start = tile * p.tile_len;
        stage_tile(static_cast<const T*>(p.Bm) + group * group_size, p.state, p.length, tile_start, p.tile_len,
                   staged);
        if (!kMapOnly)
          stage_tile(static_cast<const T*>(p.Cm) + group * group_size, p.state, p.length, tile_start, p.tile_len,
                     staged + p.state * p.tile_len);
        __syncthreads();
        staged_group = group;
      }
    }
    scan_fwd_tile<T, kMaxN, kItems, kMapOnly>(p, row, tile, smem, block_total, carry, staged,
                                              staged + p.state * p.tile_len);
  }
}

template <typename T, int kMaxN, int kItems, int kRows, bool kMapOnly>
static void launch_fwd_kernel(const ScanParams& p, dim3 grid, cudaStream_t stream) {
  const auto kernel = scan_fwd_kernel<T, kMaxN, kItems, kRows, kMapOnly>;
  const size_t stage_bytes = kStaged<kMaxN> ? (kMapOnly ? 1 : 2) * sizeof(float) * p.state * p.tile_len : 0;
  if (stage_bytes > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, stage_bytes);
  kernel<<<grid, p.threads, stage_bytes, stream>>>(p);
}

template <typename T, int kMaxN>
static void launch_fwd_typed(const ScanParams& p, cudaStream_t stream) {
  constexpr int kItems = kMaxN == 1 ? 8 : 4;  // must match items_per_thread()
  constexpr int kRows = kMaxN >= 8 ? 4 : 1;
  const int row_blocks = (p.batch * p.channels + kRows - 1) / kRows;
  const dim3 grid(row_blocks * p.n_tiles);
  if (p.n_tiles > 1) launch_fwd_kernel<T, kMaxN, kItems, kRows, true>(p, grid, stream);
  launch_fwd_kernel<T, kMaxN, kItems, kRows, false>(p, grid, stream);
}

template <typename T>
static void launch_fwd_dispatch_state(const ScanParams& p, cudaStream_t stream) {
  if (p.state <= 1)
    launch_fwd_typed<T, 1>(p, stream);
  else if (p.state <= 4)
    launch_fwd_typed<T, 4>(p, stream);
  else if (p.state <= 8)
    launch_fwd_typed<T, 8>(p, stream);
  else
    launch_fwd_typed<T, 16>(p, stream);
}

void launch_scan_fwd(const ScanParams& p, ScanDtype dtype, cudaStream_t stream) {
  switch (dtype) {
    case ScanDtype::kFloat32: launch_fwd_dispatch_state<float>(p, stream); break;
    case ScanDtype::kFloat16: launch_fwd_dispatch_state<__half>(p, stream); break;
    case ScanDtype::kBFloat16: launch_fwd_dispatch_state<__nv_bfloat16>(p, stream); break;
  }
}

}  // namespace mambaseg
