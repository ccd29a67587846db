// Inference forward of the selective scan with every state of a row resident in one lane (N in 9..16).
//
// Work split: a lane owns one (batch, channel) row and all its N states (or, with 2 or 4 lanes per row, a half or a
// quarter of them; the parts of y are added with one or two shuffles), and walks its steps in order; the rows of a warp are channels of one
// (batch, group), so that they read the same B and C. A row is cut into segments
// of whole 32-step tiles, one warp per (segment, 32 rows), so that short-row shapes with many rows and long-row
// shapes with few both fill the GPU:
//   1. compose: every segment but the last, from a zero state -> its map (decay, state) per state (tile_maps);
//   2. carry_kernel (scan_common.cuh): the state entering every segment (tile_carries);
//   3. apply: every segment from its entering state -> y.
// A row of one segment runs step 3 alone.
// Why: the warp-scan kernel (scan_fwd_infer.cu) spends most of its instructions on the 5-level shuffle scan of
// every state's affine maps, and reads B and C once per row. Here a step costs, per state, one exp2 and four FP32
// instructions plus a quarter of a broadcast shared-memory load, with no shuffle and no block barrier; B and C are
// read once per 32 rows. The price: segments other than the last compute their exp2 twice (compose, apply).
// The states are summed into y in order 0..N-1, as in the other kernels.
#include <algorithm>

#include "scan_common.cuh"
#include "scan_infer.h"

namespace mambaseg {

namespace {

constexpr int kStates = 16;        // states per row the kernel holds: N in 9..16 (unused states stay zero)
constexpr int kWarpsPerBlock = 4;  // independent warps: no block barrier
constexpr int kStepsPerLoad = 8;   // u and delta loaded, y stored, this many steps at a time

// Warp `w` of a launch over `segments` segments: (segment, batch, group, block of a warp's rows in the group).
struct WarpWork {
  int segment, batch, group, row_block;
};

__device__ __forceinline__ WarpWork warp_work(const ScanParams& p, int row_blocks) {
  const int warp = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  const int per_segment = p.batch * p.groups * row_blocks;
  const int rest = warp % per_segment, slab = rest / row_blocks;
  return {warp / per_segment, slab / p.groups, slab % p.groups, rest % row_blocks};
}

// kStepsPerLoad steps of a row's u and delta, loaded one block ahead of their use (a block's loads would otherwise
// wait a full memory latency each, the warp having nothing else to issue): raw 16-byte vectors where the run is in
// bounds and aligned, else read at use by load_items.
template <typename T>
struct StepBlock {
  static constexpr int kVectors = kStepsPerLoad * static_cast<int>(sizeof(T)) / 16;
  uint4 raw[2][kVectors];
  bool vectorized;

  __device__ __forceinline__ void issue(const T* u_row, const T* delta_row, int t0, int length) {
    const uintptr_t addresses = reinterpret_cast<uintptr_t>(u_row + t0) | reinterpret_cast<uintptr_t>(delta_row + t0);
    vectorized = t0 + kStepsPerLoad <= length && (addresses & 15) == 0;
    if (vectorized) {
#pragma unroll
      for (int v = 0; v < kVectors; ++v) {
        raw[0][v] = reinterpret_cast<const uint4*>(u_row + t0)[v];
        raw[1][v] = reinterpret_cast<const uint4*>(delta_row + t0)[v];
      }
    }
  }

