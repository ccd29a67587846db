// Inference forward of the selective scan: one pass, no state saved for a backward.
//
// Work split: one block of kWarps warps owns one whole (batch, channel) row and walks it in chunks of
// kWarps * 32 * kItems steps; every lane holds kItems consecutive steps. Per state n a chunk is a warp scan of
// affine maps (lane-local composition, then shuffles) and, with several warps, one exchange of the warp totals
// through shared memory; the state leaving the chunk is carried in registers (every warp composes the same
// totals), so there is no extra launch and nothing is written but y.
// Long rows take 4 warps (the 768 rows of a DSEC stage-0 CSIM scan would leave most of the GPU idle and
// latency-bound with one warp each); short rows one warp, with no barrier at all.
// Compared with the training forward (scan_fwd.cu) this does a third of the exp2 calls (no map-only pass, no
// recomputation), reads B and C once, and amortises each scan over more steps per lane.
#include "scan_common.cuh"

namespace mambaseg {

template <typename T, int kMaxN, int kItems, int kWarps>
__global__ void __launch_bounds__(kWarps * 32) scan_fwd_infer_kernel(ScanParams p) {
  // Warp totals per state, double-buffered by chunk parity: a warp may start the next chunk's writes while a
  // slower one still reads this chunk's (kWarps > 1 only).
  __shared__ float2 warp_totals[2][kMaxN][kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, row = blockIdx.x;
  const int batch = row / p.channels, channel = row % p.channels;
  const int group = channel / (p.channels / p.groups);
  const int L = p.length, N = p.state;
  const int64_t row_offset = static_cast<int64_t>(row) * L;
  const T* u_row = static_cast<const T*>(p.u) + row_offset;
  const T* delta_row = static_cast<const T*>(p.delta) + row_offset;
  const int64_t group_offset = static_cast<int64_t>(batch * p.groups + group) * N * L;
  const T* Bg = static_cast<const T*>(p.Bm) + group_offset;
  const T* Cg = static_cast<const T*>(p.Cm) + group_offset;

  const float bias = p.delta_bias ? p.delta_bias[channel] : 0.f;
  const float skip = p.D ? p.D[channel] : 0.f;
  float A2[kMaxN], carry[kMaxN];  // A * log2(e), and the state entering the current chunk
#pragma unroll
  for (int n = 0; n < kMaxN; ++n) A2[n] = n < N ? p.A[channel * N + n] * kLog2e : 0.f, carry[n] = 0.f;

  constexpr int kWarpSteps = 32 * kItems, kChunk = kWarps * kWarpSteps;
  int parity = 0;
  for (int chunk = 0; chunk < L; chunk += kChunk, parity ^= 1) {
    const int t0 = chunk + warp * kWarpSteps + lane * kItems;
    float dt[kItems], du[kItems], y[kItems];
    load_items<kItems>(u_row, t0, L, du);
    load_items<kItems>(delta_row, t0, L, dt);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      // Padded steps get dt = 0: decay 1 and input 0, the identity map.
      dt[i] = t0 + i < L ? delta_to_dt(dt[i] + bias, p.softplus) : 0.f;
      y[i] = skip * du[i];
      du[i] *= dt[i];
    }
#pragma unroll
    for (int n = 0; n < kMaxN; ++n) {
      if (n >= N) break;
      float a[kItems], x[kItems], c[kItems];
      load_items<kItems>(Bg + static_cast<int64_t>(n) * L, t0, L, x);
      load_items<kItems>(Cg + static_cast<int64_t>(n) * L, t0, L, c);
      float decay = 1.f, h = 0.f;  // this lane's steps composed, from a zero state
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        a[i] = exp2f(dt[i] * A2[n]);
        x[i] *= du[i];
        h = fmaf(a[i], h, x[i]);
        decay *= a[i];
      }
      // Inclusive warp scan of the lane maps: afterwards (decay, h) maps the warp's start to this lane's end.
#pragma unroll
      for (int offset = 1; offset < 32; offset *= 2) {
        const float earlier_decay = __shfl_up_sync(0xffffffffu, decay, offset);
        const float earlier_h = __shfl_up_sync(0xffffffffu, h, offset);
        if (lane >= offset) h = fmaf(decay, earlier_h, h), decay *= earlier_decay;
      }
      float entering = carry[n];  // the state entering this warp's steps
      if constexpr (kWarps > 1) {
        if (lane == 31) warp_totals[parity][n][warp] = make_float2(decay, h);
        __syncthreads();
        float state = carry[n];
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
          if (w == warp) entering = state;
          const float2 total = warp_totals[parity][n][w];
          state = fmaf(total.x, state, total.y);
        }
        carry[n] = state;
      }
      const float leaving = fmaf(decay, entering, h);  // state after this lane's last step
      float state = __shfl_up_sync(0xffffffffu, leaving, 1);
      if (lane == 0) state = entering;
      if constexpr (kWarps == 1) carry[n] = __shfl_sync(0xffffffffu, leaving, 31);
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        state = fmaf(a[i], state, x[i]);
        y[i] = fmaf(c[i], state, y[i]);
      }
    }
    store_items<kItems>(p.y + row_offset, t0, L, y);
  }
}

template <typename T, int kMaxN, int kItems, int kWarps>
static void launch_infer(const ScanParams& p, cudaStream_t stream) {
  scan_fwd_infer_kernel<T, kMaxN, kItems, kWarps><<<p.batch * p.channels, kWarps * 32, 0, stream>>>(p);
}

// Short rows take fewer steps per lane so that every lane has work; rows longer than two one-warp chunks
// take a block of 4 warps.
template <typename T, int kMaxN>
struct InferLaunch {
  static void run(const ScanParams& p, cudaStream_t stream) {
    if (p.length <= 32 * 4)
      launch_infer<T, kMaxN, 4, 1>(p, stream);
    else if (p.length <= 32 * 8)
      launch_infer<T, kMaxN, 8, 1>(p, stream);
    else if (p.length <= 2 * 32 * 16)
      launch_infer<T, kMaxN, 16, 1>(p, stream);
    else
      launch_infer<T, kMaxN, 16, 4>(p, stream);
  }
};

void launch_scan_fwd_infer(const ScanParams& p, ScanDtype dtype, cudaStream_t stream) {
  dispatch_dtype_state<InferLaunch>(p, dtype, stream);
}

}  // namespace mambaseg