  __device__ __forceinline__ void get(const T* u_row, const T* delta_row, int t0, int length,
                                      float (&u)[kStepsPerLoad], float (&delta)[kStepsPerLoad]) const {
    if (!vectorized) {
      load_items<kStepsPerLoad>(u_row, t0, length, u);
      load_items<kStepsPerLoad>(delta_row, t0, length, delta);
      return;
    }
    const T* u_items = reinterpret_cast<const T*>(raw[0]);
    const T* delta_items = reinterpret_cast<const T*>(raw[1]);
#pragma unroll
    for (int i = 0; i < kStepsPerLoad; ++i) u[i] = to_float(u_items[i]), delta[i] = to_float(delta_items[i]);
  }
};

// kSplit lanes share a row: lane `part * kRowsPerWarp + r` holds states [part * kLaneStates, +kLaneStates) of the
// warp's row r.
template <typename T, bool kCompose, int kSplit>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) scan_fwd_resident_kernel(ScanParams p, int row_blocks) {
  constexpr int kLaneStates = kStates / kSplit, kRowsPerWarp = 32 / kSplit;
  // B (and, applying, C) of one tile, [step][state]: the lanes of a part read the same float4 (a broadcast).
  __shared__ float4 staged[kWarpsPerBlock][kCompose ? 1 : 2][kResidentTile][kStates / 4];
  const WarpWork work = warp_work(p, row_blocks);
  if (work.segment >= (kCompose ? p.n_tiles - 1 : p.n_tiles)) return;  // the whole warp: no partner left waiting
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, L = p.length, N = p.state;
  const int part = lane / kRowsPerWarp, first_state = part * kLaneStates;
  const int features = p.channels / p.groups, feature = work.row_block * kRowsPerWarp + lane % kRowsPerWarp;
  const bool active = feature < features;  // a group's last warp may be partly empty: it computes a copy of a row
  const int channel = work.group * features + (active ? feature : features - 1);
  const int64_t row = static_cast<int64_t>(work.batch) * p.channels + channel;
  const T* u_row = static_cast<const T*>(p.u) + row * L;
  const T* delta_row = static_cast<const T*>(p.delta) + row * L;
  const int64_t slab = (static_cast<int64_t>(work.batch) * p.groups + work.group) * p.bc_group_stride;
  const T* const bc_slabs[2] = {static_cast<const T*>(p.Bm) + slab, static_cast<const T*>(p.Cm) + slab};
  const float bias = p.delta_bias ? p.delta_bias[channel] : 0.f;
  const float skip = p.D && part == 0 ? p.D[channel] : 0.f;  // D u is added once, by part 0
  const int64_t tile_index = row * p.n_tiles + work.segment;

  float A2[kLaneStates], h[kLaneStates];  // A * log2(e), and the state
#pragma unroll
  for (int k = 0; k < kLaneStates; ++k) {
    const int n = first_state + k;
    A2[k] = n < N ? p.A[channel * N + n] * kLog2e : 0.f;
    h[k] = !kCompose && work.segment > 0 && n < N ? p.tile_carries[tile_index * N + n] : 0.f;
  }
  const int begin = work.segment * p.tile_len, end = begin + p.tile_len < L ? begin + p.tile_len : L;
  float dt_sum = 0.f;
  StepBlock<T> next;
  next.issue(u_row, delta_row, begin, L);
  for (int tile = begin; tile < end; tile += kResidentTile) {
    // Staging: lane (state lane / 2, half lane % 2) loads 16 steps of its state's B (and C) row; states past N are
    // zero, so they add nothing to y and their h stays zero. Steps past L are zero as well.
    __syncwarp();  // every lane is done reading the previous tile
    {
      const int n = lane >> 1, t = tile + (lane & 1) * (kResidentTile / 2);
#pragma unroll
      for (int m = 0; m < (kCompose ? 1 : 2); ++m) {
        float values[kResidentTile / 2];
        if (n < N) {
          load_items<kResidentTile / 2>(bc_slabs[m] + static_cast<int64_t>(n) * L, t, L, values);
        } else {
#pragma unroll
          for (int i = 0; i < kResidentTile / 2; ++i) values[i] = 0.f;
        }
        float* out = reinterpret_cast<float*>(staged[warp][m]) + (lane & 1) * (kResidentTile / 2) * kStates + n;
#pragma unroll
        for (int i = 0; i < kResidentTile / 2; ++i) out[i * kStates] = values[i];
      }
    }
    __syncwarp();
    for (int step = 0; step < kResidentTile && tile + step < end; step += kStepsPerLoad) {
      const int t0 = tile + step;
      const StepBlock<T> current = next;
      if (t0 + kStepsPerLoad < end) next.issue(u_row, delta_row, t0 + kStepsPerLoad, L);
      float u[kStepsPerLoad], delta[kStepsPerLoad], dt[kStepsPerLoad], y[kStepsPerLoad];
      current.get(u_row, delta_row, t0, L, u, delta);
      // Steps past L get dt = 0: decay 1 and input 0, the identity. With several lanes a row each computes the
      // softplus of every kSplit-th step (selects, not branches: the parts are in one warp) and takes the others'
      // from their lanes.
      float mine[kStepsPerLoad / kSplit];
#pragma unroll
      for (int j = 0; j < kStepsPerLoad / kSplit; ++j) {
        float d = delta[j * kSplit];
#pragma unroll
        for (int s = 1; s < kSplit; ++s) d = part == s ? delta[j * kSplit + s] : d;
        mine[j] = t0 + j * kSplit + part < L ? delta_to_dt_inference<T>(d + bias, p.softplus) : 0.f;
      }
#pragma unroll
      for (int i = 0; i < kStepsPerLoad; i += kSplit) {
        if constexpr (kSplit == 1) {
          dt[i] = mine[i];
        } else if constexpr (kSplit == 2) {  // one exchange serves both lanes
          const float partner = __shfl_xor_sync(0xffffffffu, mine[i / 2], kRowsPerWarp);
          dt[i] = part == 0 ? mine[i / 2] : partner, dt[i + 1] = part == 0 ? partner : mine[i / 2];
        } else {
#pragma unroll
          for (int s = 0; s < kSplit; ++s)
            dt[i + s] = __shfl_sync(0xffffffffu, mine[i / kSplit], lane % kRowsPerWarp + s * kRowsPerWarp);
        }
      }
#pragma unroll
      for (int i = 0; i < kStepsPerLoad; ++i) {
        const float du = dt[i] * u[i];
        dt_sum += dt[i];
        y[i] = skip * u[i];
#pragma unroll
        for (int q = 0; q < kLaneStates / 4; ++q) {
          const float4 b = staged[warp][0][step + i][first_state / 4 + q];
          const float bq[4] = {b.x, b.y, b.z, b.w};
          float cq[4] = {0.f, 0.f, 0.f, 0.f};
          if constexpr (!kCompose) {
            const float4 c = staged[warp][1][step + i][first_state / 4 + q];
            cq[0] = c.x, cq[1] = c.y, cq[2] = c.z, cq[3] = c.w;
          }
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const int k = 4 * q + r;
            h[k] = fmaf(exp2f(dt[i] * A2[k]), h[k], bq[r] * du);
            if constexpr (!kCompose) y[i] = fmaf(cq[r], h[k], y[i]);
          }
        }
      }
      if constexpr (!kCompose) {
        // The parts' sums, added pairwise: every lane of the row ends with the same ((p0 + p1) + (p2 + p3)).
#pragma unroll
        for (int offset = kRowsPerWarp; offset < 32; offset *= 2) {
#pragma unroll
          for (int i = 0; i < kStepsPerLoad; ++i) y[i] += __shfl_xor_sync(0xffffffffu, y[i], offset);
        }
        if (active && part == 0) store_y<kStepsPerLoad, T>(p, row * L, t0, end, y);
      }
    }
  }
  if constexpr (kCompose) {
    // The segment's map from a zero state: decay exp2(A2 * sum dt) (the product of its steps' decays) and h.
    if (active) {
      float* map = p.tile_maps + tile_index * 2 * N;
#pragma unroll
      for (int k = 0; k < kLaneStates; ++k) {
        const int n = first_state + k;
        if (n < N) map[n] = exp2f(dt_sum * A2[k]), map[N + n] = h[k];
      }
    }
  }
}

template <typename T, int kSplit>
void launch_resident(const ScanParams& p, cudaStream_t stream) {
  const int row_blocks = resident_row_blocks(p);
  const int warps_per_segment = p.batch * p.groups * row_blocks;
  auto blocks = [&](int segments) { return (warps_per_segment * segments + kWarpsPerBlock - 1) / kWarpsPerBlock; };
  if (p.n_tiles > 1) {
    scan_fwd_resident_kernel<T, true, kSplit><<<blocks(p.n_tiles - 1), kWarpsPerBlock * 32, 0, stream>>>(p,
                                                                                                        row_blocks);
    launch_carry<false>(p.tile_maps, p.tile_carries, p, stream);
  }
  scan_fwd_resident_kernel<T, false, kSplit><<<blocks(p.n_tiles), kWarpsPerBlock * 32, 0, stream>>>(p, row_blocks);
}

template <typename T>
void launch_resident(const ScanParams& p, cudaStream_t stream) {
  if (p.lanes_per_row == 4)
    launch_resident<T, 4>(p, stream);
  else if (p.lanes_per_row == 2)
    launch_resident<T, 2>(p, stream);
  else
    launch_resident<T, 1>(p, stream);
}

}  // namespace

int resident_row_blocks(const ScanParams& p) {
  const int rows_per_warp = 32 / p.lanes_per_row;
  return (p.channels / p.groups + rows_per_warp - 1) / rows_per_warp;
}

bool uses_resident(int rows, int length, int state) {
  const int one_segment_warps = (rows + 32 / kResidentLanesPerRow - 1) / (32 / kResidentLanesPerRow);
  const long long segmented_warps =
      static_cast<long long>(one_segment_warps) * ((length + kResidentRuleSegment - 1) / kResidentRuleSegment);
  return state >= kResidentMinState &&
         (one_segment_warps >= kResidentOneSegmentWarps || segmented_warps >= kResidentRuleWarps);
}

// Segments of `segment_len` steps if given (> 0, rounded up to whole tiles); else one segment a row where the rows
// alone give kResidentOneSegmentWarps warps (a segment before the last costs its exp2 twice: compose, apply), and
// otherwise as many as bring the launch to about kResidentTargetWarps warps. lanes_per_row (1, 2 or 4) if given (> 0),
// else kResidentLanesPerRow.
void plan_resident(ScanParams& p, int segment_len, int lanes_per_row) {
  p.lanes_per_row = lanes_per_row > 0 ? lanes_per_row : kResidentLanesPerRow;
  const int tiles = (p.length + kResidentTile - 1) / kResidentTile;
  int tiles_per_segment = tiles;
  if (segment_len > 0) {
    tiles_per_segment = (segment_len + kResidentTile - 1) / kResidentTile;
  } else {
    const int row_warps = p.batch * p.groups * resident_row_blocks(p);
    if (row_warps < kResidentOneSegmentWarps) {
      const int segments = std::min(tiles, (kResidentTargetWarps + row_warps - 1) / row_warps);
      tiles_per_segment = (tiles + segments - 1) / segments;
    }
  }
  tiles_per_segment = std::max(1, std::min(tiles_per_segment, tiles));
  p.tile_len = tiles_per_segment * kResidentTile;
  p.n_tiles = (tiles + tiles_per_segment - 1) / tiles_per_segment;
}

void launch_scan_fwd_resident(const ScanParams& p, ScanDtype dtype, cudaStream_t stream) {
  switch (dtype) {
    case ScanDtype::kFloat32: launch_resident<float>(p, stream); break;
    case ScanDtype::kFloat16: launch_resident<__half>(p, stream); break;
    case ScanDtype::kBFloat16: launch_resident<__nv_bfloat16>(p, stream); break;
  }
}

}  // namespace mambaseg
